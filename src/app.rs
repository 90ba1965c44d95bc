//! Wiring: starts every part from the validated options and stops them in order.
//!
//! Each part gets a child of the root [`CancellationToken`] and runs on the [`TaskTracker`]; a stop
//! cancels the root and waits for the tracker, so every pipeline reaches `Null` before exit.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio::sync::watch;

use crate::camera::{self, CameraHandle, CameraStatus, Cameras, Hub, hub::HubLimits};
use crate::config::CameraSource;
use crate::config::Config;
use crate::live::{Live, LiveOptions};
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

    let live = Live::new(
        LiveOptions {
            ice_servers: config.webrtc_ice_servers.clone(),
        },
        shutdown.child_token(),
    );
    let state = web::WebState {
        cameras: cameras.clone(),
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
    tracker.close();
    tracker.wait().await;
    Ok(())
}
