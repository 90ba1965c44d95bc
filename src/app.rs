//! Wiring: starts every part from the validated options and stops them in order.
//!
//! Each part gets a child of the root [`CancellationToken`] and runs on the [`TaskTracker`]; a stop
//! cancels the root and waits for the tracker, so every pipeline reaches `Null` before exit.

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audio::CryReading;
use crate::camera;
use crate::config::{CameraSource, Config};
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
    tracing::info!(port = config.web_port, "panel listening");
    let token = shutdown.child_token();
    let router = web::panel_router(config.web_allow.clone());
    tracker.spawn(async move {
        if let Err(e) = web::serve(web_listener, router, token).await {
            tracing::error!("panel server stopped: {e:#}");
        }
    });

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

    // --- MQTT: Home Assistant's entities. Until the camera actors and the detector are wired
    // in, each camera's feed is a channel held here: the demo camera says online and not
    // crying, a configured camera offline.
    let settings = Settings::load(&config, &config.data_dir);
    let mut feed_senders = Vec::new();
    let feeds = config
        .cameras_to_run()
        .into_iter()
        .map(|camera| {
            let (online_tx, online) = watch::channel(camera.source == CameraSource::Demo);
            let (cry_tx, cry) = watch::channel(CryReading::default());
            feed_senders.push((online_tx, cry_tx));
            CameraFeed {
                name: camera.name,
                online,
                cry,
            }
        })
        .collect();
    let _mqtt_status = mqtt::start(
        MqttSetup::new(&config, feeds, settings, Supervisor::from_env()),
        &tracker,
        shutdown.child_token(),
    );
    // --- end of MQTT

    shutdown.cancelled().await;
    drop(feed_senders);
    tracker.close();
    tracker.wait().await;
    Ok(())
}
