//! Cry clips: for each cry episode an MP4 of the camera's video (never re-encoded) and sound
//! (AAC), from [`PREROLL`] before the onset to [`TAIL`] after the episode ends, at most
//! [`MAX_CLIP`] long (the cap closes a clip at the next keyframe and opens the next), in the
//! clips folder as `<camera>/<YYYY-MM-DD>/<HH-MM-SS>.mp4` (see [`paths`]).
//!
//! One recorder task per camera holds that camera's hub subscription and a pre-roll buffer in
//! memory (whole GOPs, starting at a keyframe, bounded in time and bytes), listens to the cry
//! events, and writes through a [`writer::ClipWriter`] per clip. Each clip is listed in its
//! episode ([`Detection::add_clip`]) from the moment it is opened, under its final name.
//! [`retention`] deletes old clips and keeps the disk from filling.
//!
//! Never blocks a camera: the recorder drains its subscription at once and the writer's appsrcs
//! never wait. A clip holds only its own camera's frames. A write error ends that clip (its
//! partial file deleted) and shows in the camera's clip status, never stopping the camera.

pub mod paths;
pub mod retention;
pub mod writer;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audio::history::unix_ms;
use crate::audio::{CryChange, CryEvent, Detection};
use crate::camera::{CameraHandle, ConsumerKind, Frame, MediaEvent, StreamInfo, Track};
use crate::config::ClipOptions;
use paths::LocalTime;
use retention::Rules;
use writer::ClipWriter;

/// Seconds of picture and sound before the onset.
pub const PREROLL: Duration = Duration::from_secs(5);
/// Seconds after the episode's last cry.
pub const TAIL: Duration = Duration::from_secs(5);
/// The longest clip; the next keyframe after it starts the next clip.
pub const MAX_CLIP: Duration = Duration::from_secs(120);

/// How far back the pre-roll buffer reaches: [`PREROLL`] before an onset that the detector
/// reports a few seconds after it happened.
const PREROLL_KEPT: Duration = Duration::from_secs(12);
/// The pre-roll buffer's bound per camera (about 20 s at 8 Mbit/s).
const PREROLL_MAX_BYTES: usize = 20 * 1024 * 1024;
/// No frame for this long ends the clip, so a camera that went away leaves a clip that plays.
const CAMERA_GONE: Duration = Duration::from_secs(5);
/// How often old clips are looked for besides after each clip.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// What a camera's clips are doing, for the panel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "reason")]
pub enum ClipsStatus {
    /// `clips: false`, or no cry detection to start them.
    Off(String),
    /// Waiting for a cry.
    Ready,
    /// Writing a clip now.
    Recording,
    /// No clip can be written now; the reason says why (disk nearly full, folder read-only…).
    Paused(String),
}

/// The clips folder, its rules and every camera's clip status. Cheap to clone.
#[derive(Clone)]
pub struct Clips {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: bool,
    root: PathBuf,
    rules: Rules,
    statuses: Vec<(String, watch::Sender<ClipsStatus>)>,
    /// The "disk nearly full" warning is logged once until there is room again.
    warned_full: AtomicBool,
}

impl Clips {
    /// The clips of `cameras` in `root`, as `options` say.
    pub fn new(options: &ClipOptions, root: PathBuf, cameras: &[String]) -> Clips {
        let initial = if options.enabled {
            ClipsStatus::Ready
        } else {
            ClipsStatus::Off("clips: false in the options".into())
        };
        Clips {
            inner: Arc::new(Inner {
                enabled: options.enabled,
                root,
                rules: Rules::new(options.retention_days, options.max_bytes),
                statuses: cameras
                    .iter()
                    .map(|c| (c.clone(), watch::channel(initial.clone()).0))
                    .collect(),
                warned_full: AtomicBool::new(false),
            }),
        }
    }

    /// The clips folder (clip paths are relative to it).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// `camera`'s clip status now.
    pub fn status(&self, camera: &str) -> Option<ClipsStatus> {
        self.sender(camera).map(|tx| tx.borrow().clone())
    }

    fn sender(&self, camera: &str) -> Option<&watch::Sender<ClipsStatus>> {
        self.inner
            .statuses
            .iter()
            .find(|(name, _)| name == camera)
            .map(|(_, tx)| tx)
    }

    fn set_status(&self, camera: &str, status: ClipsStatus) {
        if let Some(tx) = self.sender(camera) {
            tx.send_if_modified(|now| {
                let changed = *now != status;
                *now = status;
                changed
            });
        }
    }

    /// Starts a recorder per camera and the hourly sweep, on `tracker`, until `shutdown`. First
    /// deletes what a stopped run left half written and what the rules say is too old.
    pub async fn start(
        &self,
        detection: Option<&Detection>,
        cameras: &[CameraHandle],
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        if !self.inner.enabled {
            return;
        }
        let Some(detection) = detection else {
            for camera in cameras {
                self.set_status(
                    camera.name(),
                    ClipsStatus::Off("cry detection is off, so no cry starts a clip".into()),
                );
            }
            return;
        };
        let root = self.inner.root.clone();
        let rules = self.inner.rules;
        let cleaned = tokio::task::spawn_blocking(move || {
            let partials = retention::remove_partials(&root);
            let old = retention::sweep(&root, SystemTime::now(), rules).len();
            (partials, old)
        })
        .await;
        if let Ok((partials, old)) = cleaned {
            if partials > 0 {
                tracing::info!(
                    "deleted {partials} clip(s) left unfinished when Vigil last stopped"
                );
            }
            if old > 0 {
                tracing::info!("deleted {old} old clip(s)");
            }
        }
        tracing::info!(folder = %self.inner.root.display(), "cry clips on");
        for camera in cameras {
            tracker.spawn(
                Recorder::new(
                    camera.clone(),
                    detection.clone(),
                    self.clone(),
                    tracker.clone(),
                )
                .run(detection.events(), shutdown.clone()),
            );
        }
        let clips = self.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(SWEEP_EVERY) => clips.sweep().await,
                }
            }
        });
    }

    /// Applies the retention rules now.
    async fn sweep(&self) {
        let root = self.inner.root.clone();
        let rules = self.inner.rules;
        let deleted =
            tokio::task::spawn_blocking(move || retention::sweep(&root, SystemTime::now(), rules))
                .await
                .unwrap_or_default();
        for path in deleted {
            tracing::info!("deleted the old clip {}", path.display());
        }
    }

    /// Whether a clip may start now, else why not.
    async fn room(&self) -> Result<(), String> {
        let root = self.inner.root.clone();
        let free = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&root)
                .and_then(|()| retention::free_bytes(&root))
                .map_err(|e| format!("cannot write clips to {}: {e}", root.display()))
        })
        .await
        .map_err(|e| e.to_string())??;
        if retention::room_for_a_clip(free) {
            self.inner.warned_full.store(false, Ordering::Relaxed);
            return Ok(());
        }
        let reason = format!(
            "clips paused: less than {} MiB free on {} ({} MiB)",
            retention::MIN_FREE_BYTES / (1024 * 1024),
            self.inner.root.display(),
            free / (1024 * 1024)
        );
        if !self.inner.warned_full.swap(true, Ordering::Relaxed) {
            tracing::warn!("{reason}; lower clip_max_mb or clip_retention_days, or free space");
        }
        Err(reason)
    }
}

/// The last seconds of one camera, in whole GOPs, so a clip can start before the onset with a
/// picture that decodes.
#[derive(Default)]
struct Preroll {
    gops: VecDeque<Gop>,
    bytes: usize,
}

/// A video keyframe, the frames after it up to the next one, and when it arrived.
struct Gop {
    arrived: SystemTime,
    frames: Vec<Frame>,
    bytes: usize,
}

impl Preroll {
    /// Keeps `frame`, arrived at `now`, and lets go of what is no longer needed.
    fn push(&mut self, frame: &Frame, now: SystemTime) {
        let size = frame.buffer.size();
        if frame.track == Track::Video && frame.keyframe {
            self.gops.push_back(Gop {
                arrived: now,
                frames: Vec::new(),
                bytes: 0,
            });
        }
        // Frames before the first keyframe cannot start a clip.
        let Some(gop) = self.gops.back_mut() else {
            return;
        };
        gop.frames.push(frame.clone());
        gop.bytes += size;
        self.bytes += size;
        let horizon = now
            .checked_sub(PREROLL_KEPT)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        while self.gops.len() > 1
            && (self.gops[1].arrived <= horizon || self.bytes > PREROLL_MAX_BYTES)
        {
            self.pop();
        }
        if self.bytes > PREROLL_MAX_BYTES {
            // One GOP larger than the bound: nothing until the next keyframe.
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(gop) = self.gops.pop_front() {
            self.bytes -= gop.bytes;
        }
    }

    /// The frames a clip for an onset at `onset` starts with: from the last keyframe at least
    /// [`PREROLL`] before it (or the oldest kept).
    fn since(&self, onset: SystemTime) -> impl Iterator<Item = &Frame> {
        let wanted = onset.checked_sub(PREROLL).unwrap_or(SystemTime::UNIX_EPOCH);
        let first = self
            .gops
            .iter()
            .rposition(|g| g.arrived <= wanted)
            .unwrap_or(0);
        self.gops.iter().skip(first).flat_map(|g| g.frames.iter())
    }

    fn clear(&mut self) {
        self.gops.clear();
        self.bytes = 0;
    }
}

/// The episodes a recording belongs to, and when it may stop.
struct Recording {
    /// Every episode's start (unix ms, as its `Started` event said) since the recording
    /// began, in order. A camera's episodes follow each other; they never overlap.
    episodes: Vec<u64>,
    /// [`TAIL`] after the last episode's last cry; `None` while an episode goes on.
    until: Option<SystemTime>,
}

/// One camera's recorder task.
struct Recorder {
    camera: CameraHandle,
    detection: Detection,
    clips: Clips,
    preroll: Preroll,
    info: Option<Arc<StreamInfo>>,
    recording: Option<Recording>,
    clip: Option<ClipWriter>,
    last_frame: Instant,
    /// Where finishing clips run (a stop waits for them).
    tracker: TaskTracker,
}

impl Recorder {
    fn new(camera: CameraHandle, detection: Detection, clips: Clips, tracker: TaskTracker) -> Self {
        Self {
            camera,
            detection,
            clips,
            preroll: Preroll::default(),
            info: None,
            recording: None,
            clip: None,
            last_frame: Instant::now(),
            tracker,
        }
    }

    fn name(&self) -> String {
        self.camera.name().to_string()
    }

    async fn run(mut self, mut events: broadcast::Receiver<CryEvent>, shutdown: CancellationToken) {
        let mut subscription = self.camera.subscribe(ConsumerKind::Recorder);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = events.recv() => match event {
                    Ok(event) if event.camera == self.camera.name() => self.on_cry(event.change).await,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(camera = %self.name(), "{n} cry events missed by the clip recorder");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                media = subscription.recv() => match media {
                    Some(MediaEvent::Info(info)) => self.on_info(info),
                    Some(MediaEvent::Frame(frame)) => self.on_frame(frame).await,
                    None => {
                        // The hub dropped us (it never should: we read at once); start again.
                        tracing::warn!(camera = %self.name(), "the clip recorder lost its camera feed; resubscribing");
                        self.close_clip();
                        self.preroll.clear();
                        subscription = self.camera.subscribe(ConsumerKind::Recorder);
                    }
                },
                error = async { self.clip.as_mut().unwrap().failed().await }, if self.clip.is_some() => {
                    self.on_write_error(error);
                }
                _ = tick.tick() => self.on_tick(),
            }
        }
        self.close_clip();
    }

    async fn on_cry(&mut self, change: CryChange) {
        match change {
            CryChange::Started { at, .. } => {
                let started = unix_ms(at);
                match &mut self.recording {
                    Some(recording) => {
                        recording.episodes.push(started);
                        recording.until = None;
                        if let Some(clip) = &self.clip {
                            let relative = self.relative(clip.final_path());
                            self.detection
                                .add_clip(self.camera.name(), started, relative);
                        }
                    }
                    None => {
                        self.recording = Some(Recording {
                            episodes: vec![started],
                            until: None,
                        });
                        self.open_clip(Some(at)).await;
                    }
                }
            }
            CryChange::Ended { ended_at, .. } => {
                // (Its `started_at` is the same moment as the `Started` event's, converted to
                // wall time again, so it may differ by some milliseconds: not compared.)
                if let Some(recording) = &mut self.recording {
                    recording.until = Some(ended_at + TAIL);
                }
            }
        }
    }

    fn on_info(&mut self, info: Arc<StreamInfo>) {
        let same_formats = self.info.as_deref() == Some(&*info);
        self.info = Some(info);
        if !same_formats {
            // A clip holds one set of formats: the next keyframe starts the next clip.
            self.close_clip();
            self.preroll.clear();
        }
    }

    async fn on_frame(&mut self, frame: Frame) {
        let now = SystemTime::now();
        self.last_frame = Instant::now();
        self.preroll.push(&frame, now);
        let keyframe = frame.track == Track::Video && frame.keyframe;
        if let Some(clip) = &mut self.clip {
            if keyframe && clip.length_at(&frame) >= MAX_CLIP {
                self.close_clip();
                self.open_clip(None).await;
                return;
            }
            if let Err(e) = clip.push(&frame) {
                self.on_write_error(e);
            }
        } else if keyframe && self.recording.is_some() && !self.past_the_end(now) {
            // The camera came back (or changed formats) during an episode: a new clip.
            self.open_clip(None).await;
        }
    }

    fn on_tick(&mut self) {
        let now = SystemTime::now();
        if self.past_the_end(now) {
            self.close_clip();
            self.recording = None;
            self.clips
                .set_status(self.camera.name(), ClipsStatus::Ready);
            return;
        }
        if self.clip.is_some() && self.last_frame.elapsed() >= CAMERA_GONE {
            tracing::info!(camera = %self.name(), "the camera stopped sending: the clip ends here");
            self.close_clip();
            self.preroll.clear();
        }
    }

    fn past_the_end(&self, now: SystemTime) -> bool {
        self.recording
            .as_ref()
            .and_then(|r| r.until)
            .is_some_and(|until| now >= until)
    }

    /// Opens a clip starting [`PREROLL`] before `onset` (the first clip of an episode) or at the
    /// newest keyframe (a clip that follows one), and lists it in its episodes.
    async fn open_clip(&mut self, onset: Option<SystemTime>) {
        let camera = self.name();
        if let Err(reason) = self.clips.room().await {
            self.clips
                .set_status(&camera, ClipsStatus::Paused(reason.clone()));
            // Nothing more for these episodes; the next cry looks again.
            self.recording = None;
            return;
        }
        let Some(info) = self.info.clone() else {
            return;
        };
        let (frames, named_at): (Vec<Frame>, SystemTime) = match onset {
            Some(onset) => (self.preroll.since(onset).cloned().collect(), onset),
            None => (
                self.preroll
                    .gops
                    .back()
                    .map(|g| g.frames.clone())
                    .unwrap_or_default(),
                SystemTime::now(),
            ),
        };
        let Some(start) = frames.first().map(|f| f.pts) else {
            // No keyframe yet: the next one opens the clip (see `on_frame`).
            return;
        };
        let final_path = self.free_name(named_at);
        let mut clip = match ClipWriter::open(&camera, &info, &final_path, start) {
            Ok(clip) => clip,
            Err(e) => {
                self.write_failed(format!("cannot start a clip: {e}"));
                return;
            }
        };
        for frame in &frames {
            if let Err(e) = clip.push(frame) {
                clip.abandon();
                self.write_failed(format!("cannot write the clip: {e}"));
                return;
            }
        }
        let relative = self.relative(&final_path);
        tracing::info!(camera, clip = %relative, "cry clip started");
        if let Some(recording) = &self.recording {
            // The first clip belongs to the episode that opened it; a clip that follows belongs
            // to the episode going on (or in its tail).
            let episodes: Vec<u64> = recording.episodes.last().copied().into_iter().collect();
            for started in episodes {
                self.detection.add_clip(&camera, started, relative.clone());
            }
        }
        self.clip = Some(clip);
        self.clips.set_status(&camera, ClipsStatus::Recording);
    }

    /// A final name under the clips folder no clip has yet (`-2`… for the same second).
    fn free_name(&self, at: SystemTime) -> PathBuf {
        let local = LocalTime::of(at);
        (1..)
            .map(|attempt| {
                self.clips
                    .root()
                    .join(paths::relative_path(self.camera.name(), local, attempt))
            })
            .find(|path| !path.exists() && !paths::partial_path(path).exists())
            .unwrap_or_default()
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(self.clips.root())
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    /// Ends the open clip, if any: the muxer finishes it (writes its index, copies the media
    /// behind it) on a task of its own, so the recorder goes on reading its camera meanwhile;
    /// then the retention rules are applied.
    fn close_clip(&mut self) {
        let Some(clip) = self.clip.take() else {
            return;
        };
        let status = if self.recording.is_some() && !self.past_the_end(SystemTime::now()) {
            ClipsStatus::Recording
        } else {
            ClipsStatus::Ready
        };
        self.clips.set_status(self.camera.name(), status);
        let camera = self.name();
        let clips = self.clips.clone();
        self.tracker.spawn(async move {
            match clip.finish().await {
                Ok(path) => {
                    let relative = path.strip_prefix(clips.root()).unwrap_or(&path);
                    tracing::info!(camera, clip = %relative.display(), "cry clip written");
                }
                Err(e) => {
                    let reason = format!("cannot finish the clip: {e}");
                    tracing::warn!(camera, "{reason}");
                    clips.set_status(&camera, ClipsStatus::Paused(reason));
                }
            }
            clips.sweep().await;
        });
    }

    fn on_write_error(&mut self, error: String) {
        if let Some(clip) = self.clip.take() {
            clip.abandon();
        }
        self.write_failed(format!("cannot write the clip: {error}"));
    }

    /// A clip could not be written: the status says why; this episode gets no more clips.
    fn write_failed(&mut self, reason: String) {
        tracing::warn!(camera = %self.name(), "{reason}");
        self.clips
            .set_status(self.camera.name(), ClipsStatus::Paused(reason));
        self.recording = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(track: Track, pts_ms: u64, keyframe: bool, bytes: usize) -> Frame {
        Frame {
            track,
            buffer: gst::Buffer::with_size(bytes).unwrap(),
            pts: Duration::from_millis(pts_ms),
            keyframe,
            cached: false,
        }
    }

    #[test]
    fn the_preroll_starts_at_a_keyframe_before_the_onset_and_stays_bounded() {
        gst::init().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_353_925);
        let mut preroll = Preroll::default();
        // An audio frame before any keyframe is of no use.
        preroll.push(&frame(Track::Audio, 0, true, 10), t0);
        assert!(preroll.gops.is_empty());
        // 30 s of a camera with a keyframe every 2 s, 10 pictures and 10 sound frames a second.
        for ms in (0..30_000u64).step_by(100) {
            let at = t0 + Duration::from_millis(ms);
            preroll.push(&frame(Track::Video, ms, ms % 2000 == 0, 1000), at);
            preroll.push(&frame(Track::Audio, ms, true, 100), at);
        }
        let now = t0 + Duration::from_millis(29_900);
        let oldest = preroll.gops[0].arrived;
        assert!(oldest <= now - PREROLL_KEPT, "keeps {PREROLL_KEPT:?}");
        assert!(
            oldest > now - PREROLL_KEPT - Duration::from_secs(2),
            "and one GOP more at most"
        );
        // An onset 3 s ago: the clip starts at the last keyframe at least 5 s before it.
        let onset = now - Duration::from_secs(3);
        let first = preroll.since(onset).next().unwrap();
        assert!(first.keyframe && first.track == Track::Video);
        assert_eq!(first.pts, Duration::from_millis(20_000));
        // A huge GOP stream is bounded in bytes.
        let mut big = Preroll::default();
        for ms in (0..10_000u64).step_by(100) {
            let at = t0 + Duration::from_millis(ms);
            big.push(&frame(Track::Video, ms, ms % 1000 == 0, 1024 * 1024), at);
        }
        assert!(big.bytes <= PREROLL_MAX_BYTES);
        assert!(big.since(t0).next().is_some_and(|f| f.keyframe));
    }
}
