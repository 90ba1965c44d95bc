//! Live view: the pipelines that turn a camera's frames into what a viewer plays — WebRTC
//! ([`webrtc`]), fragmented MP4 for MSE and `stream.mp4` ([`mp4`]), JPEG snapshots
//! ([`snapshot`]) — and the shared audio transcoders for cameras whose audio a browser cannot
//! play as it is ([`transcode`]).
//!
//! Every viewer owns its pipeline, fed from its camera's hub through appsrc by [`feed`] (a
//! WebRTC viewer by the hub itself, on the camera's thread); video is never re-encoded (only
//! snapshots decode one keyframe). A viewer that falls behind is dropped, never the camera. This module speaks no HTTP and knows no stream aliases:
//! `web/` resolves a request to a [`CameraHandle`] and carries the bytes and messages.

pub mod feed;
pub mod mp4;
pub mod pipeline;
pub mod snapshot;
pub mod transcode;
pub mod webrtc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::camera::{CameraHandle, ConsumerKind, MediaEvent, StreamInfo, Subscription};
use crate::config::IceServer;

/// Live viewers (WebRTC, MSE, `stream.mp4`) one camera may have at once. A constant, not an
/// option: a baby monitor has a handful of viewers, and each WebRTC viewer costs a pipeline.
pub const MAX_VIEWERS_PER_CAMERA: usize = 16;

/// How long a new viewer waits for a camera that is still connecting.
pub const WAIT_FOR_CAMERA: Duration = Duration::from_secs(5);

/// Why a viewer could not start or had to stop. `web/` maps each to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("camera '{camera}' has no picture yet ({why}); try again in a moment")]
    NoPicture { camera: String, why: String },
    #[error(
        "camera '{camera}' already has {max} live viewers, the most Vigil serves per camera; \
         close one first"
    )]
    TooManyViewers { camera: String, max: usize },
    #[error("the WebRTC offer is not usable: {0}")]
    BadOffer(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the {what} pipeline failed: {detail}")]
    Pipeline { what: &'static str, detail: String },
    #[error("Vigil is stopping")]
    ShuttingDown,
}

/// Settings every viewer shares.
#[derive(Debug, Clone, Default)]
pub struct LiveOptions {
    /// STUN/TURN servers from the options, offered to every WebRTC viewer.
    pub ice_servers: Vec<IceServer>,
}

/// The live-view service: cheap to clone, one per process.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

struct Inner {
    options: LiveOptions,
    transcoders: transcode::Transcoders,
    snapshots: snapshot::Snapshots,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Cancelled when Vigil stops: every viewer ends.
    token: CancellationToken,
    /// Every viewer task, so that a stop waits for their pipelines to reach `Null`.
    tracker: TaskTracker,
}

impl Live {
    pub fn new(options: LiveOptions, token: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                options,
                transcoders: transcode::Transcoders::default(),
                snapshots: snapshot::Snapshots::default(),
                slots: Mutex::new(HashMap::new()),
                token,
                tracker: TaskTracker::new(),
            }),
        }
    }

    pub fn options(&self) -> &LiveOptions {
        &self.inner.options
    }

    /// Cancelled when Vigil stops.
    pub fn token(&self) -> &CancellationToken {
        &self.inner.token
    }

    pub fn transcoders(&self) -> &transcode::Transcoders {
        &self.inner.transcoders
    }

    /// Subscribes to `camera`'s shared transcoder for `target`, starting it if needed.
    pub fn transcoded(
        &self,
        camera: &CameraHandle,
        target: transcode::Target,
    ) -> transcode::TranscodedAudio {
        self.inner
            .transcoders
            .subscribe(camera, target, &self.inner.token, |task| self.spawn(task))
    }

    pub fn snapshots(&self) -> &snapshot::Snapshots {
        &self.inner.snapshots
    }

    /// Runs `task` as part of the live service: a stop waits for it.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tracker.spawn(task);
    }

    /// Waits until every viewer task has ended (call after the token is cancelled).
    pub async fn wait_stopped(&self) {
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    /// Takes one of the camera's viewer slots; the viewer holds it for its life.
    pub fn viewer_slot(&self, camera: &CameraHandle) -> Result<ViewerSlot, LiveError> {
        if self.inner.token.is_cancelled() {
            return Err(LiveError::ShuttingDown);
        }
        let semaphore = self
            .inner
            .slots
            .lock()
            .unwrap()
            .entry(camera.name().to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_VIEWERS_PER_CAMERA)))
            .clone();
        semaphore
            .try_acquire_owned()
            .map(ViewerSlot)
            .map_err(|_| LiveError::TooManyViewers {
                camera: camera.name().to_string(),
                max: MAX_VIEWERS_PER_CAMERA,
            })
    }
}

/// Loads the GStreamer plugins viewers use and makes the DTLS certificate every WebRTC viewer
/// shares, so that the first viewer after a start does not wait for them (the certificate's
/// RSA key alone takes a noticeable part of a second on a small machine). Blocking: call it on a
/// blocking thread.
pub fn prewarm() {
    let started = std::time::Instant::now();
    for factory in [
        "webrtcbin",
        "dtlsdec",
        "dtlsenc",
        "srtpenc",
        "nicesink",
        "rtph264pay",
        "rtpopuspay",
        "opusenc",
        "avenc_aac",
        "mp4mux",
        "h264parse",
        "avdec_h264",
        "jpegenc",
    ] {
        if gst::ElementFactory::make(factory).build().is_err() {
            tracing::warn!("GStreamer element '{factory}' is missing: live view will fail");
        }
    }
    tracing::debug!(
        took_ms = started.elapsed().as_millis() as u64,
        "live view prewarmed"
    );
}

/// A held viewer slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ViewerSlot(#[allow(dead_code)] OwnedSemaphorePermit);

/// Subscribes to `camera` and waits (up to [`WAIT_FOR_CAMERA`]) for its formats, which every
/// pipeline needs before it can be built. The subscription continues with the cached GOP.
pub async fn subscribe_with_info(
    camera: &CameraHandle,
    kind: ConsumerKind,
) -> Result<(Subscription, Arc<StreamInfo>), LiveError> {
    let mut subscription = camera.subscribe(kind);
    let no_picture = |why: &str| LiveError::NoPicture {
        camera: camera.name().to_string(),
        why: why.to_string(),
    };
    let first = tokio::time::timeout(WAIT_FOR_CAMERA, subscription.recv())
        .await
        .map_err(|_| no_picture("the camera is still connecting or offline"))?;
    match first {
        Some(MediaEvent::Info(info)) if info.video.is_some() => Ok((subscription, info)),
        Some(MediaEvent::Info(_)) => Err(no_picture("the camera sends no video")),
        Some(MediaEvent::Frame(_)) => Err(no_picture("frames came before their formats")),
        None => Err(no_picture("the camera stopped")),
    }
}

/// The video codec of a stream, as viewers need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
}

impl VideoCodec {
    /// The codec of `caps` (`video/x-h264` or `video/x-h265`).
    pub fn of(caps: &gst::Caps) -> Option<VideoCodec> {
        match caps.structure(0)?.name().as_str() {
            "video/x-h264" => Some(VideoCodec::H264),
            "video/x-h265" => Some(VideoCodec::H265),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            VideoCodec::H264 => "H.264",
            VideoCodec::H265 => "H.265",
        }
    }
}

/// The audio codec a camera sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    Aac,
    Opus,
    Pcma,
    Pcmu,
}

impl AudioCodec {
    pub fn of(caps: &gst::Caps) -> Option<AudioCodec> {
        let s = caps.structure(0)?;
        match s.name().as_str() {
            "audio/mpeg" if s.get::<i32>("mpegversion").ok() != Some(1) => Some(AudioCodec::Aac),
            "audio/x-opus" => Some(AudioCodec::Opus),
            "audio/x-alaw" => Some(AudioCodec::Pcma),
            "audio/x-mulaw" => Some(AudioCodec::Pcmu),
            _ => None,
        }
    }
}
