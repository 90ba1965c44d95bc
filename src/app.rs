//! Wiring: starts every part from the validated options and stops them in order.
//!
//! Each part gets a child of the root [`CancellationToken`] and runs on the [`TaskTracker`]; a stop
//! cancels the root and waits for the tracker, so every pipeline reaches `Null` before exit.
//! The order of a stop: the servers stop accepting (panel, restream and its clients), then the
//! cameras stop.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::camera::restream::{self, Restream};
use crate::camera::{self, Cameras, IngestOptions};
use crate::config::{CameraSource, Config};
use crate::web;

/// Runs until `shutdown` is cancelled, then stops every part and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    gst::init().context("cannot initialise GStreamer")?;
    let tracker = TaskTracker::new();

    // Bind every port first, so a port in use stops the start with a clear error.
    let web_listener = web::bind("web_port", config.web_port).await?;
    restream::check_port(config.rtsp_port)?;

    if config.uses_demo_camera() {
        tracing::info!(
            "no camera configured: starting the built-in demo camera '{}' (test pattern with a \
             clock, and a tone); add cameras to the options to watch your own",
            camera::demo::DEMO_CAMERA_NAME
        );
    }
    let options = IngestOptions {
        latency: config.camera_latency,
        stall_timeout: config.stall_timeout,
    };
    // Not a child of `shutdown`: cameras stop after the servers stopped accepting.
    let cameras_stop = CancellationToken::new();
    let mut handles = Vec::new();
    for camera in config.cameras_to_run() {
        if let CameraSource::Rtsp(url) = &camera.source {
            tracing::info!(camera = %camera.name, %url, "camera configured");
        }
        let spawned = camera::spawn(&camera, options, &tracker, cameras_stop.child_token());
        // Cry detection takes `spawned.pcm` here once it lands; until then the decoded audio
        // is dropped (and counted) at the camera.
        handles.push(spawned.handle);
    }
    let cameras = Cameras::new(handles);

    let state = web::WebState {
        cameras: cameras.clone(),
    };
    let router = web::panel_router(state, config.web_allow.clone());
    let token = shutdown.child_token();
    tracker.spawn(async move {
        if let Err(e) = web::serve(web_listener, router, token).await {
            tracing::error!("panel server stopped: {e:#}");
        }
    });
    tracing::info!(port = config.web_port, "panel listening");

    let restream = match Restream::start(
        config.rtsp_port,
        config.rtsp_auth.as_ref(),
        &cameras,
        tokio::runtime::Handle::current(),
    ) {
        Ok(restream) => restream,
        Err(e) => {
            shutdown.cancel();
            cameras_stop.cancel();
            tracker.close();
            tracker.wait().await;
            return Err(e);
        }
    };
    tracing::info!(
        port = config.rtsp_port,
        "restream listening: {}",
        cameras
            .iter()
            .map(|c| format!(
                "rtsp://<host>:{}{}",
                config.rtsp_port,
                restream::mount_path(c)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    shutdown.cancelled().await;
    // Stop accepting (the panel stops on its own token), close the restream's clients, then
    // stop the cameras.
    let _ = tokio::task::spawn_blocking(move || restream.stop()).await;
    cameras_stop.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}
