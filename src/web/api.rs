//! The go2rtc-compatible HTTP endpoints: `/api`, `/api/streams`, `/api/frame.jpeg`,
//! `/api/stream.mp4` and `POST /api/webrtc`. Each parses its query, resolves `src` to a camera
//! and hands the work to [`crate::live`]; errors are a status and a sentence.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ws::{SessionDescription, ice_servers_of};
use super::{ApiError, WebState};
use crate::camera::ConsumerKind;
use crate::live::mp4::{self, PlayerCodecs};
use crate::live::snapshot::SnapshotSize;
use crate::live::webrtc::{self, Offer};

/// The go2rtc version Vigil answers as: Home Assistant requires 1.9.13 ≤ version < 2.0.0.
pub const GO2RTC_VERSION: &str = "1.9.14";

/// The query's `key=value` pairs, decoded, in order (a key may repeat, like `src`).
pub(super) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The required `src` parameter.
pub(super) fn src_of(pairs: &[(String, String)]) -> Result<&str, ApiError> {
    first(pairs, "src")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("add ?src=<camera> (the camera's name)"))
}

fn side(pairs: &[(String, String)], key: &str) -> Result<Option<u32>, ApiError> {
    match first(pairs, key) {
        None | Some("") => Ok(None),
        Some(text) => text.parse::<u32>().map(Some).map_err(|_| {
            ApiError::bad_request(format!("{key}={text} is not a whole number of pixels"))
        }),
    }
}

/// `GET /api`: what go2rtc's clients check first.
pub async fn info(State(state): State<WebState>, headers: HeaderMap) -> impl IntoResponse {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    axum::Json(serde_json::json!({
        "version": GO2RTC_VERSION,
        "vigil_version": env!("CARGO_PKG_VERSION"),
        "config_path": "",
        "host": host,
        "rtsp": { "listen": format!(":{}", state.rtsp_port), "default_query": "video&audio" },
    }))
}

/// `PUT /api/streams?name=&src=[&src=…]`: Home Assistant registers a camera entity.
pub async fn put_stream(
    State(state): State<WebState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query.as_deref());
    let name = first(&pairs, "name").unwrap_or_default();
    let sources: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "src")
        .map(|(_, v)| v.clone())
        .collect();
    let camera = state
        .names
        .register(name, &sources, &state.cameras, state.rtsp_port)
        .map_err(ApiError::bad_request)?;
    tracing::info!(name, camera, "stream name registered");
    Ok(axum::Json(serde_json::json!({ "name": name, "camera": camera })).into_response())
}

/// `GET /api/frame.jpeg?src=[&width=][&height=]`: the camera's last keyframe as a JPEG.
pub async fn frame_jpeg(
    State(state): State<WebState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query.as_deref());
    let camera = state.resolve(src_of(&pairs)?)?;
    let size = SnapshotSize::new(side(&pairs, "width")?, side(&pairs, "height")?)?;
    let snapshot = state.live.snapshots().take(&camera, size).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        snapshot.jpeg,
    )
        .into_response())
}

/// `GET /api/stream.mp4?src=`: progressive fragmented MP4 for players such as VLC or IP Cam
/// Viewer, from the cached keyframe on, until the client leaves.
pub async fn stream_mp4(
    State(state): State<WebState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query.as_deref());
    let camera = state.resolve(src_of(&pairs)?)?;
    let stream = mp4::start(&state.live, &camera, PlayerCodecs::ALL, ConsumerKind::Mp4).await?;
    let content_type = stream.content_type.clone();
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next().await?;
        Some((Ok::<Bytes, std::io::Error>(chunk), stream))
    });
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// `POST /api/webrtc?src=`: an offer in, the complete answer out (candidates included). JSON
/// (`{"type":"offer","sdp":…,"ice_servers":[…]}`, as HA's client sends) gets JSON back; a WHEP
/// request (`application/sdp`) gets `201` and SDP; any other body is taken as plain SDP.
pub async fn webrtc_post(
    State(state): State<WebState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query.as_deref());
    let camera = state.resolve(src_of(&pairs)?)?;
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the offer is not UTF-8 text"))?;
    let json = media_type == "application/json";
    let offer = if json {
        let description: SessionDescription = serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(format!(
                "the JSON offer is malformed ({e}); send {{\"type\":\"offer\",\"sdp\":\"v=0…\"}}"
            ))
        })?;
        Offer {
            ice_servers: ice_servers_of(&description),
            sdp: description.sdp,
        }
    } else {
        Offer {
            sdp: text.to_string(),
            ice_servers: Vec::new(),
        }
    };
    let answer = webrtc::start_complete(&state.live, &camera, offer).await?;
    Ok(if json {
        axum::Json(SessionDescription::answer(answer)).into_response()
    } else {
        let status = if media_type == "application/sdp" {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        (status, [(header::CONTENT_TYPE, "application/sdp")], answer).into_response()
    })
}
