//! Shared audio transcoders: browsers play WebRTC audio only as Opus, and MP4 audio (MSE,
//! `stream.mp4`) as AAC, while cameras send AAC, PCMA, PCMU or Opus. One transcoder per camera
//! and target codec starts with its first subscriber, feeds every viewer like a hub, and stops
//! after the last one leaves — never one per viewer.
//!
//! Audio only: video never passes through here. Frames keep the camera's timeline, so a viewer
//! re-times them with the same clock as its video; the encoder's caps travel with the
//! subscription. A subscriber that cannot keep up loses packets (counted), never the
//! transcoder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use gst::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::feed;
use super::pipeline::OwnedPipeline;
use super::{AudioCodec, LiveError};
use crate::camera::unify;
use crate::camera::{CameraHandle, ConsumerKind, Frame, MediaEvent, Track};

/// Frames a subscriber may have queued (a few seconds).
const SUBSCRIBER_QUEUE: usize = 100;

/// What a transcoder makes: mono, at the camera's own sample rate where the codec has it (no
/// resampling for an 8 kHz camera), plenty for a room microphone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// For WebRTC: 60 ms frames (a third of the packets of 20 ms ones, which is most of what a
    /// viewer's audio costs), 24 kbit/s.
    Opus,
    /// AAC-LC for MP4, as `unify_audio` makes it (GStreamer 1.22's mp4mux writes an Opus `dOps` box in the
    /// wrong byte order, which browsers reject, so MP4 audio is AAC).
    Aac,
}

impl Target {
    /// The encoder with its settings.
    fn encoder(self, pipeline: &OwnedPipeline, name: &str) -> Result<gst::Element, LiveError> {
        let encoder = match self {
            Target::Opus => {
                let encoder = pipeline.add("opusenc", name)?;
                encoder.set_property("bitrate", 24_000i32);
                encoder.set_property_from_str("frame-size", "60");
                // Half of the default's effort; for a room microphone no one hears the difference.
                encoder.set_property("complexity", 5i32);
                encoder
            }
            Target::Aac => {
                let encoder = unify::aac_encoder(name).map_err(|e| {
                    pipeline.error(format!("cannot create avenc_aac (gstreamer1.0-libav): {e}"))
                })?;
                pipeline.adopt(&encoder)?;
                encoder
            }
        };
        Ok(encoder)
    }

    /// The sample rate to encode a camera's `rate` at: the lowest the codec supports that
    /// keeps all of it.
    pub fn rate_for(self, rate: i32) -> i32 {
        match self {
            Target::Opus => [8_000, 12_000, 16_000, 24_000, 48_000]
                .into_iter()
                .find(|r| *r >= rate)
                .unwrap_or(48_000),
            Target::Aac => unify::aac_rate_for(rate),
        }
    }
}

/// The running transcoders, by camera and target. Holds them weakly: the subscribers keep
/// them alive.
#[derive(Default)]
pub struct Transcoders {
    feeds: Mutex<HashMap<(String, Target), Weak<Feed>>>,
}

/// One camera's transcoder, alive while a subscription holds it.
struct Feed {
    fanout: Arc<Fanout>,
    /// Stops the transcoder task when the last subscriber is gone.
    token: CancellationToken,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// The subscribers of one transcoder, and the caps of what it makes.
#[derive(Default)]
struct Fanout {
    subscribers: Mutex<Vec<mpsc::Sender<Frame>>>,
    caps: Mutex<Option<gst::Caps>>,
    dropped: std::sync::atomic::AtomicU64,
}

/// A viewer's end of a transcoder; dropping the last one stops it.
pub struct TranscodedAudio {
    rx: mpsc::Receiver<Frame>,
    feed: Arc<Feed>,
}

impl TranscodedAudio {
    /// The next encoded frame, on the camera's timeline; `None` once the transcoder stopped.
    pub async fn recv(&mut self) -> Option<Frame> {
        self.rx.recv().await
    }

    /// The encoder's caps (with its codec data), known once it has produced a frame.
    pub fn caps(&self) -> Option<gst::Caps> {
        self.feed.fanout.caps.lock().unwrap().clone()
    }
}

impl Transcoders {
    /// Subscribes to `camera`'s transcoder for `target`, starting it (as a task given to
    /// `spawn`) if it is not running.
    pub fn subscribe(
        &self,
        camera: &CameraHandle,
        target: Target,
        parent: &CancellationToken,
        spawn: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
    ) -> TranscodedAudio {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let mut feeds = self.feeds.lock().unwrap();
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let key = (camera.name().to_string(), target);
        let feed = match feeds.get(&key).and_then(Weak::upgrade) {
            Some(feed) => feed,
            None => {
                let feed = Arc::new(Feed {
                    fanout: Arc::default(),
                    token: parent.child_token(),
                });
                feeds.insert(key, Arc::downgrade(&feed));
                tracing::debug!(camera = camera.name(), ?target, "audio transcoder starting");
                spawn(Box::pin(transcode(
                    camera.clone(),
                    target,
                    feed.fanout.clone(),
                    feed.token.clone(),
                )));
                feed
            }
        };
        feed.fanout.subscribers.lock().unwrap().push(tx);
        TranscodedAudio { rx, feed }
    }

    /// The transcoders running now, as (camera, target).
    pub fn running(&self) -> Vec<(String, Target)> {
        let feeds = self.feeds.lock().unwrap();
        feeds
            .iter()
            .filter(|(_, feed)| feed.strong_count() > 0)
            .map(|(key, _)| key.clone())
            .collect()
    }
}

impl Fanout {
    fn deliver(&self, frame: Frame) {
        let mut subscribers = self.subscribers.lock().unwrap();
        subscribers.retain(|tx| match tx.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}

/// The transcoder task: the camera's audio in, `target` out to the fan-out, rebuilt when the
/// camera's audio format changes.
async fn transcode(
    camera: CameraHandle,
    target: Target,
    fanout: Arc<Fanout>,
    token: CancellationToken,
) {
    let mut subscription = camera.subscribe(ConsumerKind::Transcoder);
    let mut current: Option<Transcoder> = None;
    let mut audio_caps: Option<gst::Caps> = None;
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            error = async { current.as_mut().map(|t| &mut t.errors).unwrap().await },
                if current.is_some() =>
            {
                tracing::warn!(camera = camera.name(), ?target, "audio transcoder failed: {error}");
                drop(current.take());
                // Try again after a pause, with the formats we know.
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                current = start(&camera, target, audio_caps.as_ref(), &fanout);
            }
            event = subscription.recv() => match event {
                None => break,
                Some(MediaEvent::Info(info)) => {
                    if info.audio != audio_caps {
                        audio_caps = info.audio.clone();
                        current = start(&camera, target, audio_caps.as_ref(), &fanout);
                    }
                }
                Some(MediaEvent::Frame(frame)) if frame.track == Track::Audio => {
                    if let Some(t) = &mut current {
                        t.push(&frame);
                    }
                }
                Some(MediaEvent::Frame(_)) => {}
            },
        }
    }
    let dropped = fanout.dropped.load(std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(
        camera = camera.name(),
        ?target,
        dropped,
        "audio transcoder stopped"
    );
    // Subscribers see the end of their stream.
    fanout.subscribers.lock().unwrap().clear();
}

fn start(
    camera: &CameraHandle,
    target: Target,
    caps: Option<&gst::Caps>,
    fanout: &Arc<Fanout>,
) -> Option<Transcoder> {
    let caps = caps?;
    match Transcoder::new(camera.name(), target, caps, fanout.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(camera = camera.name(), ?target, "no transcoded audio: {e}");
            None
        }
    }
}

/// One transcoding pipeline: appsrc → decoder → resample → encoder → appsink.
struct Transcoder {
    _pipeline: OwnedPipeline,
    src: gst_app::AppSrc,
    first: bool,
    /// Resolves with the pipeline's first error.
    errors: std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>,
}

impl Transcoder {
    fn new(
        camera: &str,
        target: Target,
        caps: &gst::Caps,
        fanout: Arc<Fanout>,
    ) -> Result<Self, LiveError> {
        let decoders: &[&str] = match AudioCodec::of(caps) {
            Some(AudioCodec::Aac) => &["aacparse", "avdec_aac"],
            Some(AudioCodec::Pcma) => &["alawdec"],
            Some(AudioCodec::Pcmu) => &["mulawdec"],
            Some(AudioCodec::Opus) => &["opusparse", "opusdec"],
            None => {
                return Err(LiveError::Unsupported(format!(
                    "the camera's audio ({caps}) cannot be transcoded"
                )));
            }
        };
        let name = match target {
            Target::Opus => format!("{camera}-opus"),
            Target::Aac => format!("{camera}-aac"),
        };
        let pipeline = OwnedPipeline::new(&name, "audio transcoder");
        let src = feed::appsrc(&format!("{name}-src"), caps);
        pipeline.adopt(&src)?;
        let mut chain = vec![src.clone().upcast::<gst::Element>()];
        for (i, factory) in decoders.iter().enumerate() {
            chain.push(pipeline.add(factory, &format!("{name}-dec{i}"))?);
        }
        chain.push(pipeline.add("audioconvert", &format!("{name}-convert"))?);
        chain.push(pipeline.add("audioresample", &format!("{name}-resample"))?);
        let raw = pipeline.add("capsfilter", &format!("{name}-raw"))?;
        let camera_rate = caps
            .structure(0)
            .and_then(|s| s.get::<i32>("rate").ok())
            .unwrap_or(48_000);
        raw.set_property(
            "caps",
            gst::Caps::builder("audio/x-raw")
                .field("rate", target.rate_for(camera_rate))
                .field("channels", 1i32)
                .build(),
        );
        chain.push(raw);
        chain.push(target.encoder(&pipeline, &format!("{name}-enc"))?);
        let sink = pipeline.add_appsink(&format!("{name}-sink"))?;
        chain.push(sink.clone().upcast());
        pipeline.link(&chain.iter().collect::<Vec<_>>())?;
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(caps) = sample.caps() {
                        let mut known = fanout.caps.lock().unwrap();
                        if known.as_ref().is_none_or(|k| k.as_ref() != caps) {
                            *known = Some(caps.to_owned());
                        }
                    }
                    let Some(buffer) = sample.buffer_owned() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let Some(pts) = buffer.pts() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    fanout.deliver(Frame {
                        track: Track::Audio,
                        buffer,
                        pts: Duration::from_nanos(pts.nseconds()),
                        keyframe: true,
                        cached: false,
                    });
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.play()?;
        Ok(Self {
            errors: Box::pin(pipeline.first_error()),
            _pipeline: pipeline,
            src,
            first: true,
        })
    }

    /// Pushes one camera audio frame, keeping its camera-timeline timestamp.
    fn push(&mut self, frame: &Frame) {
        let pts = gst::ClockTime::from_nseconds(frame.pts.as_nanos() as u64);
        let mut buffer = frame.buffer.clone();
        let writable = buffer.make_mut();
        writable.set_pts(pts);
        writable.set_dts(pts);
        if std::mem::take(&mut self.first) {
            writable.set_flags(gst::BufferFlags::DISCONT);
        }
        let _ = self.src.push_buffer(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::hub::HubLimits;
    use crate::camera::{CameraStatus, Hub, StreamInfo};

    fn camera(name: &str) -> (CameraHandle, Arc<Hub>) {
        let _ = gst::init();
        let hub = Hub::new(HubLimits::default());
        hub.set_info(StreamInfo {
            video: Some(gst::Caps::builder("video/x-h264").build()),
            audio: Some(
                gst::Caps::builder("audio/x-alaw")
                    .field("rate", 8_000i32)
                    .field("channels", 1i32)
                    .build(),
            ),
        });
        let (_tx, status) = tokio::sync::watch::channel(CameraStatus::default());
        (CameraHandle::new(name, hub.clone(), status), hub)
    }

    /// Feeds 20 ms A-law packets in real time until `done` says stop (or 5 s pass).
    async fn feed_alaw(hub: &Hub, mut done: impl FnMut() -> bool) {
        let started = std::time::Instant::now();
        let mut pts = Duration::ZERO;
        while !done() && started.elapsed() < Duration::from_secs(5) {
            hub.push(
                Track::Audio,
                gst::Buffer::from_slice(vec![0xd5u8; 160]),
                pts,
                true,
            );
            pts += Duration::from_millis(20);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_transcoder_per_camera_from_the_first_subscriber_to_the_last() {
        let (nursery, hub) = camera("nursery");
        let transcoders = Transcoders::default();
        let token = CancellationToken::new();
        let spawn = |task| {
            tokio::spawn(task);
        };
        let mut first = transcoders.subscribe(&nursery, Target::Opus, &token, spawn);
        let mut second = transcoders.subscribe(&nursery, Target::Opus, &token, spawn);
        assert_eq!(
            transcoders.running(),
            vec![("nursery".to_string(), Target::Opus)]
        );
        // A consumer starts at a keyframe (the hub holds back what comes before one).
        hub.push(
            Track::Video,
            gst::Buffer::from_slice(vec![0u8; 8]),
            Duration::ZERO,
            true,
        );

        let (mut got_first, mut got_second) = (None, None);
        feed_alaw(&hub, || {
            got_first = got_first.take().or_else(|| first.rx.try_recv().ok());
            got_second = got_second.take().or_else(|| second.rx.try_recv().ok());
            got_first.is_some() && got_second.is_some()
        })
        .await;
        assert!(
            got_first.is_some() && got_second.is_some(),
            "no Opus frames came out"
        );
        let caps = first.caps().expect("the encoder's caps");
        assert_eq!(caps.structure(0).unwrap().name(), "audio/x-opus");
        assert_eq!(
            hub.consumer_count(ConsumerKind::Transcoder),
            1,
            "one for both viewers"
        );

        // Another target is another transcoder; the last subscriber leaving stops each.
        let aac = transcoders.subscribe(&nursery, Target::Aac, &token, spawn);
        assert_eq!(transcoders.running().len(), 2);
        drop(first);
        assert_eq!(transcoders.running().len(), 2, "still one viewer of Opus");
        drop(second);
        drop(aac);
        assert!(transcoders.running().is_empty());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while hub.consumer_count(ConsumerKind::Transcoder) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the transcoders did not stop"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn sample_rates_keep_the_camera_s_own() {
        assert_eq!(Target::Opus.rate_for(8_000), 8_000);
        assert_eq!(Target::Opus.rate_for(11_025), 12_000);
        assert_eq!(Target::Opus.rate_for(44_100), 48_000);
        assert_eq!(Target::Opus.rate_for(96_000), 48_000);
        assert_eq!(Target::Aac.rate_for(8_000), 16_000);
        assert_eq!(Target::Aac.rate_for(44_100), 44_100);
    }
}
