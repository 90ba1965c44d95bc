//! Wiring: starts every part from the validated options and stops them in order.
//!
//! Each part gets a child of the root [`CancellationToken`] and runs on the [`TaskTracker`]; a stop
//! cancels the root and waits for the tracker, so every pipeline reaches `Null` before exit.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::camera;
use crate::config::Config;
use crate::settings::Settings;
use crate::{audio, web};

/// Runs until `shutdown` is cancelled, then stops every part and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    gst::init().context("cannot initialise GStreamer")?;
    let tracker = TaskTracker::new();

    // Bind every port first, so a port in use stops the start with a clear error.
    let web_listener = web::bind("web_port", config.web_port).await?;
    tracing::info!(port = config.web_port, "panel listening");
    let token = shutdown.child_token();
    let router = web::panel_router(config.web_allow.clone());
    tracker.spawn(async move {
        if let Err(e) = web::serve(web_listener, router, token).await {
            tracing::error!("panel server stopped: {e:#}");
        }
    });

    // --- Cry detection (src/audio) ----------------------------------------------------------
    // Started before the cameras, so each camera's audio branch can be handed to it with
    // `detection.add_camera(name, pcm_receiver)`. A missing or wrong model or ONNX Runtime
    // turns detection off with one clear error; streaming goes on without it.
    let settings = Settings::load(&config, &config.data_dir);
    let detection = match audio::Detection::start(&config, settings.clone(), shutdown.child_token())
    {
        Ok(detection) => Some(detection),
        Err(e) => {
            tracing::error!("cry detection is off: {e}");
            None
        }
    };
    // --- end of cry detection ----------------------------------------------------------------

    if config.uses_demo_camera() {
        tracing::info!(
            "no camera configured: starting the built-in demo camera '{}' (test pattern with a \
             clock, and a tone); add cameras to the options to watch your own",
            camera::demo::DEMO_CAMERA_NAME
        );
        let token = shutdown.child_token();
        tracker.spawn(async move {
            if let Err(e) = camera::demo::run(token).await {
                tracing::error!(camera = camera::demo::DEMO_CAMERA_NAME, "{e:#}");
            }
        });
    } else {
        for camera in &config.cameras {
            tracing::info!(camera = %camera.name, url = %camera.source, "camera configured");
        }
    }

    shutdown.cancelled().await;
    tracker.close();
    tracker.wait().await;
    if let Some(detection) = &detection {
        // Its camera tasks end with the cameras; this waits for the history to be saved.
        detection.stopped().await;
    }
    Ok(())
}
