//! Camera entities in Home Assistant with no URL to copy: one Generic Camera config entry per
//! camera (`homeassistant_cameras`, on by default), created, kept in sync and removed through
//! Home Assistant's config-flow API via the Supervisor. Its stream source is Vigil's restream
//! and its still image Vigil's snapshot, both on the host's loopback, where Home Assistant
//! core (on the host's network, like this add-on) reaches them; Home Assistant's own WebRTC
//! then plays it in dashboards and the companion app.
//!
//! Owns the record of the entries it made (`homeassistant-cameras.json` under the data
//! directory). [`plan`] decides (pure); this module calls Home Assistant and retries with
//! backoff while Home Assistant is starting or a camera is offline (the flow opens the stream).
//! It never touches an entry the user edited, and never runs without a Supervisor.

mod core_api;
pub mod plan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use sha2::Digest;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Credentials};
use crate::secret::Redactor;
use crate::supervisor::Supervisor;
pub use core_api::CameraSettings;
use core_api::{CoreApi, CoreSocket};
use plan::{Action, Record, Records, entry_title};

/// The record of Vigil's entries, under the data directory.
pub const RECORDS_FILE: &str = "homeassistant-cameras.json";

/// How Home Assistant core reaches the add-on: both run on the host's network.
const HOST_FOR_CORE: &str = "127.0.0.1";

/// First and longest wait before trying again (Home Assistant starting, a camera offline).
const FIRST_RETRY: Duration = Duration::from_secs(5);
const LONGEST_RETRY: Duration = Duration::from_secs(300);
/// How long the first round waits for every camera to stream.
const CAMERAS_ONLINE: Duration = Duration::from_secs(20);

/// Everything the camera entries need.
pub struct HaCamerasSetup {
    pub enabled: bool,
    pub supervisor: Option<Supervisor>,
    pub data_dir: PathBuf,
    /// Each camera's name, the settings its entry gets, and whether it is streaming now.
    pub cameras: Vec<(String, CameraSettings, watch::Receiver<bool>)>,
}

impl HaCamerasSetup {
    /// The setup for `config`'s cameras, each with its online state.
    pub fn new(
        config: &Config,
        supervisor: Option<Supervisor>,
        online: Vec<(String, watch::Receiver<bool>)>,
    ) -> Self {
        let cameras = online
            .into_iter()
            .map(|(name, online)| {
                let settings = camera_settings(
                    &name,
                    config.rtsp_port,
                    config.rtsp_auth.as_ref(),
                    config.api_port,
                    config.api_auth.as_ref(),
                );
                (name, settings, online)
            })
            .collect();
        Self {
            enabled: config.homeassistant_cameras && !config.uses_demo_camera(),
            supervisor,
            data_dir: config.data_dir.clone(),
            cameras,
        }
    }
}

/// What the Generic Camera flow gets for `camera`: the restream over TCP as the stream, the
/// snapshot as the still image, with the restream's and the API's credentials.
pub fn camera_settings(
    camera: &str,
    rtsp_port: u16,
    rtsp_auth: Option<&Credentials>,
    api_port: u16,
    api_auth: Option<&Credentials>,
) -> CameraSettings {
    let mut stream = format!("rtsp://{HOST_FOR_CORE}:{rtsp_port}/{camera}");
    if let (Some(auth), Ok(mut url)) = (rtsp_auth, url::Url::parse(&stream)) {
        let _ = url.set_username(&auth.username);
        let _ = url.set_password(Some(auth.password.expose()));
        stream = url.to_string();
    }
    let mut settings = json!({
        "still_image_url": format!("http://{HOST_FOR_CORE}:{api_port}/api/frame.jpeg?src={camera}"),
        "stream_source": stream,
        "rtsp_transport": "tcp",
        "authentication": "basic",
        "framerate": 2,
        "verify_ssl": false,
    });
    if let Some(auth) = api_auth {
        settings["username"] = json!(auth.username);
        settings["password"] = json!(auth.password.expose());
    }
    CameraSettings(settings)
}

/// A digest of `settings`, to notice a change of port or password without keeping either.
fn fingerprint(settings: &CameraSettings) -> String {
    let digest = sha2::Sha256::digest(settings.0.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts keeping the entries in sync; without a Supervisor (standalone) it does nothing.
pub fn start(setup: HaCamerasSetup, tracker: &TaskTracker, shutdown: CancellationToken) {
    let Some(supervisor) = setup.supervisor.clone() else {
        return;
    };
    if !setup.enabled && load_records(&setup.data_dir).is_empty() {
        return;
    }
    let api = CoreApi::new(supervisor);
    tracker.spawn(async move {
        // Home Assistant's flow opens each camera's stream: give them a moment to connect.
        let all_online = futures::future::join_all(setup.cameras.iter().map(|(_, _, online)| {
            let mut online = online.clone();
            async move { online.wait_for(|online| *online).await.is_ok() }
        }));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::timeout(CAMERAS_ONLINE, all_online) => {}
        }
        let mut wait = FIRST_RETRY;
        loop {
            let pending = tokio::select! {
                _ = shutdown.cancelled() => return,
                pending = sync(&api, &setup) => pending,
            };
            match pending {
                Ok(0) => {
                    tracing::info!("Home Assistant camera entries in sync");
                    return;
                }
                Ok(n) => tracing::info!(
                    "{n} Home Assistant camera entr{} still to make; trying again in {}s",
                    if n == 1 { "y" } else { "ies" },
                    wait.as_secs()
                ),
                Err(e) => tracing::warn!(
                    "cannot sync the camera entries with Home Assistant: {}; trying again in {}s",
                    redactor(&setup).redact(&e),
                    wait.as_secs()
                ),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(LONGEST_RETRY);
        }
    });
}

/// One round: lists the entries, plans, acts. Returns how many actions must wait (a camera
/// offline, a flow that failed); an error when Home Assistant cannot be reached at all.
async fn sync(api: &CoreApi, setup: &HaCamerasSetup) -> Result<usize, String> {
    let entries = api.generic_entries().await?;
    let mut records = load_records(&setup.data_dir);
    let wanted: BTreeMap<String, String> = if setup.enabled {
        setup
            .cameras
            .iter()
            .map(|(name, settings, _)| (name.clone(), fingerprint(settings)))
            .collect()
    } else {
        BTreeMap::new()
    };
    let mut pending = 0;
    for action in plan::plan(&wanted, &records, &entries) {
        if let Err(e) = act(api, setup, &mut records, action).await {
            tracing::warn!("{}", redactor(setup).redact(&e));
            pending += 1;
        }
        if let Err(e) = save_records(&setup.data_dir, &records) {
            tracing::warn!("cannot save {RECORDS_FILE}: {e}");
        }
    }
    Ok(pending)
}

async fn act(
    api: &CoreApi,
    setup: &HaCamerasSetup,
    records: &mut Records,
    action: Action,
) -> Result<(), String> {
    match action {
        Action::Create { camera } => {
            let settings = wanted_settings(setup, &camera)?;
            let entry_id = api
                .create_generic(settings)
                .await
                .map_err(|e| format!("camera '{camera}' not added to Home Assistant: {e}"))?;
            let modified_at = match name_entry(api, &entry_id, &camera, true).await {
                Ok(modified_at) => modified_at,
                Err(e) => {
                    // Unnamed, it could not be told from the user's: take it back, try again.
                    let _ = api.delete_entry(&entry_id).await;
                    return Err(e);
                }
            };
            tracing::info!(camera, entry_id, "camera entity added to Home Assistant");
            records.insert(camera, record(entry_id, modified_at, settings));
        }
        Action::Update { camera, entry_id } => {
            let settings = wanted_settings(setup, &camera)?;
            api.update_generic(&entry_id, settings)
                .await
                .map_err(|e| format!("camera '{camera}' not updated in Home Assistant: {e}"))?;
            match name_entry(api, &entry_id, &camera, false).await {
                Ok(modified_at) => {
                    tracing::info!(camera, entry_id, "camera entry updated in Home Assistant");
                    records.insert(camera, record(entry_id, modified_at, settings));
                }
                Err(e) => {
                    // The update moved `modified_at`: remember the entry as it is now, with
                    // no fingerprint, so that the next round updates it again instead of
                    // taking it for the user's.
                    let now = api.generic_entries().await?;
                    if let Some(entry) = now.iter().find(|e| e.entry_id == entry_id) {
                        let mut record = record(entry_id, entry.modified_at, settings);
                        record.fingerprint = None;
                        records.insert(camera, record);
                    }
                    return Err(e);
                }
            }
        }
        Action::Delete { camera, entry_id } => {
            api.delete_entry(&entry_id)
                .await
                .map_err(|e| format!("camera '{camera}' not removed from Home Assistant: {e}"))?;
            tracing::info!(
                camera,
                entry_id,
                "camera entity removed from Home Assistant"
            );
            records.remove(&camera);
        }
        Action::Release { camera, entry_id } => {
            tracing::info!(
                camera,
                entry_id,
                "the camera's entry was edited in Home Assistant: Vigil leaves it alone"
            );
            if let Some(record) = records.get_mut(&camera) {
                record.released = true;
            }
        }
        Action::Forget { camera } => {
            tracing::info!(camera, "the camera's entry was deleted in Home Assistant");
            records.remove(&camera);
        }
    }
    Ok(())
}

/// Hides the passwords the entries carry, in case Home Assistant quotes one back.
fn redactor(setup: &HaCamerasSetup) -> Redactor {
    let mut redactor = Redactor::new();
    for (_, settings, _) in &setup.cameras {
        if let Some(password) = settings.0["password"].as_str() {
            redactor.add(password);
        }
        if let Some(stream) = settings.0["stream_source"].as_str() {
            redactor.add_url(stream);
        }
    }
    redactor
}

/// The settings of a camera that is streaming now (Home Assistant's flow opens the stream).
fn wanted_settings<'a>(
    setup: &'a HaCamerasSetup,
    camera: &str,
) -> Result<&'a CameraSettings, String> {
    let (_, settings, online) = setup
        .cameras
        .iter()
        .find(|(name, _, _)| name == camera)
        .ok_or_else(|| format!("no camera '{camera}'"))?;
    if !*online.borrow() {
        return Err(format!(
            "camera '{camera}' is offline: its Home Assistant entity is added once it streams"
        ));
    }
    Ok(settings)
}

fn record(entry_id: String, modified_at: f64, settings: &CameraSettings) -> Record {
    Record {
        entry_id,
        modified_at,
        fingerprint: Some(fingerprint(settings)),
        released: false,
    }
}

/// Gives entry `entry_id` Vigil's title and, when `new`, its entity the id `camera.<camera>`
/// (Home Assistant names a new Generic Camera after the URL's host), then reloads it so the
/// entity's name follows the title. Returns the entry's `modified_at` after the change.
async fn name_entry(api: &CoreApi, entry_id: &str, camera: &str, new: bool) -> Result<f64, String> {
    let mut socket = api.socket().await?;
    let result = name_entry_on(&mut socket, api, entry_id, camera, new).await;
    socket.close().await;
    result.map_err(|e| format!("camera '{camera}': {e}"))
}

async fn name_entry_on(
    socket: &mut CoreSocket,
    api: &CoreApi,
    entry_id: &str,
    camera: &str,
    new: bool,
) -> Result<f64, String> {
    let updated = socket
        .command(json!({"type": "config_entries/update", "entry_id": entry_id, "title": entry_title(camera)}))
        .await?;
    let modified_at = updated["config_entry"]["modified_at"]
        .as_f64()
        .ok_or_else(|| format!("config_entries/update answered without modified_at: {updated}"))?;
    if new {
        let wanted = format!("camera.{camera}");
        match entity_of(socket, entry_id).await? {
            Some(entity) if entity != wanted => {
                let renamed = socket
                    .command(json!({"type": "config/entity_registry/update", "entity_id": entity, "new_entity_id": wanted}))
                    .await;
                if let Err(e) = renamed {
                    tracing::warn!(camera, "the camera entity keeps the id {entity}: {e}");
                }
            }
            Some(_) => {}
            None => tracing::warn!(camera, "Home Assistant made no entity for entry {entry_id}"),
        }
    }
    api.reload_entry(entry_id).await?;
    Ok(modified_at)
}

/// The entity of entry `entry_id`, waiting a moment for Home Assistant to register it.
async fn entity_of(socket: &mut CoreSocket, entry_id: &str) -> Result<Option<String>, String> {
    for _ in 0..50 {
        let entities = socket
            .command(json!({"type": "config/entity_registry/list"}))
            .await?;
        let found = entities.as_array().and_then(|list| {
            list.iter()
                .find(|e| e["config_entry_id"] == entry_id)
                .and_then(|e| e["entity_id"].as_str().map(str::to_string))
        });
        if found.is_some() {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

/// The records of the last run; none when missing or unreadable (then titles tell).
pub fn load_records(data_dir: &Path) -> Records {
    crate::state_file::load_json(&data_dir.join(RECORDS_FILE))
}

fn save_records(data_dir: &Path, records: &Records) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(records).map_err(std::io::Error::other)?;
    crate::state_file::write(&data_dir.join(RECORDS_FILE), text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn settings_point_home_assistant_at_the_restream_and_the_snapshot() {
        let login = |user: &str, password: &str| Credentials {
            username: user.into(),
            password: Secret::new(password),
        };
        let open = camera_settings("nursery", 8554, None, 1984, None);
        assert_eq!(open.0["stream_source"], "rtsp://127.0.0.1:8554/nursery");
        assert_eq!(
            open.0["still_image_url"],
            "http://127.0.0.1:1984/api/frame.jpeg?src=nursery"
        );
        assert_eq!(open.0["rtsp_transport"], "tcp");
        assert!(open.0.get("username").is_none());
        let closed = camera_settings(
            "nursery",
            8554,
            Some(&login("viewer", "p@ss word")),
            1984,
            Some(&login("ha", "api-pw")),
        );
        assert_eq!(
            closed.0["stream_source"],
            "rtsp://viewer:p%40ss%20word@127.0.0.1:8554/nursery"
        );
        assert_eq!(closed.0["username"], "ha");
        assert_ne!(fingerprint(&open), fingerprint(&closed));
        assert_eq!(
            fingerprint(&open),
            fingerprint(&camera_settings("nursery", 8554, None, 1984, None))
        );
    }
}
