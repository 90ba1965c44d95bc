//! The panel in Home Assistant's sidebar: the page and its assets (embedded in the binary), the
//! JSON endpoints it polls — every camera's state now, one camera's timeline, the night's cry
//! episodes — and each cry's onset picture (kept by [`crate::cry_pictures`]). The episodes'
//! clips are played from `api/clips/<path>`.
//!
//! Every URL the page uses is relative, so it works under the ingress prefix
//! (`/api/hassio_ingress/<token>/`). Nothing here is loaded from the internet, and nothing here
//! sees a camera's credentials: statuses are redacted where they are made.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::WebState;
use crate::audio::CryReading;
use crate::camera::{CameraHandle, CameraStatus, ConsumerKind};
use crate::clips::ClipsStatus;
use crate::cry_pictures;
use crate::mqtt::MqttStatus;

/// The longest timeline the panel may ask for (the detector keeps 24 h).
const MAX_HISTORY_HOURS: u64 = 24;

/// The page, its assets and its JSON endpoints.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/api/panel/state", get(state))
        .route("/api/panel/history", get(history))
        .route("/api/panel/episodes", get(episodes))
        .route("/api/panel/cry-pictures/{camera}/{file}", get(cry_picture))
        .route("/api/clips/{*path}", get(clip))
}

const INDEX_HTML: &str = include_str!("ui/index.html");

/// The files under `assets/`: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/app.js"),
    ),
    (
        "episodes.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/episodes.js"),
    ),
    (
        "player.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/player.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("ui/style.css"),
    ),
    ("icon.png", "image/png", include_bytes!("../../icon.png")),
];

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // The binary's version is the assets' version; a new release reloads them.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no asset named '{file}'\n")).into_response(),
    }
}

/// Everything the panel shows, for all cameras.
#[derive(Debug, Serialize)]
pub struct PanelState {
    pub version: &'static str,
    pub mqtt: MqttView,
    pub cameras: Vec<CameraView>,
}

/// The Home Assistant link in a word, with the detail for a tooltip.
#[derive(Debug, Serialize)]
pub struct MqttView {
    /// `starting`, `off`, `connecting`, `connected` or `stopped`.
    pub state: &'static str,
    pub detail: Option<String>,
}

/// One camera as the panel shows it.
#[derive(Debug, Serialize)]
pub struct CameraView {
    pub name: String,
    pub status: CameraStatus,
    /// Live viewers (RTSP, WebRTC, MSE and MP4), not snapshots.
    pub viewers: usize,
    /// The camera's sub stream (`sub_url`), when it has one.
    pub sub: Option<SubStreamView>,
    pub detection: DetectionView,
    /// The detector's latest reading; `None` while it has heard nothing from this camera.
    pub cry: Option<CryReading>,
    /// What the camera's cry clips are doing, and why none can be written if so.
    pub clips: Option<ClipsStatus>,
}

/// A camera's sub stream: its name (the player's `src`), health and viewers.
#[derive(Debug, Serialize)]
pub struct SubStreamView {
    pub name: String,
    pub status: CameraStatus,
    pub viewers: usize,
}

#[derive(Debug, Serialize)]
pub struct DetectionView {
    /// Switched on (in the options or from Home Assistant).
    pub enabled: bool,
    /// The model is loaded (false when the model or ONNX Runtime is missing).
    pub available: bool,
    pub cry_threshold: f32,
}

async fn state(State(web): State<WebState>) -> axum::Json<PanelState> {
    let cameras = web.cameras.iter().map(|c| camera_view(&web, c)).collect();
    axum::Json(PanelState {
        version: env!("CARGO_PKG_VERSION"),
        mqtt: mqtt_view(&web.mqtt.borrow()),
        cameras,
    })
}

/// Live viewers of one stream (RTSP, WebRTC, MSE and MP4), not snapshots.
fn viewers(stream: &CameraHandle) -> usize {
    stream
        .consumers()
        .iter()
        .filter(|k| {
            !matches!(
                k,
                ConsumerKind::Snapshot | ConsumerKind::Transcoder | ConsumerKind::Recorder
            )
        })
        .count()
}

fn camera_view(web: &WebState, camera: &CameraHandle) -> CameraView {
    let settings = web.settings.camera(camera.name());
    CameraView {
        name: camera.name().to_string(),
        status: camera.status(),
        viewers: viewers(camera),
        sub: camera.sub().map(|sub| SubStreamView {
            name: sub.name().to_string(),
            status: sub.status(),
            viewers: viewers(sub),
        }),
        detection: DetectionView {
            enabled: settings.is_some_and(|s| s.detection),
            available: web.detection.is_some(),
            cry_threshold: settings.map_or(0.0, |s| s.cry_threshold),
        },
        cry: web
            .detection
            .as_ref()
            .and_then(|d| d.reading(camera.name()))
            .filter(|r| r.at != SystemTime::UNIX_EPOCH),
        clips: web.clips.status(camera.name()),
    }
}

fn mqtt_view(status: &MqttStatus) -> MqttView {
    match status {
        MqttStatus::Starting => MqttView {
            state: "starting",
            detail: None,
        },
        MqttStatus::Off { reason } => MqttView {
            state: "off",
            detail: Some(reason.clone()),
        },
        MqttStatus::Connecting {
            broker,
            attempts,
            last_error,
        } => MqttView {
            state: "connecting",
            detail: Some(match last_error {
                Some(e) => format!("{broker}: attempt {attempts}, {e}"),
                None => broker.clone(),
            }),
        },
        MqttStatus::Connected { broker } => MqttView {
            state: "connected",
            detail: Some(broker.clone()),
        },
        MqttStatus::Stopped => MqttView {
            state: "stopped",
            detail: None,
        },
    }
}

/// The night's cry episodes, newest first.
#[derive(Debug, Serialize)]
pub struct EpisodesView {
    pub episodes: Vec<EpisodeView>,
}

/// One cry episode as the panel lists it.
#[derive(Debug, Serialize)]
pub struct EpisodeView {
    pub camera: String,
    pub started_ms: u64,
    /// `None` while the cry goes on.
    pub ended_ms: Option<u64>,
    pub peak_score: f32,
    /// The episode's clips, in order.
    pub clips: Vec<ClipView>,
    /// The onset's picture, relative to the panel, while it is kept (the newest 20 per camera).
    pub picture: Option<String>,
}

/// One clip of an episode.
#[derive(Debug, Serialize)]
pub struct ClipView {
    /// Relative to the clips folder; played from `api/clips/<path>`.
    pub path: String,
    /// Finished and served; a clip still being written (or deleted since) is not.
    pub ready: bool,
}

#[derive(Debug, Deserialize)]
struct EpisodesQuery {
    /// One camera, or every camera when absent.
    camera: Option<String>,
    hours: Option<u64>,
}

fn no_camera(web: &WebState, camera: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!(
            "no camera named '{camera}'; cameras: {}\n",
            web.cameras.names().join(", ")
        ),
    )
        .into_response()
}

async fn episodes(State(web): State<WebState>, Query(q): Query<EpisodesQuery>) -> Response {
    let cameras = match q.camera {
        Some(camera) if web.cameras.get(&camera).is_none() => return no_camera(&web, &camera),
        Some(camera) => vec![camera],
        None => web.cameras.names(),
    };
    let hours = q.hours.unwrap_or(12).clamp(1, MAX_HISTORY_HOURS);
    let since = SystemTime::now() - Duration::from_secs(hours * 3600);
    let Some(detection) = web.detection.clone() else {
        return axum::Json(EpisodesView {
            episodes: Vec::new(),
        })
        .into_response();
    };
    let pictures_dir = web.cry_pictures.clone();
    let clips_root = web.clips.root().to_path_buf();
    // Listing the pictures and looking at the clips read the disk: off the async threads.
    let listed = tokio::task::spawn_blocking(move || {
        let mut episodes = Vec::new();
        for camera in cameras {
            let Some(records) = detection.episodes(&camera, since) else {
                continue;
            };
            let pictures: HashSet<u64> = cry_pictures::kept_onsets(&pictures_dir, &camera)
                .into_iter()
                .collect();
            episodes.extend(records.into_iter().map(|e| {
                EpisodeView {
                    picture: pictures
                        .contains(&e.started_ms)
                        .then(|| format!("api/panel/cry-pictures/{camera}/{}.jpg", e.started_ms)),
                    camera: camera.clone(),
                    started_ms: e.started_ms,
                    ended_ms: e.ended_ms,
                    peak_score: e.peak_score,
                    clips: e
                        .clips
                        .into_iter()
                        .map(|path| ClipView {
                            ready: crate::clips::paths::served_file(&clips_root, &path)
                                .is_some_and(|file| file.is_file()),
                            path,
                        })
                        .collect(),
                }
            }));
        }
        episodes.sort_by_key(|e| std::cmp::Reverse(e.started_ms));
        episodes
    })
    .await;
    match listed {
        Ok(episodes) => axum::Json(EpisodesView { episodes }).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot list the episodes: {e}\n"),
        )
            .into_response(),
    }
}

/// `cry-pictures/<camera>/<onset ms>.jpg`: a kept picture of a cry's onset.
async fn cry_picture(
    State(web): State<WebState>,
    Path((camera, file)): Path<(String, String)>,
) -> Response {
    if web.cameras.get(&camera).is_none() {
        return no_camera(&web, &camera);
    }
    let Some(started_ms) = file
        .strip_suffix(".jpg")
        .and_then(|ms| ms.parse::<u64>().ok())
    else {
        return (
            StatusCode::NOT_FOUND,
            format!("'{file}' is not a cry picture's name (<unix ms>.jpg)\n"),
        )
            .into_response();
    };
    let path = cry_pictures::picture_path(&web.cry_pictures, &camera, started_ms);
    match tokio::fs::read(&path).await {
        Ok(jpeg) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                // A picture never changes under its name.
                (header::CACHE_CONTROL, "max-age=86400, immutable"),
            ],
            jpeg,
        )
            .into_response(),
        Err(_) => (
            StatusCode::NOT_FOUND,
            format!(
                "no picture of {camera}'s cry at {started_ms} (only the newest {} are kept)\n",
                cry_pictures::KEPT_PER_CAMERA
            ),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    camera: String,
    hours: Option<u64>,
}

async fn history(State(web): State<WebState>, Query(q): Query<HistoryQuery>) -> Response {
    if web.cameras.get(&q.camera).is_none() {
        return no_camera(&web, &q.camera);
    }
    let hours = q.hours.unwrap_or(12).clamp(1, MAX_HISTORY_HOURS);
    let since = SystemTime::now() - Duration::from_secs(hours * 3600);
    let history = web
        .detection
        .as_ref()
        .and_then(|d| d.history(&q.camera, since))
        .unwrap_or_default();
    axum::Json(history).into_response()
}

/// A finished cry clip, read-only, with Range requests (a phone seeks and plays while it
/// downloads): `GET /api/clips/nursery/2026-12-04/03-12-45.mp4`, paths as episodes list them.
/// Nothing outside the clips folder, and no clip still being written.
async fn clip(
    State(web): State<WebState>,
    Path(path): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, format!("no clip '{path}'\n")).into_response();
    let Some(file) = crate::clips::paths::served_file(web.clips.root(), &path) else {
        return not_found();
    };
    if !tokio::fs::metadata(&file).await.is_ok_and(|m| m.is_file()) {
        return not_found();
    }
    match tower_http::services::ServeFile::new(&file)
        .try_call(request)
        .await
    {
        Ok(response) => response.map(axum::body::Body::new).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the clip '{path}': {e}\n"),
        )
            .into_response(),
    }
}
