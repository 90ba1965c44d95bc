//! Cameras: one actor per camera owns its GStreamer pipeline and its state; the rest of Vigil
//! sees a camera only through a [`CameraHandle`].
//!
//! A handle gives the camera's status and lets a consumer subscribe to its frames through the
//! [`hub::Hub`] (GOP cache first, then live). Only this module sees a camera's credentials;
//! everything it shows is redacted.
//!
//! [`spawn`] starts a camera: the demo source or an RTSP [`actor::CameraActor`] (ingest,
//! backoff, watchdog), and the decoded audio for the detector.

pub mod actor;
pub mod backoff;
pub mod demo;
pub mod describe;
pub mod failure;
pub mod hub;
pub mod ingest;
pub mod pcm;
pub mod restream;
pub mod sink;
pub mod unify;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audio::PcmChunk;
use crate::config::{CameraConfig, CameraSource};
pub use ingest::IngestOptions;

pub use hub::{
    ConsumerClock, ConsumerKind, Frame, Hub, MediaEvent, StreamInfo, Subscription, Track,
};

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
        }
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

/// Every running camera, by name. Cheap to clone; fixed for the life of the process.
#[derive(Clone, Default, Debug)]
pub struct Cameras {
    by_name: Arc<BTreeMap<String, CameraHandle>>,
}

impl Cameras {
    pub fn new(handles: impl IntoIterator<Item = CameraHandle>) -> Self {
        Self {
            by_name: Arc::new(
                handles
                    .into_iter()
                    .map(|h| (h.name().to_string(), h))
                    .collect(),
            ),
        }
    }

    pub fn get(&self, name: &str) -> Option<&CameraHandle> {
        self.by_name.get(name)
    }

    /// All cameras, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &CameraHandle> {
        self.by_name.values()
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
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

/// Starts `camera` on `tracker` until `shutdown`: its hub, status and actor.
pub fn spawn(
    camera: &CameraConfig,
    options: IngestOptions,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> SpawnedCamera {
    let hub = Hub::new(hub::HubLimits::default());
    let (status_tx, status_rx) = watch::channel(CameraStatus::default());
    // The audio branch runs whatever the `detection` option says: Home Assistant's switch can
    // turn listening on at run time, and decoding a camera's audio costs little.
    let (pcm_output, pcm) = pcm::PcmOutput::channel();
    let source = match &camera.source {
        CameraSource::Rtsp(url) => url.redacted(),
        CameraSource::Demo => "demo".to_string(),
    };
    let handle = CameraHandle::new(&camera.name, hub.clone(), status_rx).with_source(&source);
    match &camera.source {
        CameraSource::Demo => {
            tracker.spawn(async move {
                if let Err(e) =
                    demo::run(hub, status_tx, pcm_output, options.unify_audio, shutdown).await
                {
                    tracing::error!(camera = demo::DEMO_CAMERA_NAME, "{e:#}");
                }
            });
        }
        CameraSource::Rtsp(url) => {
            let actor = actor::CameraActor::new(
                &camera.name,
                url.clone(),
                options,
                hub,
                status_tx,
                pcm_output,
            );
            tracker.spawn(actor.run(shutdown));
        }
    }
    SpawnedCamera { handle, pcm }
}
