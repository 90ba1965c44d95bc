//! The camera actor: one tokio task per camera (RTSP, HTTP-FLV or RTMP) that owns its ingest,
//! keeps it alive and reports how it is doing.
//!
//! It connects, watches the bus and a stall watchdog, and after any failure waits as the
//! [`Backoff`] says and connects again, for as long as Vigil runs. Its status (state, reason,
//! formats, bitrate, reconnects) goes out on a `watch` channel; every text in it is redacted.
//! It never blocks the runtime: pipelines are stopped on the blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use gst::prelude::*;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::describe::{audio_status, video_status};
use super::failure::{Failure, FailureKind};
use super::hub::{Hub, StreamInfo};
use super::ingest::{Ingest, IngestOptions};
use super::pcm::PcmOutput;
use super::{AudioStatus, CameraState, CameraStatus, VideoStatus};
use crate::config::{CameraUrl, StreamProtocol};
use crate::secret::Redactor;

/// How often the actor looks at its ingest (watchdog, status).
const TICK: Duration = Duration::from_millis(250);
/// How often the bitrate in the status is updated.
const BITRATE_EVERY: Duration = Duration::from_secs(2);
/// How long the first frame may take after the connection starts (it may wait for a keyframe).
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for an announced audio track that sends nothing before going on without it.
const AUDIO_GRACE: Duration = Duration::from_secs(3);
/// The same for audio that arrives but is being transcoded (`unify_audio`): its first AAC frame
/// waits for the encoder to start, which on a loaded machine may take seconds. Shorter than
/// [`FIRST_FRAME_TIMEOUT`], which frames held for the audio's format count against.
const TRANSCODED_AUDIO_GRACE: Duration = Duration::from_secs(6);
/// No audio frame for this long while video flows: the camera's audio stopped (a microphone
/// turned off in its app), and the hub carries video alone until audio comes again.
const AUDIO_STOPPED_AFTER: Duration = Duration::from_secs(3);

/// One camera's actor; [`CameraActor::run`] consumes it.
pub struct CameraActor {
    name: String,
    url: CameraUrl,
    options: IngestOptions,
    hub: Arc<Hub>,
    status: watch::Sender<CameraStatus>,
    pcm: PcmOutput,
    redactor: Redactor,
}

impl CameraActor {
    pub fn new(
        name: &str,
        url: CameraUrl,
        options: IngestOptions,
        hub: Arc<Hub>,
        status: watch::Sender<CameraStatus>,
        pcm: PcmOutput,
    ) -> Self {
        let mut redactor = Redactor::new();
        redactor.add_url(url.expose());
        Self {
            name: name.to_string(),
            url,
            options,
            hub,
            status,
            pcm,
            redactor,
        }
    }

    /// Keeps the camera connected until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        let mut last_failure: Option<FailureKind> = None;
        let mut ever_online = false;
        // Whether the last session already reconnected once for audio that never came.
        let mut audio_retried = false;
        loop {
            self.set_state(CameraState::Connecting);
            let attempt = Ingest::start(
                &self.name,
                &self.url,
                self.options,
                self.hub.clone(),
                self.pcm.clone(),
            );
            let failure = match attempt {
                Ok(ingest) => {
                    let outcome = self
                        .watch(
                            &ingest,
                            &mut backoff,
                            &mut ever_online,
                            &mut audio_retried,
                            &shutdown,
                        )
                        .await;
                    let stopping = Instant::now();
                    ingest.stop().await;
                    tracing::debug!(camera = %self.name, "session stopped in {:.0?}", stopping.elapsed());
                    match outcome {
                        Some(failure) => failure,
                        None => return,
                    }
                }
                Err(e) => Failure::new(FailureKind::BadStream, format!("{e:#}"), &self.redactor),
            };
            let was_online = self.status.borrow().state == CameraState::Online;
            let reason = failure.reason(&self.url.redacted());
            if was_online || last_failure != Some(failure.kind) {
                tracing::warn!(camera = %self.name, "{reason}");
            } else {
                tracing::debug!(camera = %self.name, "{reason}");
            }
            last_failure = Some(failure.kind);
            self.status.send_modify(|s| {
                if s.state != CameraState::Offline {
                    s.since = SystemTime::now();
                }
                s.state = CameraState::Offline;
                s.reason = Some(reason);
                s.bitrate_kbps = 0;
            });
            let delay = backoff.next_delay(failure.kind, Instant::now(), fastrand::f64());
            tracing::debug!(camera = %self.name, "next attempt in {delay:.1?}");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Watches one attempt until it fails (`Some`) or Vigil stops (`None`).
    async fn watch(
        &self,
        ingest: &Ingest,
        backoff: &mut Backoff,
        ever_online: &mut bool,
        audio_retried: &mut bool,
        shutdown: &CancellationToken,
    ) -> Option<Failure> {
        let bus = ingest.bus()?;
        let mut messages = bus.stream();
        let mut tick = tokio::time::interval(TICK);
        let started = Instant::now();
        let mut progress = (started, 0u64);
        let mut video_negotiated_at = None;
        let mut meter = (started, 0u64, 0u64);
        let mut online = false;
        // Without a frame rate in the stream's headers, the status shows the measured one.
        let mut measure_fps = false;
        // The formats the status shows, to follow a camera that changes its picture.
        let mut shown: Option<Arc<StreamInfo>> = None;
        // When audio frames last arrived, and how many so far.
        let mut audio_progress = (started, 0u64);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                message = messages.next() => {
                    let Some(message) = message else {
                        return Some(Failure::new(FailureKind::Ended, "the pipeline's bus closed", &self.redactor));
                    };
                    if let Some(failure) = self.failure_of(&message) {
                        return Some(self.silent_source_is_unreachable(failure, &message, ingest));
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let offer = ingest.offer();
                    if let Some((kind, detail)) = &offer.refused {
                        return Some(Failure::new(*kind, detail, &self.redactor));
                    }
                    if offer.described && offer.video.is_none() {
                        let offered = if offer.ignored.is_empty() { "nothing".into() } else { offer.ignored.join(", ") };
                        return Some(Failure::new(FailureKind::NoVideo, format!("the camera offers {offered}"), &self.redactor));
                    }
                    let received = ingest.received();
                    if received.video_frames != progress.1 {
                        progress = (now, received.video_frames);
                    }
                    let allowed = if received.video_frames == 0 {
                        FIRST_FRAME_TIMEOUT.max(self.options.stall_timeout)
                    } else {
                        self.options.stall_timeout
                    };
                    if now - progress.0 >= allowed {
                        return Some(Failure::stalled(allowed));
                    }
                    if received.video_frames == 0 && offer.audio.is_some() {
                        let (video, audio) = ingest.negotiated();
                        if video && !audio {
                            let since = *video_negotiated_at.get_or_insert(now);
                            let grace = match offer.transcoded_audio {
                                Some(_) => TRANSCODED_AUDIO_GRACE,
                                None => AUDIO_GRACE,
                            };
                            if now - since >= grace {
                                // Now and then a session gets no audio although the camera
                                // sends it (the soak saw it): one new session first, since
                                // going on without audio leaves the detector deaf until the
                                // next reconnect.
                                if !*audio_retried {
                                    *audio_retried = true;
                                    tracing::warn!(camera = %self.name, "the camera announced audio but sends none: connecting again");
                                    return Some(Failure::new(FailureKind::Ended, "the camera announced audio but sent none", &self.redactor));
                                }
                                tracing::warn!(camera = %self.name, "the camera announced audio but sends none: going on without it");
                                ingest.give_up_audio();
                            }
                        }
                    }
                    if !online && received.video_frames > 0 {
                        online = true;
                        tracing::debug!(
                            camera = %self.name,
                            "streaming {:.0?} after the attempt began (video ready but audio not yet at {:.0?})",
                            now - started,
                            video_negotiated_at.map(|at| at - started),
                        );
                        if ingest.negotiated().1 {
                            *audio_retried = false;
                        }
                        backoff.on_online(now);
                        measure_fps = self.went_online(*ever_online, offer.transcoded_audio.clone());
                        shown = self.hub.info();
                        *ever_online = true;
                    }
                    if received.audio_frames != audio_progress.1 {
                        audio_progress = (now, received.audio_frames);
                    } else if online
                        && ingest.negotiated().1
                        && offer.audio.is_some()
                        && !ingest.audio_paused()
                        && now - audio_progress.0 >= AUDIO_STOPPED_AFTER
                        && now - progress.0 < AUDIO_STOPPED_AFTER
                    {
                        tracing::warn!(
                            camera = %self.name,
                            "the camera's audio stopped ({AUDIO_STOPPED_AFTER:?} without a frame): going on with its video alone until it comes back"
                        );
                        ingest.pause_audio();
                    }
                    if online {
                        self.follow_format_change(&mut shown, offer.transcoded_audio.as_ref());
                    }
                    if now - meter.0 >= BITRATE_EVERY {
                        let seconds = (now - meter.0).as_secs_f64();
                        let kbps = (received.bytes - meter.1) as f64 * 8.0 / seconds / 1000.0;
                        let fps = (received.video_frames - meter.2) as f64 / seconds;
                        meter = (now, received.bytes, received.video_frames);
                        self.status.send_if_modified(|s| {
                            let before = (s.bitrate_kbps, s.video.as_ref().map(|v| v.fps));
                            s.bitrate_kbps = kbps.round() as u32;
                            if let Some(video) = s.video.as_mut().filter(|_| measure_fps) {
                                video.fps = (fps * 10.0).round() as f32 / 10.0;
                            }
                            before != (s.bitrate_kbps, s.video.as_ref().map(|v| v.fps))
                        });
                    }
                }
            }
        }
    }

    /// A failure the message reports, if any; warnings are logged.
    fn failure_of(&self, message: &gst::Message) -> Option<Failure> {
        match message.view() {
            gst::MessageView::Error(e) => Some(Failure::from_error(
                &e.error(),
                e.debug().as_deref(),
                &self.redactor,
            )),
            gst::MessageView::Eos(_) => Some(Failure::new(
                FailureKind::Ended,
                "the camera ended the stream",
                &self.redactor,
            )),
            gst::MessageView::Warning(w) => {
                tracing::debug!(
                    camera = %self.name,
                    "{}",
                    self.redactor.redact(&format!("{} {}", w.error(), w.debug().unwrap_or_default()))
                );
                None
            }
            _ => None,
        }
    }

    /// `souphttpsrc` (1.22) reports a refused or timed-out connection only as its streaming
    /// thread's bare "Internal data stream error": from the source, before the stream's first
    /// bytes, that is a camera that did not answer, not a bad stream.
    fn silent_source_is_unreachable(
        &self,
        failure: Failure,
        message: &gst::Message,
        ingest: &Ingest,
    ) -> Failure {
        let from_source = message
            .src()
            .is_some_and(|src| src.name().ends_with("-source"));
        if failure.kind == FailureKind::BadStream
            && from_source
            && self.url.protocol() == StreamProtocol::HttpFlv
            && !ingest.offer().described
        {
            return Failure::new(
                FailureKind::Unreachable,
                format!("no answer ({})", failure.detail),
                &self.redactor,
            );
        }
        failure
    }

    /// Reports the camera online; returns true when its frame rate must be measured.
    /// `transcoded_audio` is the camera's own audio when the hub carries it as AAC.
    fn went_online(&self, reconnected: bool, transcoded_audio: Option<AudioStatus>) -> bool {
        let info = self.hub.info();
        let video = info
            .as_ref()
            .and_then(|i| i.video.as_ref())
            .and_then(|c| video_status(c));
        let audio = info
            .as_deref()
            .and_then(|i| shown_audio(i, transcoded_audio.as_ref()));
        let measure_fps = video.as_ref().is_some_and(|v| v.fps == 0.0);
        self.status.send_modify(|s| {
            if reconnected {
                s.reconnects += 1;
            }
            s.state = CameraState::Online;
            s.reason = None;
            s.since = SystemTime::now();
            s.video = video.clone();
            s.audio = audio.clone();
        });
        let describe_video = video.map_or("no video".into(), |v| {
            format!("{} {}x{} {} fps", v.codec, v.width, v.height, v.fps)
        });
        let describe_audio =
            audio.map_or(
                "no audio (cry detection is off for it)".into(),
                |a| match a.restreamed_as {
                    Some(to) => format!("{} {} Hz (restreamed as {to})", a.codec, a.sample_rate),
                    None => format!("{} {} Hz", a.codec, a.sample_rate),
                },
            );
        tracing::info!(
            camera = %self.name,
            url = %self.url,
            "camera {}: {describe_video}, {describe_audio}",
            if reconnected { "back online" } else { "online" }
        );
        measure_fps
    }

    /// Keeps the status in step with a camera whose formats change while it streams: a new
    /// picture size (new parameter sets in the same session), audio that stopped or came back.
    /// `transcoded_audio` is the camera's own audio when the hub carries it as AAC.
    fn follow_format_change(
        &self,
        shown: &mut Option<Arc<StreamInfo>>,
        transcoded_audio: Option<&AudioStatus>,
    ) {
        let info = self.hub.info();
        if info.as_ref().map(Arc::as_ptr) == shown.as_ref().map(Arc::as_ptr) {
            return;
        }
        let before = std::mem::replace(shown, info.clone());
        let (Some(before), Some(info)) = (before, info) else {
            return;
        };
        if before.video != info.video
            && let Some(video) = info.video.as_ref().and_then(|c| video_status(c))
        {
            tracing::info!(
                camera = %self.name,
                "the camera's picture changed: {} {}x{}",
                video.codec, video.width, video.height
            );
            self.status.send_modify(|s| {
                let measured = s.video.as_ref().map_or(0.0, |v| v.fps);
                // A frame rate measured (not in the stream's headers) stays measured.
                let fps = if video.fps == 0.0 {
                    measured
                } else {
                    video.fps
                };
                s.video = Some(VideoStatus { fps, ..video });
            });
        }
        if before.audio.is_some() != info.audio.is_some() {
            let audio = shown_audio(&info, transcoded_audio);
            if audio.is_some() {
                tracing::info!(camera = %self.name, "the camera's audio is back");
            }
            self.status.send_modify(|s| s.audio = audio);
        }
    }

    fn set_state(&self, state: CameraState) {
        self.status.send_if_modified(|s| {
            if s.state == state {
                return false;
            }
            s.state = state;
            s.since = SystemTime::now();
            true
        });
    }
}

/// The audio the status shows for the hub's formats `info`: the camera's own when the hub
/// carries it transcoded (`transcoded_audio`), none when the hub has none (a track given up
/// on, or paused, stays so even if it was being transcoded).
fn shown_audio(info: &StreamInfo, transcoded_audio: Option<&AudioStatus>) -> Option<AudioStatus> {
    let hub_audio = audio_status(info.audio.as_ref()?)?;
    Some(transcoded_audio.cloned().unwrap_or(hub_audio))
}
