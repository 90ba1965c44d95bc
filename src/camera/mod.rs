//! Cameras: one actor per camera owns its GStreamer pipeline and its state; the rest of Vigil
//! sees a camera only through a [`CameraHandle`].
//!
//! A handle gives the camera's status and lets a consumer subscribe to its frames through the
//! [`hub::Hub`] (GOP cache first, then live). Only this module sees a camera's credentials;
//! everything it shows is redacted.
//!
//! [`spawn`] starts a camera: the demo source or a [`actor::CameraActor`] (ingest over RTSP,
//! HTTP-FLV or RTMP, backoff, watchdog), and the decoded audio for the detector. A camera with a `sub_url` has a
//! second actor and hub for its sub stream (`<camera>_sub`), pulled once like the main one;
//! [`Cameras`] finds either by name.

pub mod access_units;
pub mod actor;
pub mod backoff;
pub mod demo;
pub mod describe;
pub mod failure;
pub mod flv;
pub mod flv_check;
pub mod hub;
pub mod ingest;
pub mod nal;
pub mod pcm;
pub mod restream;
pub mod rtsp;
pub mod sink;
pub mod tracks;
pub mod unify;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audio::PcmChunk;
use crate::config::{CameraConfig, CameraSource, CameraUrl};
pub use ingest::IngestOptions;

pub use hub::{
    ConsumerClock, ConsumerKind, DirectConsumer, DirectSubscription, Frame, Hub, MediaEvent,
    Offered, StreamInfo, Subscription, Track,
};

/// Makes a `factory` element named `name` for a camera pipeline, with an error that names the
/// missing plugin.
pub(crate) fn make_element(factory: &str, name: String) -> anyhow::Result<gst::Element> {
    use anyhow::Context;
    gst::ElementFactory::make(factory)
        .name(name)
        .build()
        .with_context(|| format!("cannot create {factory} (is its GStreamer plugin installed?)"))
}

/// Where a camera's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraState {
    /// Connecting (at start, or retrying after a failure).
    Connecting,
    /// Frames are arriving.
    Online,
    /// The last attempt failed; `reason` says why, and a retry is scheduled.
    Offline,
}

/// The video track as the camera sends it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VideoStatus {
    /// `H.264` or `H.265`.
    pub codec: String,
    pub profile: Option<String>,
    pub width: u32,
    pub height: u32,
    pub fps: f32,
}

/// The audio track as the camera sends it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AudioStatus {
    /// `AAC`, `PCMA`, `PCMU` or `Opus`.
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u32,
    /// The codec Vigil restreams it as, when not the camera's own (`unify_audio`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restreamed_as: Option<String>,
}

/// What the camera actor reports about its camera. Every text in it is redacted.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CameraStatus {
    pub state: CameraState,
    /// Why the camera is offline (or the last error while connecting), redacted.
    pub reason: Option<String>,
    /// When `state` last changed.
    #[serde(with = "crate::audio::unix_millis")]
    pub since: SystemTime,
    pub video: Option<VideoStatus>,
    /// `None` for a camera without audio (cry detection is then off for it).
    pub audio: Option<AudioStatus>,
    /// Received bitrate over the last few seconds, in kbit/s.
    pub bitrate_kbps: u32,
    /// How many times the stream was lost and reconnected since start.
    pub reconnects: u64,
}

impl Default for CameraStatus {
    fn default() -> Self {
        Self {
            state: CameraState::Connecting,
            reason: None,
            since: SystemTime::now(),
            video: None,
            audio: None,
            bitrate_kbps: 0,
            reconnects: 0,
        }
    }
}

/// The rest of Vigil's view of one camera. Cheap to clone.
#[derive(Clone)]
pub struct CameraHandle {
    name: Arc<str>,
    /// Where the stream comes from, redacted (`rtsp://admin:***@…`, or `demo`).
    source: Arc<str>,
    hub: Arc<Hub>,
    status: watch::Receiver<CameraStatus>,
    /// The camera's sub stream, its own stream named `<camera>_sub`.
    sub: Option<Arc<CameraHandle>>,
}

impl std::fmt::Debug for CameraHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraHandle")
            .field("name", &self.name)
            .finish()
    }
}

impl CameraHandle {
    pub fn new(name: &str, hub: Arc<Hub>, status: watch::Receiver<CameraStatus>) -> Self {
        Self {
            name: name.into(),
            source: "".into(),
            hub,
            status,
            sub: None,
        }
    }

    /// The same handle with `sub` as its sub stream.
    pub fn with_sub(mut self, sub: CameraHandle) -> Self {
        self.sub = Some(Arc::new(sub));
        self
    }

    /// The camera's sub stream (`<camera>_sub`), when it has one.
    pub fn sub(&self) -> Option<&CameraHandle> {
        self.sub.as_deref()
    }

    /// The same handle, showing `source` (already redacted) as where the stream comes from.
    pub fn with_source(mut self, source: &str) -> Self {
        self.source = source.into();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the stream comes from, redacted: the camera's URL with `***` for its password.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every consumer with what it received, for the API.
    pub fn consumer_infos(&self) -> Vec<hub::ConsumerInfo> {
        self.hub.consumer_infos()
    }

    /// The camera's status now.
    pub fn status(&self) -> CameraStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<CameraStatus> {
        self.status.clone()
    }

    /// Starts a consumer at the cached keyframe (see [`Hub::subscribe`]).
    pub fn subscribe(&self, kind: ConsumerKind) -> Subscription {
        self.hub.subscribe(kind)
    }

    /// Starts a consumer the hub calls on the camera's thread (see [`DirectConsumer`]).
    pub fn subscribe_direct(
        &self,
        kind: ConsumerKind,
        consumer: Box<dyn DirectConsumer>,
    ) -> DirectSubscription {
        self.hub.subscribe_direct(kind, consumer)
    }

    /// The formats of the current session, once known.
    pub fn stream_info(&self) -> Option<Arc<StreamInfo>> {
        self.hub.info()
    }

    /// The last keyframe (decodable on its own) and its formats, for snapshots.
    pub fn last_keyframe(&self) -> Option<(Arc<StreamInfo>, Frame)> {
        self.hub.last_keyframe()
    }

    /// How many consumers of each kind are connected.
    pub fn consumers(&self) -> Vec<ConsumerKind> {
        self.hub.consumers()
    }
}

/// Every running camera, by name, and every stream (a camera's main stream has its name, its
/// sub stream `<camera>_sub`). Cheap to clone; fixed for the life of the process.
#[derive(Clone, Default, Debug)]
pub struct Cameras {
    by_name: Arc<BTreeMap<String, CameraHandle>>,
    streams: Arc<BTreeMap<String, CameraHandle>>,
}

impl Cameras {
    pub fn new(handles: impl IntoIterator<Item = CameraHandle>) -> Self {
        let by_name: BTreeMap<String, CameraHandle> = handles
            .into_iter()
            .map(|h| (h.name().to_string(), h))
            .collect();
        let streams = by_name
            .values()
            .flat_map(|camera| std::iter::once(camera).chain(camera.sub()))
            .map(|h| (h.name().to_string(), h.clone()))
            .collect();
        Self {
            by_name: Arc::new(by_name),
            streams: Arc::new(streams),
        }
    }

    /// The stream named `name`: a camera (its main stream) or a camera's sub stream.
    pub fn get(&self, name: &str) -> Option<&CameraHandle> {
        self.streams.get(name)
    }

    /// All cameras (their main streams, each with its sub stream), sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &CameraHandle> {
        self.by_name.values()
    }

    /// Every stream, main and sub, sorted by name: what the restream and `/api/streams` serve.
    pub fn streams(&self) -> impl Iterator<Item = &CameraHandle> {
        self.streams.values()
    }

    /// Every stream's name.
    pub fn names(&self) -> Vec<String> {
        self.streams.keys().cloned().collect()
    }
}

/// A camera started by [`spawn`].
pub struct SpawnedCamera {
    pub handle: CameraHandle,
    /// The camera's audio decoded for cry detection (mono 16 kHz f32), whether detection is on
    /// or off (the detector skips inference while it is off). A camera without audio sends
    /// nothing here (its status says `audio: None`); chunks the receiver has no room for are
    /// dropped and counted, never waited for.
    pub pcm: mpsc::Receiver<PcmChunk>,
}

/// Starts `camera` on `tracker` until `shutdown`: its hub, status and actor, and those of its
/// sub stream when it has one.
pub fn spawn(
    camera: &CameraConfig,
    options: IngestOptions,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> SpawnedCamera {
    // The audio branch runs whatever the `detection` option says: Home Assistant's switch can
    // turn listening on at run time, and decoding a camera's audio costs little.
    let (pcm_output, pcm) = pcm::PcmOutput::channel();
    let mut handle = match &camera.source {
        CameraSource::Demo => {
            let (hub, status_tx, handle) = new_stream(&camera.name, "demo");
            let unify_audio = options.unify_audio;
            tracker.spawn(async move {
                if let Err(e) =
                    demo::run(hub, status_tx, pcm_output.clone(), unify_audio, shutdown).await
                {
                    tracing::error!(camera = demo::DEMO_CAMERA_NAME, "{e:#}");
                }
            });
            return SpawnedCamera { handle, pcm };
        }
        CameraSource::Url(url) => spawn_actor(
            &camera.name,
            url,
            options,
            pcm_output.clone(),
            tracker,
            shutdown.clone(),
        ),
    };
    if let Some(sub_url) = &camera.sub_source {
        // Its audio reaches the same detector, heard while the main stream sends none.
        let sub = spawn_actor(
            &camera.sub_name(),
            sub_url,
            options,
            pcm_output.for_sub_stream(),
            tracker,
            shutdown,
        );
        handle = handle.with_sub(sub);
    }
    SpawnedCamera { handle, pcm }
}

/// A stream's hub, status channel and handle.
fn new_stream(name: &str, source: &str) -> (Arc<Hub>, watch::Sender<CameraStatus>, CameraHandle) {
    let hub = Hub::new(hub::HubLimits::default());
    let (status_tx, status_rx) = watch::channel(CameraStatus::default());
    let handle = CameraHandle::new(name, hub.clone(), status_rx).with_source(source);
    (hub, status_tx, handle)
}

/// Starts the actor of one camera stream named `name`.
fn spawn_actor(
    name: &str,
    url: &CameraUrl,
    options: IngestOptions,
    pcm: pcm::PcmOutput,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> CameraHandle {
    let (hub, status_tx, handle) = new_stream(name, &url.redacted());
    let actor = actor::CameraActor::new(name, url.clone(), options, hub, status_tx, pcm);
    tracker.spawn(actor.run(shutdown));
    handle
}
