//! The shared Opus transcoder: browsers play WebRTC audio as Opus, cameras send AAC, PCMA or
//! PCMU. One transcoder per camera starts with its first subscriber, feeds every viewer like a
//! hub, and stops after the last one leaves — never one per viewer.
//!
//! Audio only: video never passes through here. Frames keep the camera's timeline, so a viewer
//! re-times them with the same clock as its video. A subscriber that cannot keep up loses
//! packets (counted), never the transcoder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use gst::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::feed;
use super::pipeline::OwnedPipeline;
use super::{AudioCodec, LiveError};
use crate::camera::{CameraHandle, ConsumerKind, Frame, MediaEvent, Track};

/// Opus frames a subscriber may have queued (20 ms each: two seconds).
const SUBSCRIBER_QUEUE: usize = 100;

/// The bitrate of the transcoded Opus stream: plenty for a mono room microphone.
const OPUS_BITRATE: i32 = 32_000;

/// The caps of the transcoded stream: mono Opus at 48 kHz.
pub fn opus_caps() -> gst::Caps {
    gst::Caps::builder("audio/x-opus")
        .field("channel-mapping-family", 0i32)
        .field("channels", 1i32)
        .field("rate", 48_000i32)
        .build()
}

/// The running transcoders, by camera name. Holds them weakly: the subscribers keep them alive.
#[derive(Default)]
pub struct OpusFeeds {
    feeds: Mutex<HashMap<String, Weak<OpusFeed>>>,
}

/// One camera's transcoder, alive while a subscription holds it.
struct OpusFeed {
    fanout: Arc<Fanout>,
    /// Stops the transcoder task when the last subscriber is gone.
    token: CancellationToken,
}

impl Drop for OpusFeed {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// The subscribers of one transcoder.
#[derive(Default)]
struct Fanout {
    subscribers: Mutex<Vec<mpsc::Sender<Frame>>>,
    dropped: std::sync::atomic::AtomicU64,
}

/// A viewer's end of a transcoder; dropping the last one stops it.
pub struct OpusSubscription {
    rx: mpsc::Receiver<Frame>,
    _feed: Arc<OpusFeed>,
}

impl OpusSubscription {
    /// The next Opus frame, on the camera's timeline; `None` once the transcoder stopped.
    pub async fn recv(&mut self) -> Option<Frame> {
        self.rx.recv().await
    }
}

impl OpusFeeds {
    /// Subscribes to `camera`'s transcoder, starting it (as a task given to `spawn`) if it is
    /// not running.
    pub fn subscribe(
        &self,
        camera: &CameraHandle,
        parent: &CancellationToken,
        spawn: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
    ) -> OpusSubscription {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let mut feeds = self.feeds.lock().unwrap();
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let feed = match feeds.get(camera.name()).and_then(Weak::upgrade) {
            Some(feed) => feed,
            None => {
                let feed = Arc::new(OpusFeed {
                    fanout: Arc::default(),
                    token: parent.child_token(),
                });
                feeds.insert(camera.name().to_string(), Arc::downgrade(&feed));
                tracing::debug!(camera = camera.name(), "Opus transcoder starting");
                spawn(Box::pin(transcode(
                    camera.clone(),
                    feed.fanout.clone(),
                    feed.token.clone(),
                )));
                feed
            }
        };
        feed.fanout.subscribers.lock().unwrap().push(tx);
        OpusSubscription { rx, _feed: feed }
    }

    /// Cameras whose transcoder runs now.
    pub fn running(&self) -> Vec<String> {
        let feeds = self.feeds.lock().unwrap();
        feeds
            .iter()
            .filter(|(_, feed)| feed.strong_count() > 0)
            .map(|(name, _)| name.clone())
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

/// The transcoder task: the camera's audio in, Opus out to the fan-out, rebuilt when the
/// camera's audio format changes.
async fn transcode(camera: CameraHandle, fanout: Arc<Fanout>, token: CancellationToken) {
    let mut subscription = camera.subscribe(ConsumerKind::Transcoder);
    let mut current: Option<Transcoder> = None;
    let mut audio_caps: Option<gst::Caps> = None;
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            error = async { current.as_mut().map(|t| &mut t.errors).unwrap().await },
                if current.is_some() =>
            {
                tracing::warn!(camera = camera.name(), "Opus transcoder failed: {error}");
                drop(current.take());
                // Try again after a pause, with the formats we know.
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                current = start(&camera, audio_caps.as_ref(), &fanout);
            }
            event = subscription.recv() => match event {
                None => break,
                Some(MediaEvent::Info(info)) => {
                    if info.audio != audio_caps {
                        audio_caps = info.audio.clone();
                        current = start(&camera, audio_caps.as_ref(), &fanout);
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
    tracing::debug!(camera = camera.name(), dropped, "Opus transcoder stopped");
    // Subscribers see the end of their stream.
    fanout.subscribers.lock().unwrap().clear();
}

fn start(
    camera: &CameraHandle,
    caps: Option<&gst::Caps>,
    fanout: &Arc<Fanout>,
) -> Option<Transcoder> {
    let caps = caps?;
    match Transcoder::new(camera.name(), caps, fanout.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(camera = camera.name(), "no Opus audio for WebRTC: {e}");
            None
        }
    }
}

/// One transcoding pipeline: appsrc → decoder → resample → opusenc → appsink.
struct Transcoder {
    _pipeline: OwnedPipeline,
    src: gst_app::AppSrc,
    first: bool,
    /// Resolves with the pipeline's first error.
    errors: std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>,
}

impl Transcoder {
    fn new(camera: &str, caps: &gst::Caps, fanout: Arc<Fanout>) -> Result<Self, LiveError> {
        let decoders: &[&str] = match AudioCodec::of(caps) {
            Some(AudioCodec::Aac) => &["aacparse", "avdec_aac"],
            Some(AudioCodec::Pcma) => &["alawdec"],
            Some(AudioCodec::Pcmu) => &["mulawdec"],
            Some(AudioCodec::Opus) => &["opusparse", "opusdec"],
            None => {
                return Err(LiveError::Unsupported(format!(
                    "the camera's audio ({caps}) cannot be transcoded to Opus"
                )));
            }
        };
        let pipeline = OwnedPipeline::new(&format!("{camera}-opus"), "Opus transcoder");
        let src = feed::appsrc(&format!("{camera}-opus-src"), caps);
        pipeline
            .get()
            .add(&src)
            .map_err(|e| pipeline.error(e.to_string()))?;
        let mut chain = vec![src.clone().upcast::<gst::Element>()];
        for (i, factory) in decoders.iter().enumerate() {
            chain.push(pipeline.add(factory, &format!("{camera}-opus-dec{i}"))?);
        }
        chain.push(pipeline.add("audioconvert", &format!("{camera}-opus-convert"))?);
        chain.push(pipeline.add("audioresample", &format!("{camera}-opus-resample"))?);
        let raw = pipeline.add("capsfilter", &format!("{camera}-opus-raw"))?;
        raw.set_property(
            "caps",
            gst::Caps::builder("audio/x-raw")
                .field("rate", 48_000i32)
                .field("channels", 1i32)
                .build(),
        );
        chain.push(raw);
        let encoder = pipeline.add("opusenc", &format!("{camera}-opus-enc"))?;
        encoder.set_property("bitrate", OPUS_BITRATE);
        chain.push(encoder);
        let sink = gst_app::AppSink::builder()
            .name(format!("{camera}-opus-sink"))
            .sync(false)
            .build();
        pipeline
            .get()
            .add(&sink)
            .map_err(|e| pipeline.error(e.to_string()))?;
        chain.push(sink.clone().upcast());
        pipeline.link(&chain.iter().collect::<Vec<_>>())?;
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
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
