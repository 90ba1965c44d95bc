//! `GET /api/streams`: every camera as go2rtc shows its streams (stream name → producers and
//! consumers), so tools made for go2rtc can read Vigil, plus the names Home Assistant registered
//! with `PUT /api/streams` (their sources as producers: HA registers a stream again whenever its
//! source is missing here). `?src=<name>` answers one stream (a camera or a registered name),
//! 404 for an unknown one. The same handler serves the panel port and the API port.
//!
//! Producers carry the camera's URL redacted (never its password), plus Vigil's own status
//! fields (`state`, `reason`, `bitrate_kbps`, `reconnects`). This module only reads.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::WebState;
use super::names::StreamName;
use crate::camera::hub::ConsumerInfo;
use crate::camera::{AudioStatus, CameraHandle, ConsumerKind, VideoStatus};

#[derive(Debug, serde::Deserialize)]
pub struct StreamsQuery {
    /// One stream's name (go2rtc's `src`).
    src: Option<String>,
}

/// The handler: all streams, or the one named by `src`.
pub async fn streams(State(state): State<WebState>, Query(query): Query<StreamsQuery>) -> Response {
    let registered = state.names.list();
    match query.src {
        Some(name) => {
            if let Some((_, entry)) = registered.iter().find(|(n, _)| *n == name) {
                return Json(registered_stream(entry, &state)).into_response();
            }
            match state.resolve(&name) {
                Ok(camera) => Json(stream(&camera)).into_response(),
                Err(e) => (StatusCode::NOT_FOUND, format!("{}\n", e.message)).into_response(),
            }
        }
        None => {
            let mut all: Map<String, Value> = state
                .cameras
                .streams()
                .map(|camera| (camera.name().to_string(), stream(camera)))
                .collect();
            for (name, entry) in &registered {
                all.insert(name.clone(), registered_stream(entry, &state));
            }
            Json(Value::Object(all)).into_response()
        }
    }
}

/// A name Home Assistant registered: its sources as producers (stored redacted), and the consumers of
/// the camera it maps onto.
fn registered_stream(entry: &StreamName, state: &WebState) -> Value {
    let producers: Vec<Value> = entry
        .sources
        .iter()
        .map(|url| json!({ "url": url }))
        .collect();
    let consumers = state
        .cameras
        .get(&entry.camera)
        .map(|camera| stream(camera)["consumers"].clone())
        .unwrap_or_else(|| json!([]));
    json!({ "producers": producers, "consumers": consumers, "camera": entry.camera })
}

/// One camera as a go2rtc stream.
pub fn stream(camera: &CameraHandle) -> Value {
    let medias = medias(camera, "sendonly");
    json!({
        "producers": [producer(camera)],
        "consumers": camera
            .consumer_infos()
            .iter()
            // The shared Opus transcoder feeds WebRTC viewers, who are listed themselves; the
            // clip recorder is Vigil's own.
            .filter(|c| !matches!(c.kind, ConsumerKind::Transcoder | ConsumerKind::Recorder))
            .map(|c| consumer(c, &medias))
            .collect::<Vec<_>>(),
    })
}

fn producer(camera: &CameraHandle) -> Value {
    let status = camera.status();
    let url = camera.source();
    let remote = url::Url::parse(url).ok().and_then(|u| {
        let host = u.host_str()?.to_string();
        Some(format!("{host}:{}", u.port().unwrap_or(554)))
    });
    let mut producer = json!({
        "format_name": if remote.is_some() { "rtsp" } else { "demo" },
        "url": url,
        "state": status.state,
        "reason": status.reason,
        "since": status.since.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        "bitrate_kbps": status.bitrate_kbps,
        "reconnects": status.reconnects,
        "video": status.video,
        "audio": status.audio,
    });
    if let Some(remote) = remote {
        producer["protocol"] = "rtsp+tcp".into();
        producer["remote_addr"] = remote.into();
    }
    let medias = medias(camera, "recvonly");
    if !medias.is_empty() {
        producer["medias"] = medias.into();
    }
    producer
}

fn consumer(info: &ConsumerInfo, medias: &[String]) -> Value {
    let (format_name, protocol) = match info.kind {
        ConsumerKind::Rtsp => ("rtsp", "rtsp"),
        ConsumerKind::WebRtc => ("webrtc", "webrtc"),
        ConsumerKind::Mse => ("mse", "ws"),
        ConsumerKind::Mp4 => ("mp4", "http"),
        ConsumerKind::Snapshot => ("jpeg", "http"),
        // Filtered out in `stream`; named for completeness.
        ConsumerKind::Transcoder => ("transcoder", "internal"),
        ConsumerKind::Recorder => ("mp4", "file"),
    };
    let mut consumer = json!({
        "format_name": format_name,
        "protocol": protocol,
        "medias": medias,
        "bytes_send": info.bytes,
        "frames": info.frames,
        "dropped_frames": info.dropped_frames,
    });
    if let Some(peer) = &info.peer {
        consumer["remote_addr"] = peer.as_str().into();
    }
    consumer
}

/// go2rtc's media lines: `video, recvonly, H264`, `audio, recvonly, PCMA/8000`.
fn medias(camera: &CameraHandle, direction: &str) -> Vec<String> {
    let status = camera.status();
    let mut medias = Vec::new();
    if let Some(video) = &status.video {
        medias.push(format!("video, {direction}, {}", video_codec(video)));
    }
    if let Some(audio) = &status.audio {
        // Consumers get what Vigil restreams: AAC when the camera's audio is transcoded.
        let codec = match &audio.restreamed_as {
            Some(_) if direction == "sendonly" => format!(
                "MPEG4-GENERIC/{}",
                crate::camera::unify::aac_rate_for(audio.sample_rate as i32)
            ),
            _ => audio_codec(audio),
        };
        medias.push(format!("audio, {direction}, {codec}"));
    }
    medias
}

fn video_codec(video: &VideoStatus) -> &'static str {
    match video.codec.as_str() {
        "H.265" => "H265",
        _ => "H264",
    }
}

/// go2rtc's codec text: RTP name, clock rate, and channels when stereo.
fn audio_codec(audio: &AudioStatus) -> String {
    let (name, rate) = match audio.codec.as_str() {
        "AAC" => ("MPEG4-GENERIC", audio.sample_rate),
        "Opus" => ("OPUS", 48000),
        other => (other, audio.sample_rate),
    };
    if audio.channels > 1 || name == "OPUS" {
        format!("{name}/{rate}/{}", audio.channels.max(2))
    } else {
        format!("{name}/{rate}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(codec: &str, sample_rate: u32, channels: u32) -> AudioStatus {
        AudioStatus {
            restreamed_as: None,
            codec: codec.into(),
            sample_rate,
            channels,
        }
    }

    #[test]
    fn codecs_are_named_as_go2rtc_names_them() {
        assert_eq!(audio_codec(&audio("PCMA", 8000, 1)), "PCMA/8000");
        assert_eq!(audio_codec(&audio("AAC", 16000, 1)), "MPEG4-GENERIC/16000");
        assert_eq!(
            audio_codec(&audio("AAC", 48000, 2)),
            "MPEG4-GENERIC/48000/2"
        );
        assert_eq!(audio_codec(&audio("Opus", 48000, 1)), "OPUS/48000/2");
    }
}
