//! Wiring: starts every part from the validated options and stops them in order.
//!
//! Each part gets a child of the root [`CancellationToken`] and runs on the [`TaskTracker`]; a stop
//! cancels the root and waits for the tracker, so every pipeline reaches `Null` before exit.

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audio::{self, CryReading};
use crate::camera::{self, CameraHandle, CameraState, CameraStatus, Cameras, Hub, hub::HubLimits};
use crate::config::{CameraSource, Config};
use crate::live::{Live, LiveOptions};
use crate::mqtt::{self, CameraFeed, MqttSetup};
use crate::settings::Settings;
use crate::supervisor::Supervisor;
use crate::web;

/// Runs until `shutdown` is cancelled, then stops every part and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    gst::init().context("cannot initialise GStreamer")?;
    let tracker = TaskTracker::new();

    // Bind every port first, so a port in use stops the start with a clear error.
    let web_listener = web::bind("web_port", config.web_port).await?;
    let api_listener = web::bind("api_port", config.api_port).await?;

    let mut handles = Vec::new();
    for camera in config.cameras_to_run() {
        let hub = Hub::new(HubLimits::default());
        let (status_tx, status_rx) = watch::channel(CameraStatus::default());
        handles.push(CameraHandle::new(&camera.name, hub.clone(), status_rx));
        match &camera.source {
            CameraSource::Demo => {
                tracing::info!(
                    "no camera configured: starting the built-in demo camera '{}' (test pattern \
                     with a clock, and a tone); add cameras to the options to watch your own",
                    camera.name
                );
                let token = shutdown.child_token();
                tracker.spawn(async move {
                    if let Err(e) = camera::demo::run(hub, status_tx, token).await {
                        tracing::error!(camera = camera::demo::DEMO_CAMERA_NAME, "{e:#}");
                    }
                });
            }
            CameraSource::Rtsp(url) => {
                tracing::info!(camera = %camera.name, %url, "camera configured");
            }
        }
    }
    let cameras = Cameras::new(handles);

    // --- Cry detection: a missing or wrong model or ONNX Runtime turns it off with one clear
    // error; streaming goes on without it. One Settings instance is shared with MQTT, whose
    // switch and number change what the detector reads.
    let settings = Settings::load(&config, &config.data_dir);
    let detection = match audio::Detection::start(&config, settings.clone(), shutdown.child_token())
    {
        Ok(detection) => Some(detection),
        Err(e) => {
            tracing::error!("cry detection is off: {e}");
            None
        }
    };

    // --- MQTT: Home Assistant's entities. Each camera's online state follows its status;
    // until a camera's audio reaches the detector, its cry reading is a channel held here.
    let mut cry_senders = Vec::new();
    let feeds = cameras
        .iter()
        .map(|handle| {
            let (cry_tx, cry) = watch::channel(CryReading::default());
            cry_senders.push(cry_tx);
            CameraFeed {
                name: handle.name().to_string(),
                online: online_of(handle.watch_status(), &tracker, shutdown.child_token()),
                cry,
            }
        })
        .collect();
    let mqtt_status = mqtt::start(
        MqttSetup::new(&config, feeds, settings.clone(), Supervisor::from_env()),
        &tracker,
        shutdown.child_token(),
    );

    // --- Live view (WebRTC, MSE, snapshots) on both HTTP servers.
    tracker.spawn_blocking(crate::live::prewarm);
    let live = Live::new(
        LiveOptions {
            ice_servers: config.webrtc_ice_servers.clone(),
        },
        shutdown.child_token(),
    );
    let state = web::WebState {
        cameras: cameras.clone(),
        detection: detection.clone(),
        settings: settings.clone(),
        mqtt: mqtt_status,
        live: live.clone(),
        names: web::StreamNames::default(),
        rtsp_port: config.rtsp_port,
    };
    let panel = web::panel_router(state.clone(), config.web_allow.clone());
    let api = web::api_router(state, config.api_auth.clone());
    for (what, listener, router) in [("panel", web_listener, panel), ("API", api_listener, api)] {
        let token = shutdown.child_token();
        tracker.spawn(async move {
            if let Err(e) = web::serve(listener, router, token).await {
                tracing::error!("{what} server stopped: {e:#}");
            }
        });
    }
    tracker.spawn(async move {
        live.token().cancelled().await;
        live.wait_stopped().await;
    });
    tracing::info!(port = config.web_port, "panel listening");
    tracing::info!(
        port = config.api_port,
        auth = config.api_auth.is_some(),
        "go2rtc-compatible API listening"
    );

    shutdown.cancelled().await;
    drop(cry_senders);
    tracker.close();
    tracker.wait().await;
    if let Some(detection) = &detection {
        // Its camera tasks end with the cameras; this waits for the history to be saved.
        detection.stopped().await;
    }
    Ok(())
}

/// A camera's status as "online or not", for MQTT's connectivity sensor.
fn online_of(
    mut status: watch::Receiver<CameraStatus>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> watch::Receiver<bool> {
    let is_online = |s: &CameraStatus| s.state == CameraState::Online;
    let (online_tx, online) = watch::channel(is_online(&status.borrow()));
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = status.changed() => {
                    if changed.is_err() {
                        // The camera's task ended: it is not streaming.
                        online_tx.send_replace(false);
                        return;
                    }
                    online_tx.send_if_modified(|online| {
                        let now = is_online(&status.borrow_and_update());
                        std::mem::replace(online, now) != now
                    });
                }
            }
        }
    });
    online
}
