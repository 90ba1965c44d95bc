//! From a camera hub into one viewer pipeline's appsrcs: each frame is re-timed by the
//! viewer's own [`ConsumerClock`] (the cached GOP squeezed into milliseconds, so the first
//! picture shows at once and the viewer is live) and pushed without copying its data.
//!
//! Two ways in: [`direct`] registers the viewer with the hub, which pushes on the camera's own
//! thread (no task in between: the frame goes from the camera thread to the appsrc's thread,
//! one hop; WebRTC viewers), and [`run`] reads a hub subscription in a tokio task (MP4
//! viewers). `push_buffer` on a non-blocking appsrc never waits. A feed ends on cancellation,
//! when the camera is gone, when the formats change beyond what the pipeline can follow, or when
//! the pipeline refuses data.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::transcode::TranscodedAudio;
use super::{AudioCodec, VideoCodec};
use crate::camera::{
    CameraHandle, ConsumerClock, ConsumerKind, DirectConsumer, Frame, MediaEvent, Offered,
    StreamInfo, Subscription, Track,
};

/// Buffers a directly fed appsrc may hold, beyond the cached GOP it started with, before the
/// hub counts its viewer as behind (as long as the hub's own queue for a channel consumer). A
/// pipeline that keeps up holds one or two.
const DIRECT_QUEUE_BUFFERS: u64 = 256;

/// Where a viewer's audio comes from.
pub enum AudioFrom {
    /// The camera's own audio frames, passed through.
    Camera,
    /// The camera's shared transcoder (its caps are set on the appsrc with its first frame).
    Transcoded(TranscodedAudio),
}

/// The appsrcs of one viewer pipeline.
pub struct FeedTargets {
    pub video: gst_app::AppSrc,
    pub audio: Option<(gst_app::AppSrc, AudioFrom)>,
    /// Follow a new resolution by changing the appsrc's caps (RTP can, an MP4 file cannot).
    pub follow_caps: bool,
    /// Join the camera's G.711 frames into buffers up to this long (sharing their memory), so
    /// that the payloader makes one packet of each: every packet costs a WebRTC viewer a trip
    /// through webrtcbin, as much as a video packet. `None`: as the camera sends them.
    pub join_audio: Option<Duration>,
}

/// Why a feed ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEnd {
    /// The viewer or Vigil stopped it.
    Cancelled,
    /// The hub dropped this viewer (too slow) or the camera went away.
    Dropped,
    /// The camera's formats changed in a way the pipeline cannot follow.
    FormatChanged,
    /// The pipeline refused a buffer (it is stopping or failed).
    Refused(String),
}

/// The appsrc settings every viewer uses: live, timestamps from us, never blocking.
pub fn appsrc(name: &str, caps: &gst::Caps) -> gst_app::AppSrc {
    gst_app::AppSrc::builder()
        .name(name)
        .caps(caps)
        .format(gst::Format::Time)
        .is_live(true)
        .do_timestamp(false)
        .block(false)
        // The pipeline keeps up with a live camera; this only bounds memory if it stalls.
        .max_bytes(32 * 1024 * 1024)
        .build()
}

/// Feeds `targets` from `camera`'s hub on the camera's thread until the feed ends (resolves
/// then). The future holds the registration: dropping it ends the feed. Transcoded audio, if
/// any, is pushed from the future itself.
pub fn direct(
    camera: &CameraHandle,
    kind: ConsumerKind,
    targets: FeedTargets,
    built_for: Arc<StreamInfo>,
    token: CancellationToken,
) -> impl std::future::Future<Output = FeedEnd> + Send + 'static {
    let (feeder, mut transcoded) = Feeder::new(targets, built_for);
    let feeder = Arc::new(Mutex::new(feeder));
    let (end_tx, mut end_rx) = oneshot::channel();
    let registration = camera.subscribe_direct(
        kind,
        Box::new(HubFeed {
            feeder: feeder.clone(),
            end: Some(end_tx),
            burst: 0,
        }),
    );
    async move {
        let _registration = registration;
        loop {
            tokio::select! {
                _ = token.cancelled() => return FeedEnd::Cancelled,
                end = &mut end_rx => return end.unwrap_or(FeedEnd::Dropped),
                frame = async { transcoded.as_mut()?.recv().await }, if transcoded.is_some() => {
                    let Some(frame) = frame else {
                        // The transcoder stopped (its camera's audio went away): video goes on.
                        transcoded = None;
                        continue;
                    };
                    let caps = transcoded.as_ref().and_then(|t| t.caps());
                    if let Err(end) = lock(&feeder).transcoded(&frame, caps) {
                        return end;
                    }
                }
            }
        }
    }
}

/// Moves frames from a hub subscription into `targets` until the feed ends.
pub async fn run(
    mut subscription: Subscription,
    targets: FeedTargets,
    built_for: Arc<StreamInfo>,
    token: CancellationToken,
) -> FeedEnd {
    let (mut feeder, mut transcoded) = Feeder::new(targets, built_for);
    loop {
        let fed = tokio::select! {
            _ = token.cancelled() => return FeedEnd::Cancelled,
            event = subscription.recv() => match event {
                None => return FeedEnd::Dropped,
                Some(event) => feeder.event(&event),
            },
            frame = async { transcoded.as_mut()?.recv().await }, if transcoded.is_some() => {
                match frame {
                    Some(frame) => {
                        let caps = transcoded.as_ref().and_then(|t| t.caps());
                        feeder.transcoded(&frame, caps)
                    }
                    None => {
                        // The transcoder stopped (its camera's audio went away): video goes on.
                        transcoded = None;
                        continue;
                    }
                }
            }
        };
        if let Err(end) = fed {
            return end;
        }
    }
}

fn lock(feeder: &Mutex<Feeder>) -> std::sync::MutexGuard<'_, Feeder> {
    feeder
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The hub's side of a [`direct`] feed: called on the camera's thread under the hub's lock.
struct HubFeed {
    feeder: Arc<Mutex<Feeder>>,
    /// Taken when the feed ends; dropping the consumer unsent means the hub dropped it.
    end: Option<oneshot::Sender<FeedEnd>>,
    /// Cached frames it started with: a long GOP's burst may sit in the appsrc for a moment
    /// without the viewer being behind.
    burst: u64,
}

impl HubFeed {
    fn limit(&self) -> u64 {
        self.burst + DIRECT_QUEUE_BUFFERS
    }
}

impl DirectConsumer for HubFeed {
    fn offer(&mut self, event: &MediaEvent) -> Offered {
        if matches!(event, MediaEvent::Frame(f) if f.cached) {
            self.burst += 1;
        }
        let mut feeder = lock(&self.feeder);
        if feeder.queued() >= self.limit() {
            return Offered::Full;
        }
        match feeder.event(event) {
            Ok(()) => Offered::Taken,
            Err(end) => {
                if let Some(tx) = self.end.take() {
                    let _ = tx.send(end);
                }
                Offered::Gone
            }
        }
    }

    fn has_room(&self) -> bool {
        lock(&self.feeder).queued() < self.limit() / 2
    }
}

impl Drop for HubFeed {
    fn drop(&mut self) {
        if let Some(tx) = self.end.take() {
            let _ = tx.send(FeedEnd::Dropped);
        }
    }
}

/// One viewer's feeding: which frames go to which appsrc, on the viewer's own clock.
struct Feeder {
    video: gst_app::AppSrc,
    audio: Option<gst_app::AppSrc>,
    /// The hub's audio frames are this viewer's audio (not a transcoder's).
    camera_audio: bool,
    follow_caps: bool,
    built_for: Arc<StreamInfo>,
    clock: ConsumerClock,
    first: [bool; 2],
    /// G.711 frames being joined, when joining.
    joiner: Option<Joiner>,
}

impl Feeder {
    fn new(targets: FeedTargets, built_for: Arc<StreamInfo>) -> (Self, Option<TranscodedAudio>) {
        let FeedTargets {
            video,
            audio,
            follow_caps,
            join_audio,
        } = targets;
        let (audio, transcoded) = match audio {
            Some((src, AudioFrom::Camera)) => (Some(src), None),
            Some((src, AudioFrom::Transcoded(sub))) => (Some(src), Some(sub)),
            None => (None, None),
        };
        let camera_audio = audio.is_some() && transcoded.is_none();
        let joiner = join_audio
            .filter(|_| camera_audio)
            .and_then(|span| Joiner::for_caps(built_for.audio.as_ref()?, span));
        let feeder = Feeder {
            video,
            audio,
            camera_audio,
            follow_caps,
            built_for,
            clock: ConsumerClock::new(),
            first: [true, true],
            joiner,
        };
        (feeder, transcoded)
    }

    /// Buffers waiting in the appsrcs.
    fn queued(&self) -> u64 {
        let audio = self.audio.as_ref().map_or(0, |a| a.current_level_buffers());
        self.video.current_level_buffers().max(audio)
    }

    /// One event from the hub.
    fn event(&mut self, event: &MediaEvent) -> Result<(), FeedEnd> {
        match event {
            MediaEvent::Info(info) => {
                if !can_follow(&self.built_for, info, self.follow_caps) {
                    return Err(FeedEnd::FormatChanged);
                }
                if let Some(caps) = &info.video {
                    self.video.set_caps(Some(caps));
                }
                self.clock.reset();
                // A new session's first audio does not continue what was being joined.
                if let Some(joiner) = &mut self.joiner {
                    joiner.pending = None;
                }
                Ok(())
            }
            MediaEvent::Frame(frame) if frame.track == Track::Audio && !self.camera_audio => Ok(()),
            MediaEvent::Frame(frame) => self.frame(frame),
        }
    }

    /// One frame of the transcoder's, with its encoder's caps.
    fn transcoded(&mut self, frame: &Frame, caps: Option<gst::Caps>) -> Result<(), FeedEnd> {
        if let (Some(src), Some(caps)) = (&self.audio, caps)
            && src.caps().as_ref() != Some(&caps)
        {
            src.set_caps(Some(&caps));
        }
        self.frame(frame)
    }

    fn frame(&mut self, frame: &Frame) -> Result<(), FeedEnd> {
        let index = match frame.track {
            Track::Video => 0,
            Track::Audio => 1,
        };
        let pts = self.clock.map(frame);
        let src = match frame.track {
            Track::Video => &self.video,
            Track::Audio => match &self.audio {
                Some(src) => src,
                None => return Ok(()),
            },
        };
        let buffers = match (&mut self.joiner, frame.track) {
            (Some(joiner), Track::Audio) => joiner.add(&frame.buffer, pts),
            _ => [Some((frame.buffer.clone(), pts)), None],
        };
        for (buffer, pts) in buffers.into_iter().flatten() {
            let buffer = stamped(buffer, pts, std::mem::take(&mut self.first[index]));
            src.push_buffer(buffer)
                .map_err(|e| FeedEnd::Refused(format!("{e:?}")))?;
        }
        Ok(())
    }
}

/// `buffer` (sharing its data) stamped with the viewer's own time.
fn stamped(mut buffer: gst::Buffer, pts: Duration, discont: bool) -> gst::Buffer {
    let pts = gst::ClockTime::from_nseconds(pts.as_nanos() as u64);
    let writable = buffer.make_mut();
    writable.set_pts(pts);
    writable.set_dts(pts);
    if discont {
        writable.set_flags(gst::BufferFlags::DISCONT);
    }
    buffer
}

/// Joins consecutive G.711 frames (one byte per sample) into buffers of up to `max_bytes`,
/// appending the frames' memory rather than copying it. A gap in time starts a new buffer.
struct Joiner {
    bytes_per_second: u64,
    max_bytes: usize,
    /// The buffer being joined and its viewer time.
    pending: Option<(gst::Buffer, Duration)>,
}

impl Joiner {
    /// A joiner for audio of `caps` (G.711 only; other codecs are not joined).
    fn for_caps(caps: &gst::Caps, span: Duration) -> Option<Joiner> {
        if !matches!(AudioCodec::of(caps)?, AudioCodec::Pcma | AudioCodec::Pcmu) {
            return None;
        }
        let s = caps.structure(0)?;
        let rate = u64::try_from(s.get::<i32>("rate").ok()?).ok()?;
        let channels = u64::try_from(s.get::<i32>("channels").unwrap_or(1)).ok()?;
        let bytes_per_second = rate * channels;
        let max_bytes = (bytes_per_second * span.as_millis() as u64 / 1000) as usize;
        (max_bytes > 0).then_some(Joiner {
            bytes_per_second,
            max_bytes,
            pending: None,
        })
    }

    fn duration_of(&self, bytes: usize) -> Duration {
        Duration::from_nanos(bytes as u64 * 1_000_000_000 / self.bytes_per_second.max(1))
    }

    /// Takes a frame at viewer time `pts`; returns the buffers ready to push, in order.
    fn add(&mut self, frame: &gst::Buffer, pts: Duration) -> [Option<(gst::Buffer, Duration)>; 2] {
        // Up to 5 ms off where the pending buffer ends still continues it (camera clocks jitter).
        const SLACK: Duration = Duration::from_millis(5);
        let mut ready = None;
        if let Some((joined, start)) = &self.pending {
            let end = *start + self.duration_of(joined.size());
            let continues = pts + SLACK >= end && pts <= end + SLACK;
            if !continues || joined.size() + frame.size() > self.max_bytes {
                ready = self.pending.take().map(|p| self.finish(p));
            }
        }
        let pending = match self.pending.take() {
            Some((mut joined, start)) => {
                joined.append(frame.clone());
                (joined, start)
            }
            None => (frame.clone(), pts),
        };
        if pending.0.size() >= self.max_bytes {
            [ready, Some(self.finish(pending))]
        } else {
            self.pending = Some(pending);
            [ready, None]
        }
    }

    /// A joined buffer lasts as long as its samples (the payloader reads its duration).
    fn finish(&self, (mut joined, start): (gst::Buffer, Duration)) -> (gst::Buffer, Duration) {
        let duration = self.duration_of(joined.size());
        joined
            .make_mut()
            .set_duration(gst::ClockTime::from_nseconds(duration.as_nanos() as u64));
        (joined, start)
    }
}

/// Whether a pipeline built for `old` can go on with `new`: the same formats, or (when it can
/// follow caps) the same video codec and audio.
fn can_follow(old: &StreamInfo, new: &StreamInfo, follow_caps: bool) -> bool {
    if old == new {
        return true;
    }
    let codec = |info: &StreamInfo| info.video.as_ref().and_then(VideoCodec::of);
    follow_caps && codec(old) == codec(new) && old.audio == new.audio
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(video: &str, width: i32, audio: Option<&str>) -> StreamInfo {
        StreamInfo {
            video: Some(gst::Caps::builder(video).field("width", width).build()),
            audio: audio.map(|a| gst::Caps::builder(a).build()),
        }
    }

    #[test]
    fn which_format_changes_a_pipeline_follows() {
        let _ = gst::init();
        let base = info("video/x-h264", 640, Some("audio/x-alaw"));
        let check = |new: StreamInfo, follow: bool, expected: bool| {
            assert_eq!(
                can_follow(&base, &new, follow),
                expected,
                "{new:?} {follow}"
            );
        };
        check(info("video/x-h264", 640, Some("audio/x-alaw")), false, true);
        check(info("video/x-h264", 1280, Some("audio/x-alaw")), true, true);
        check(
            info("video/x-h264", 1280, Some("audio/x-alaw")),
            false,
            false,
        );
        check(info("video/x-h265", 640, Some("audio/x-alaw")), true, false);
        check(info("video/x-h264", 640, None), true, false);
    }

    fn alaw(rate: i32) -> gst::Caps {
        gst::Caps::builder("audio/x-alaw")
            .field("rate", rate)
            .field("channels", 1i32)
            .build()
    }

    /// (size, start ms, duration ms) of what a joiner gives for 20 ms frames at `starts` (ms).
    fn joined(joiner: &mut Joiner, starts: &[u64]) -> Vec<(usize, u64, u64)> {
        starts
            .iter()
            .flat_map(|ms| {
                joiner.add(
                    &gst::Buffer::from_slice(vec![0xd5u8; 160]),
                    Duration::from_millis(*ms),
                )
            })
            .flatten()
            .map(|(b, pts)| {
                let duration = b.duration().map_or(0, |d| d.mseconds());
                (b.size(), pts.as_millis() as u64, duration)
            })
            .collect()
    }

    #[test]
    fn g711_frames_are_joined_into_60_ms_and_a_gap_starts_a_new_packet() {
        let _ = gst::init();
        let span = Duration::from_millis(60);
        let mut joiner = Joiner::for_caps(&alaw(8000), span).unwrap();
        assert_eq!(
            joined(&mut joiner, &[0, 20, 40, 60, 80, 100, 120]),
            vec![(480, 0, 60), (480, 60, 60)]
        );
        // 120 is pending; a frame 200 ms later does not continue it.
        assert_eq!(
            joined(&mut joiner, &[320, 340, 360]),
            vec![(160, 120, 20), (480, 320, 60)]
        );
        // The memory is the frames', appended, not copied into one block.
        let frames = [0u64, 20, 40].map(|ms| {
            (
                gst::Buffer::from_slice(vec![ms as u8; 160]),
                Duration::from_millis(ms),
            )
        });
        let mut joiner = Joiner::for_caps(&alaw(8000), span).unwrap();
        let out: Vec<_> = frames
            .iter()
            .flat_map(|(b, pts)| joiner.add(b, *pts))
            .flatten()
            .collect();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0.n_memory(), 3);
        // Only G.711 is joined.
        let opus = gst::Caps::builder("audio/x-opus")
            .field("rate", 48000i32)
            .build();
        assert!(Joiner::for_caps(&opus, span).is_none());
    }

    /// A playing appsrc → appsink pipeline, and what reaches the sink (pts in ms).
    fn sink_pipeline(caps: &gst::Caps) -> (gst::Pipeline, gst_app::AppSrc, gst_app::AppSink) {
        use gst::prelude::*;
        let pipeline = gst::Pipeline::new();
        let src = appsrc("src", caps);
        let sink = gst_app::AppSink::builder().sync(false).build();
        pipeline
            .add_many([src.upcast_ref::<gst::Element>(), sink.upcast_ref()])
            .unwrap();
        src.link(&sink).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        (pipeline, src, sink)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_direct_feed_starts_with_the_squeezed_gop_and_ends_when_the_format_changes() {
        use crate::camera::hub::HubLimits;
        use crate::camera::{CameraStatus, Hub};
        use gst::prelude::*;
        let _ = gst::init();
        let hub = Hub::new(HubLimits::default());
        let first = info("video/x-h264", 640, None);
        hub.set_info(first.clone());
        let (_status_tx, status) = tokio::sync::watch::channel(CameraStatus::default());
        let camera = CameraHandle::new("nursery", hub.clone(), status);
        let push = |ms: u64, keyframe: bool| {
            hub.push(
                Track::Video,
                gst::Buffer::from_slice(vec![0u8; 100]),
                Duration::from_millis(ms),
                keyframe,
            )
        };
        push(0, true);
        push(66, false);
        push(133, false);

        let (pipeline, src, sink) = sink_pipeline(first.video.as_ref().unwrap());
        let targets = FeedTargets {
            video: src,
            audio: None,
            follow_caps: true,
            join_audio: None,
        };
        let token = CancellationToken::new();
        let feed = tokio::spawn(direct(
            &camera,
            ConsumerKind::WebRtc,
            targets,
            Arc::new(first),
            token,
        ));
        assert_eq!(hub.consumer_count(ConsumerKind::WebRtc), 1);
        // A live frame, pushed on this (the "camera's") thread.
        push(200, false);
        let mut pts = Vec::new();
        while pts.len() < 4 {
            let sample = sink
                .try_pull_sample(gst::ClockTime::from_seconds(5))
                .expect("a frame");
            pts.push(sample.buffer().unwrap().pts().unwrap().mseconds());
        }
        // The GOP 1 ms apart, then the live frame at the camera's spacing after it.
        assert_eq!(pts, vec![0, 1, 2, 69]);

        // Another codec: the pipeline cannot follow, the feed says so and leaves the hub.
        hub.set_info(info("video/x-h265", 640, None));
        let end = tokio::time::timeout(Duration::from_secs(5), feed)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(end, FeedEnd::FormatChanged);
        assert_eq!(hub.consumer_count(ConsumerKind::WebRtc), 0);
        pipeline.set_state(gst::State::Null).unwrap();
    }
}
