//! Wiring: starts every part from the validated options and stops them in order.
//!
//! Each part gets a child of the root [`CancellationToken`] and runs on the [`TaskTracker`]; a stop
//! cancels the root and waits for the tracker, so every pipeline reaches `Null` before exit.
//! The order of a stop: the servers stop accepting (panel, API, restream and its clients), MQTT
//! says offline, then the cameras stop, and the detector saves the night's history.

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audio::{self, CryReading};
use crate::camera::restream::{self, Restream};
use crate::camera::{self, CameraState, CameraStatus, Cameras, IngestOptions};
use crate::clips::Clips;
use crate::config::{CameraSource, Config};
use crate::cry_pictures::CryPictures;
use crate::homeassistant::{self, HaCamerasSetup};
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
    let api_listeners = web::bind_api(config.api_exposure(), config.api_port).await?;
    let lan_listener = web::bind_lan(config.lan_port).await?;
    restream::check_port(config.rtsp_port)?;

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

    // --- Cameras. Not children of `shutdown`: they stop after the servers stopped accepting.
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
        unify_audio: config.unify_audio,
    };
    let cameras_stop = CancellationToken::new();
    let mut handles = Vec::new();
    let mut cry_readings = Vec::new();
    for camera in config.cameras_to_run() {
        if let CameraSource::Url(url) = &camera.source {
            match &camera.sub_source {
                Some(sub_url) => {
                    tracing::info!(camera = %camera.name, %url, %sub_url, "camera configured")
                }
                None => tracing::info!(camera = %camera.name, %url, "camera configured"),
            }
        }
        let spawned = camera::spawn(&camera, options, &tracker, cameras_stop.child_token());
        // The camera's decoded audio goes to the detector; without one (no model), its
        // reading stays "not crying" (and a camera without audio sends nothing).
        let reading = match &detection {
            Some(detection) => detection.add_camera(&camera.name, spawned.pcm),
            None => watch::channel(CryReading::default()).1,
        };
        cry_readings.push((spawned.handle.clone(), reading));
        handles.push(spawned.handle);
    }
    let cameras = Cameras::new(handles);

    // --- MQTT: Home Assistant's entities. Each camera's online state follows its status.
    let cry_pictures = CryPictures::new(&config.data_dir, &cameras.names());
    // Paired in the options' order as they were spawned (`Cameras` sorts by name).
    let feeds: Vec<CameraFeed> = cry_readings
        .into_iter()
        .map(|(handle, cry)| CameraFeed {
            name: handle.name().to_string(),
            online: online_of(handle.watch_status(), &tracker, cameras_stop.child_token()),
            cry,
            last_cry: cry_pictures.latest(handle.name()),
        })
        .collect();
    let online: Vec<_> = feeds
        .iter()
        .map(|feed| (feed.name.clone(), feed.online.clone()))
        .collect();
    let mut mqtt_setup = MqttSetup::new(&config, feeds, settings.clone(), Supervisor::from_env());
    mqtt_setup.detection = detection.clone();
    let mqtt_status = mqtt::start(mqtt_setup, &tracker, shutdown.child_token());

    // --- Cry clips: a recorder per camera, listed in the episodes and served by the panel.
    let main_streams: Vec<_> = cameras.iter().cloned().collect();
    let camera_names: Vec<String> = main_streams.iter().map(|c| c.name().to_string()).collect();
    let clips = Clips::new(&config.clips, config.clips_dir(), &camera_names);
    clips
        .start(
            detection.as_ref(),
            &main_streams,
            &tracker,
            shutdown.child_token(),
        )
        .await;

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
        cry_pictures: cry_pictures.dir().to_path_buf(),
        clips: clips.clone(),
    };
    let panel = web::panel_router(state.clone(), config.web_allow.clone());
    let api = web::api_router(
        state.clone(),
        web::ApiAuth {
            credentials: config.api_auth.clone(),
            options: "api_username and api_password",
        },
        web::api_peers(config.api_exposure()),
    );
    let mut servers = vec![("panel", web_listener, panel)];
    servers.extend(api_listeners.into_iter().map(|l| ("API", l, api.clone())));
    if let Some(listener) = lan_listener {
        let lan = web::api_router(
            state,
            web::ApiAuth {
                credentials: config.lan_auth.clone(),
                options: "lan_username and lan_password",
            },
            Vec::new(),
        );
        servers.push(("LAN", listener, lan));
    }
    for (what, listener, router) in servers {
        let token = shutdown.child_token();
        tracker.spawn(async move {
            if let Err(e) = web::serve(listener, router, token).await {
                tracing::error!("{what} server stopped: {e:#}");
            }
        });
    }
    // --- A picture at each cry onset, for MQTT's "last cry" image.
    if let Some(detection) = &detection {
        tracker.spawn(cry_pictures.run(
            detection.events(),
            cameras.clone(),
            live.clone(),
            shutdown.child_token(),
        ));
    }
    tracker.spawn(async move {
        live.token().cancelled().await;
        live.wait_stopped().await;
    });
    tracing::info!(port = config.web_port, "panel listening");
    tracing::info!(
        port = config.api_port,
        auth = config.api_auth.is_some(),
        exposure = ?config.api_exposure(),
        "go2rtc-compatible API listening"
    );
    if let Some(port) = config.lan_port {
        tracing::info!(
            port,
            auth = config.lan_auth.is_some(),
            "LAN port listening for players: http://<host>:{port}/api/stream.mp4?src=<camera>"
        );
    }

    // --- The RTSP restream.
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
            .streams()
            .map(|c| format!(
                "rtsp://<host>:{}{}",
                config.rtsp_port,
                restream::mount_path(c)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // --- Camera entities in Home Assistant, once the restream and the API are up (Home
    // Assistant's flow opens both).
    homeassistant::start(
        HaCamerasSetup::new(&config, Supervisor::from_env(), online),
        &tracker,
        shutdown.child_token(),
    );

    shutdown.cancelled().await;
    // The HTTP servers and MQTT stop on their own tokens; close the restream's clients, then
    // stop the cameras.
    let _ = tokio::task::spawn_blocking(move || restream.stop()).await;
    cameras_stop.cancel();
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
