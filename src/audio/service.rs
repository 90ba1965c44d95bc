//! The detection service: one YAMNet session on a thread of its own, and per camera a task that
//! cuts the camera's PCM into windows, has them scored, runs the detector and publishes the
//! result (a `watch` of the latest reading, cry events on a `broadcast`, the history).
//!
//! It never touches GStreamer or a camera: audio arrives as [`PcmChunk`]s on a bounded channel
//! that the camera's audio branch fills with `try_send`. Inference never runs on the async
//! runtime; the runtime only waits for the inference thread's answer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::detector::{self, CryDetector, DetectorSettings, Transition, Window};
use super::history::{CameraHistory, CryTotals, EpisodeRecord, HISTORY_FILE, History};
use super::windows::{Cut, Windower};
use super::yamnet::{MemoryOptions, ModelPaths, Scores, Yamnet, YamnetError};
use super::{CryReading, PcmChunk, unix_millis};
use crate::config::Config;
use crate::settings::Settings;

/// Windows waiting for the inference thread. Each camera has at most one in flight, so this
/// only fills if the thread is starved; then windows are dropped (and counted), never queued.
const INFERENCE_QUEUE: usize = 8;
/// Cry events a slow subscriber may fall behind by before it misses some.
const EVENT_QUEUE: usize = 64;
/// With no audio for this long, the camera is taken as silent: an episode ends.
const AUDIO_LOST_AFTER: Duration = Duration::from_secs(5);
/// How often the history is written to disk (and once more at shutdown).
const SAVE_EVERY: Duration = Duration::from_secs(10 * 60);

/// A cry started or ended on a camera.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CryEvent {
    pub camera: String,
    #[serde(flatten)]
    pub change: CryChange,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CryChange {
    /// Crying began (at the first window of its onset).
    Started {
        #[serde(with = "unix_millis")]
        at: SystemTime,
        score: f32,
    },
    /// Crying ended; `ended_at` is the last cry heard (the hold came after it).
    Ended {
        #[serde(with = "unix_millis")]
        started_at: SystemTime,
        #[serde(with = "unix_millis")]
        ended_at: SystemTime,
        peak_score: f32,
    },
}

/// Why detection could not start. Streaming goes on without it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Model(#[from] YamnetError),
    #[error("cannot start the inference thread: {0}")]
    Thread(std::io::Error),
}

struct Job {
    window: Vec<f32>,
    reply: oneshot::Sender<Result<Scores, YamnetError>>,
}

struct Shared {
    jobs: std::sync::mpsc::SyncSender<Job>,
    settings: Settings,
    /// The options' detector settings; each camera's threshold comes from `settings`.
    options: DetectorSettings,
    events: broadcast::Sender<CryEvent>,
    history: Mutex<History>,
    history_path: PathBuf,
    readings: Mutex<BTreeMap<String, watch::Receiver<CryReading>>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    dropped_windows: AtomicU64,
}

/// The running detection service. Cheap to clone.
///
/// ```no_run
/// # use std::time::{Duration, SystemTime};
/// # use tokio::sync::mpsc::Receiver;
/// # use vigil::{audio::{self, PcmChunk}, config::Config, settings::Settings};
/// # async fn wire(config: Config, settings: Settings, pcm_receiver: Receiver<PcmChunk>)
/// #     -> Result<(), audio::StartError> {
/// # let shutdown = tokio_util::sync::CancellationToken::new();
/// let detection = audio::Detection::start(&config, settings.clone(), shutdown.child_token())?;
/// let reading = detection.add_camera("nursery", pcm_receiver); // watch::Receiver<CryReading>
/// let mut events = detection.events(); // broadcast::Receiver<CryEvent>
/// let last_hour = detection.history("nursery", SystemTime::now() - Duration::from_secs(3600));
/// // At shutdown: cancel the token, then wait for the tasks and the last history save.
/// shutdown.cancel();
/// detection.stopped().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Detection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Detection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detection")
            .field("history_path", &self.shared.history_path)
            .finish()
    }
}

impl Detection {
    /// Loads ONNX Runtime and YAMNet (checking the model), starts the inference thread, loads
    /// the saved history and starts saving it. Blocks for the model load (about 0.2 s); call it
    /// inside a tokio runtime. Stops when `shutdown` is cancelled.
    pub fn start(
        config: &Config,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Result<Detection, StartError> {
        let paths = ModelPaths {
            model: config.yamnet_model.clone(),
        };
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(INFERENCE_QUEUE);
        let (loaded_tx, loaded) = std::sync::mpsc::sync_channel(1);
        // The model is loaded on the thread that runs it, so its memory stays in one heap.
        std::thread::Builder::new()
            .name("vigil-yamnet".into())
            .spawn(move || match Yamnet::load(&paths, MemoryOptions::VIGIL) {
                Ok(yamnet) => {
                    let _ = loaded_tx.send(Ok(yamnet.model_path().to_path_buf()));
                    infer(yamnet, queue);
                }
                Err(e) => {
                    let _ = loaded_tx.send(Err(e));
                }
            })
            .map_err(StartError::Thread)?;
        let model = loaded.recv().map_err(|_| {
            StartError::Thread(std::io::Error::other(
                "the inference thread ended while loading",
            ))
        })??;
        tracing::info!(model = %model.display(), "cry detection ready");

        let history_path = config.data_dir.join(HISTORY_FILE);
        let cameras: Vec<String> = config
            .cameras_to_run()
            .into_iter()
            .map(|c| c.name)
            .collect();
        let names: Vec<&str> = cameras.iter().map(String::as_str).collect();
        let mut history = History::load(&history_path, SystemTime::now(), &names);
        for name in &names {
            history.add_camera(name);
        }
        let shared = Arc::new(Shared {
            jobs,
            settings,
            options: DetectorSettings::from_config(config),
            events: broadcast::channel(EVENT_QUEUE).0,
            history: Mutex::new(history),
            history_path,
            readings: Mutex::new(BTreeMap::new()),
            tracker: TaskTracker::new(),
            shutdown,
            dropped_windows: AtomicU64::new(0),
        });
        shared.tracker.spawn(save_history(shared.clone()));
        Ok(Detection { shared })
    }

    /// Starts listening to `camera`'s audio; returns its latest reading, updated every window.
    ///
    /// The task ends when `pcm` closes (its sender dropped) or at shutdown; adding the same
    /// camera again (a new audio branch) replaces the old reading.
    pub fn add_camera(
        &self,
        camera: &str,
        pcm: mpsc::Receiver<PcmChunk>,
    ) -> watch::Receiver<CryReading> {
        let (tx, rx) = watch::channel(CryReading::default());
        self.shared.history.lock().unwrap().add_camera(camera);
        self.shared
            .readings
            .lock()
            .unwrap()
            .insert(camera.to_string(), rx.clone());
        let listener = CameraListener::new(self.shared.clone(), camera, tx);
        self.shared.tracker.spawn(listener.run(pcm));
        rx
    }

    /// Cry started / ended events of every camera, from now on.
    pub fn events(&self) -> broadcast::Receiver<CryEvent> {
        self.shared.events.subscribe()
    }

    /// The latest reading of `camera`, if it was added.
    pub fn reading(&self, camera: &str) -> Option<CryReading> {
        let readings = self.shared.readings.lock().unwrap();
        readings.get(camera).map(|rx| *rx.borrow())
    }

    /// `camera`'s history (5 s buckets and episodes) from `since` on (at most 24 h back).
    pub fn history(&self, camera: &str, since: SystemTime) -> Option<CameraHistory> {
        self.shared.history.lock().unwrap().snapshot(camera, since)
    }

    /// Lists a clip of `camera`'s episode that started at `episode_started_ms` (the
    /// `started_ms` of its record); false if that episode is not in the history.
    pub fn add_clip(&self, camera: &str, episode_started_ms: u64, clip: String) -> bool {
        self.shared
            .history
            .lock()
            .unwrap()
            .add_clip(camera, episode_started_ms, clip)
    }

    /// `camera`'s cry episodes from `since` on, oldest first (the history's, without its
    /// buckets).
    pub fn episodes(&self, camera: &str, since: SystemTime) -> Option<Vec<EpisodeRecord>> {
        self.shared.history.lock().unwrap().episodes(camera, since)
    }

    /// `camera`'s episode that started at `started_ms` (its clips, its end), if still kept.
    pub fn episode(&self, camera: &str, started_ms: u64) -> Option<EpisodeRecord> {
        self.shared
            .history
            .lock()
            .unwrap()
            .episode(camera, started_ms)
    }

    /// How much `camera` cried in the last `window` (at most 24 h, what the history keeps).
    pub fn totals(&self, camera: &str, window: Duration) -> Option<CryTotals> {
        let now = SystemTime::now();
        self.shared
            .history
            .lock()
            .unwrap()
            .totals(camera, now - window, now)
    }

    /// Windows dropped because the inference thread was behind.
    pub fn dropped_windows(&self) -> u64 {
        self.shared.dropped_windows.load(Ordering::Relaxed)
    }

    /// After the shutdown token is cancelled: waits until every camera task has stopped (ending
    /// its episode), then saves the history.
    pub async fn stopped(&self) {
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        save_history_now(&self.shared).await;
    }
}

/// The inference thread: scores windows until every sender is gone.
fn infer(mut yamnet: Yamnet, queue: std::sync::mpsc::Receiver<Job>) {
    for job in queue {
        let _ = job.reply.send(yamnet.score(&job.window));
    }
    tracing::debug!("inference thread stopped");
}

/// Saves the history every [`SAVE_EVERY`] until shutdown ([`Detection::stopped`] saves last).
async fn save_history(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(SAVE_EVERY);
    every.tick().await;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = every.tick() => save_history_now(&shared).await,
        }
    }
}

/// Serializes under the lock (milliseconds), writes outside it on a blocking thread.
async fn save_history_now(shared: &Shared) {
    let json = shared.history.lock().unwrap().to_json();
    let path = shared.history_path.clone();
    match tokio::task::spawn_blocking(move || History::save(&json, &path)).await {
        Ok(Ok(())) => tracing::debug!("cry history saved"),
        Ok(Err(e)) => tracing::warn!(
            "cannot save the cry history to {}: {e}",
            shared.history_path.display()
        ),
        Err(e) => tracing::warn!("saving the cry history failed: {e}"),
    }
}

/// One camera's listener: its windows, its detector, its outputs.
struct CameraListener {
    shared: Arc<Shared>,
    camera: String,
    reading: watch::Sender<CryReading>,
    windower: Windower,
    detector: CryDetector,
}

impl CameraListener {
    fn new(shared: Arc<Shared>, camera: &str, reading: watch::Sender<CryReading>) -> Self {
        Self {
            shared,
            camera: camera.to_string(),
            reading,
            windower: Windower::new(),
            detector: CryDetector::new(),
        }
    }

    async fn run(mut self, mut pcm: mpsc::Receiver<PcmChunk>) {
        let shutdown = self.shared.shutdown.clone();
        let mut silent = false;
        tracing::debug!(camera = %self.camera, "listening for crying");
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = tokio::time::timeout(AUDIO_LOST_AFTER, pcm.recv()) => next,
            };
            match next {
                Ok(Some(chunk)) => {
                    silent = false;
                    let mut cuts = Vec::new();
                    self.windower.push(&chunk, |cut| cuts.push(cut));
                    for cut in cuts {
                        self.take(cut).await;
                    }
                }
                Ok(None) => break,
                Err(_) if !silent => {
                    silent = true;
                    tracing::info!(camera = %self.camera, "no audio for {AUDIO_LOST_AFTER:?}");
                    self.windower.interrupt();
                    self.stop();
                }
                Err(_) => {}
            }
        }
        self.stop();
        tracing::debug!(camera = %self.camera, "stopped listening");
    }

    async fn take(&mut self, cut: Cut) {
        let settings = self.detector_settings();
        match cut {
            Cut::Gap { from, to } => {
                tracing::debug!(camera = %self.camera, "audio gap of {:?}", to - from);
                let transition = self.detector.gap(to, &settings.detector);
                self.publish_transition(transition);
            }
            Cut::Window { end, samples } => {
                let level_dbfs = detector::level_dbfs(&samples);
                let score = if settings.detection {
                    match self.score(samples).await {
                        Some(scores) => detector::cry_score(&scores),
                        None => return,
                    }
                } else {
                    // Off: end any cry, and let no window from before count after it is back on.
                    self.stop();
                    0.0
                };
                let window = Window {
                    end,
                    score,
                    level_dbfs,
                };
                if settings.detection {
                    let transition = self.detector.observe(window, &settings.detector);
                    self.publish_transition(transition);
                }
                let at = self.wall_time(end);
                let reading = CryReading {
                    crying: self.detector.crying(),
                    score,
                    level_dbfs,
                    at,
                };
                self.reading.send_replace(reading);
                self.shared.history.lock().unwrap().record(
                    &self.camera,
                    at,
                    score,
                    level_dbfs,
                    reading.crying,
                );
            }
        }
    }

    /// Has the inference thread score `window`; `None` if it was dropped or failed.
    async fn score(&self, window: Vec<f32>) -> Option<Scores> {
        let (reply, answer) = oneshot::channel();
        match self.shared.jobs.try_send(Job { window, reply }) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                let n = self.shared.dropped_windows.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(camera = %self.camera, "inference is behind: {n} windows dropped so far");
                }
                return None;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                tracing::error!(camera = %self.camera, "the inference thread has stopped");
                return None;
            }
        }
        match answer.await {
            Ok(Ok(scores)) => Some(scores),
            Ok(Err(e)) => {
                tracing::warn!(camera = %self.camera, "{e}");
                None
            }
            Err(_) => None,
        }
    }

    /// Ends any episode (no audio, detection off, shutdown) and says so.
    fn stop(&mut self) {
        let transition = self.detector.stop();
        self.publish_transition(transition);
        self.reading.send_modify(|r| r.crying = false);
    }

    fn publish_transition(&mut self, transition: Option<Transition>) {
        let Some(transition) = transition else {
            return;
        };
        let change = match transition {
            Transition::Started { at, score } => {
                let at = self.wall_time(at);
                tracing::info!(camera = %self.camera, score, "crying");
                self.shared
                    .history
                    .lock()
                    .unwrap()
                    .episode_started(&self.camera, at, score);
                CryChange::Started { at, score }
            }
            Transition::Ended(episode) => {
                let started_at = self.wall_time(episode.started);
                let ended_at = self.wall_time(episode.ended);
                tracing::info!(
                    camera = %self.camera,
                    peak_score = episode.peak_score,
                    "crying ended after {:.0?}",
                    episode.ended.saturating_sub(episode.started)
                );
                self.shared.history.lock().unwrap().episode_ended(
                    &self.camera,
                    started_at,
                    ended_at,
                    episode.peak_score,
                );
                CryChange::Ended {
                    started_at,
                    ended_at,
                    peak_score: episode.peak_score,
                }
            }
        };
        let _ = self.shared.events.send(CryEvent {
            camera: self.camera.clone(),
            change,
        });
    }

    /// The wall time of stream time `t`: the latest sample taken is "now".
    fn wall_time(&self, t: Duration) -> SystemTime {
        let behind = self.windower.clock().saturating_sub(t);
        SystemTime::now()
            .checked_sub(behind)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// This camera's settings now (a change from Home Assistant applies at the next window).
    fn detector_settings(&self) -> EffectiveSettings {
        let camera = self.shared.settings.camera(&self.camera);
        EffectiveSettings {
            // A camera the options do not name (none in practice) listens, at the options' values.
            detection: camera.is_none_or(|c| c.detection),
            detector: DetectorSettings {
                cry_threshold: camera
                    .map_or(self.shared.options.cry_threshold, |c| c.cry_threshold),
                ..self.shared.options
            },
        }
    }
}

struct EffectiveSettings {
    detection: bool,
    detector: DetectorSettings,
}
