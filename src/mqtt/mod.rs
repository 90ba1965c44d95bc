//! Home Assistant over MQTT: one device per camera through MQTT discovery (crying, cry score,
//! sound level, camera online, a detection switch, a sensitivity number, the last cry's
//! picture, a cry event entity and the cries and crying time of the last 12 h), availability
//! with a last will, and commands from Home Assistant written into [`Settings`].
//!
//! Owns the broker connection: the broker comes from the `mqtt` options or the Supervisor; no
//! broker at all is a state ([`MqttStatus::Off`]), logged once, and Vigil runs on. Never touches
//! a camera: feeds are watch channels, so a camera never waits on MQTT, and what waits for a
//! broker is one latest payload per topic, never a growing queue.
//!
//! - [`discovery`]: topics and config payloads (pure).
//! - [`broker`]: which broker, rumqttc's options, failures in words.
//! - `link`: the event loop and reconnects; `session`: the publishing loop; `states`,
//!   [`rate`], `outbox`: what is sent and how often; `cleanup`: removed cameras.

pub mod broker;
mod cleanup;
pub mod discovery;
mod link;
mod outbox;
pub mod rate;
mod session;
mod states;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use cleanup::ANNOUNCED_FILE;
pub use link::Backoff;
pub use states::{LEVEL_FLOOR_DBFS, Rates};

use crate::audio::{CryReading, Detection};
use crate::config::{CameraSource, Config, MqttOptions};
use crate::cry_pictures::LatestPicture;
use crate::settings::Settings;
use crate::supervisor::{Supervisor, SupervisorError};
use broker::Broker;

/// What one camera tells MQTT: whether its stream is up, and what the detector hears.
#[derive(Debug, Clone)]
pub struct CameraFeed {
    /// The camera's name from the options.
    pub name: String,
    pub online: watch::Receiver<bool>,
    pub cry: watch::Receiver<CryReading>,
    /// The picture of the last cry, for the "last cry" image entity.
    pub last_cry: LatestPicture,
}

/// The MQTT part's state, for the panel and the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MqttStatus {
    /// Looking for a broker (asking the Supervisor).
    Starting,
    /// No broker: Home Assistant does not see the cameras. `reason` says why and what to do.
    Off {
        reason: String,
    },
    /// Connecting, or reconnecting after `attempts` failures.
    Connecting {
        broker: String,
        attempts: u32,
        last_error: Option<String>,
    },
    Connected {
        broker: String,
    },
    /// Vigil is stopping.
    Stopped,
}

/// Everything the MQTT part needs.
pub struct MqttSetup {
    pub options: MqttOptions,
    /// Asked for the broker when `options` names none (inside Home Assistant).
    pub supervisor: Option<Supervisor>,
    pub cameras: Vec<CameraFeed>,
    /// The device model shown per camera ("RTSP camera", "Demo camera").
    pub models: HashMap<String, String>,
    pub settings: Settings,
    /// Where the announced cameras are remembered.
    pub data_dir: PathBuf,
    pub backoff: Backoff,
    pub rates: Rates,
    /// How often the Supervisor is asked again while it has no broker.
    pub recheck: Duration,
    /// Cry events and the history behind the cry event entity and the "last 12 h" sensors;
    /// `None` without detection (the sensors are unknown, the event never fires).
    pub detection: Option<Detection>,
}

impl MqttSetup {
    /// The setup for `config`'s cameras, with the default timings.
    pub fn new(
        config: &Config,
        cameras: Vec<CameraFeed>,
        settings: Settings,
        supervisor: Option<Supervisor>,
    ) -> Self {
        let models = config
            .cameras_to_run()
            .into_iter()
            .map(|c| {
                let model = match &c.source {
                    CameraSource::Demo => "Demo camera".to_string(),
                    CameraSource::Url(url) => format!("{} camera", url.protocol().label()),
                };
                (c.name, model)
            })
            .collect();
        Self {
            options: config.mqtt.clone(),
            supervisor,
            cameras,
            models,
            settings,
            data_dir: config.data_dir.clone(),
            backoff: Backoff::default(),
            rates: Rates::default(),
            recheck: Duration::from_secs(60),
            detection: None,
        }
    }
}

/// Starts the MQTT part on `tracker`; it stops (publishing `offline` first) on `shutdown`.
pub fn start(
    setup: MqttSetup,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> watch::Receiver<MqttStatus> {
    let (status, status_rx) = watch::channel(MqttStatus::Starting);
    let status = Arc::new(status);
    tracker.spawn(async move {
        if let Some(broker) = find_broker(&setup, &status, &shutdown).await {
            let panel_url = panel_url(setup.supervisor.as_ref()).await;
            session::run(setup, broker, panel_url, status.clone(), shutdown.clone()).await;
        }
        if shutdown.is_cancelled() {
            status.send_replace(MqttStatus::Stopped);
        }
    });
    status_rx
}

/// The broker from the options, else from the Supervisor (asking again while it has none);
/// `None` when there is no broker to be had or on shutdown.
async fn find_broker(
    setup: &MqttSetup,
    status: &watch::Sender<MqttStatus>,
    shutdown: &CancellationToken,
) -> Option<Broker> {
    if let Some(broker) = Broker::from_options(&setup.options) {
        tracing::info!("MQTT broker from the options: {}", broker.address());
        return Some(broker);
    }
    let Some(supervisor) = &setup.supervisor else {
        let reason = "MQTT is off: no mqtt.host in the options and no Home Assistant Supervisor \
                      to ask (not running as an add-on), so Home Assistant will not see the \
                      cameras; set mqtt.host to use a broker"
            .to_string();
        tracing::info!("{reason}");
        status.send_replace(MqttStatus::Off { reason });
        return None;
    };
    let mut said: Option<String> = None;
    let mut failures = 0;
    loop {
        let wait = match supervisor.mqtt_service().await {
            Ok(service) => {
                let broker = Broker::from_service(service.clone());
                tracing::info!(
                    "MQTT broker from the Supervisor: {} (provided by {})",
                    broker.address(),
                    service.provider.as_deref().unwrap_or("an add-on")
                );
                return Some(broker);
            }
            Err(e @ (SupervisorError::BadToken { .. } | SupervisorError::NoAccess(_))) => {
                let reason = format!("MQTT is off: {e}");
                tracing::error!("{reason}");
                status.send_replace(MqttStatus::Off { reason });
                return None;
            }
            Err(e @ SupervisorError::Unreachable { .. }) => {
                failures += 1;
                let wait = setup
                    .backoff
                    .delay(broker::FailureKind::Unreachable, failures);
                let line = format!("{e}; asking again in {:.1} s", wait.as_secs_f32());
                if failures == 1 {
                    tracing::warn!("{line}");
                } else {
                    tracing::debug!("{line}");
                }
                wait
            }
            Err(e) => {
                let reason = format!("MQTT is off: {e}");
                if said.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(
                        "{reason}. Vigil runs on without Home Assistant entities and asks again \
                         every {} s",
                        setup.recheck.as_secs()
                    );
                    said = Some(reason.clone());
                }
                status.send_replace(MqttStatus::Off { reason });
                setup.recheck
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// The panel inside Home Assistant, for the device page's "Visit" link. Only the Supervisor
/// knows the add-on's full slug; standalone there is no URL that would work everywhere.
async fn panel_url(supervisor: Option<&Supervisor>) -> Option<String> {
    match supervisor?.self_slug().await {
        Ok(slug) => Some(format!("homeassistant://hassio/ingress/{slug}")),
        Err(e) => {
            tracing::debug!("no panel link on the devices: {e}");
            None
        }
    }
}
