//! `/api/ws?src=`: go2rtc's WebSocket protocol. JSON messages `{"type":…,"value":…}` carry
//! WebRTC signalling (go2rtc's player form and Home Assistant's form) and the MSE request;
//! binary messages carry the MSE stream (init segment, then fragments).
//!
//! One reader and one writer per connection; the writer gives a message 5 s to leave, so a
//! client that stops reading is dropped, never the camera. Malformed JSON or SDP gets an
//! `error` message and the connection is closed.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::api::{query_pairs, src_of};
use super::{WebState, auth};
use crate::camera::ConsumerKind;
use crate::config::IceServer;
use crate::live::mp4::{self, PlayerCodecs};
use crate::live::webrtc::{self, Offer, Remote, Signal};

/// How long one outgoing message may take before the client counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest message a client may send (an SDP offer is a few kB).
const MAX_MESSAGE: usize = 256 * 1024;

/// An MSE message gathers what the muxer produced meanwhile, up to this size.
const MAX_BINARY: usize = 1024 * 1024;

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", content = "value")]
enum ClientMessage {
    /// go2rtc's player: an SDP offer as text; answered with `webrtc/answer`.
    #[serde(rename = "webrtc/offer")]
    WebRtcOffer(String),
    /// Home Assistant's form: `{"type":"offer","sdp":…,"ice_servers":[…]}`; answered with
    /// `webrtc` carrying `{"type":"answer","sdp":…}`.
    #[serde(rename = "webrtc")]
    WebRtc(SessionDescription),
    /// One of the browser's ICE candidates (`candidate:…`; empty at the end of gathering).
    #[serde(rename = "webrtc/candidate")]
    WebRtcCandidate(String),
    /// Start MSE; the value lists the codecs the player supports (`avc1.640029,opus,…`).
    #[serde(rename = "mse")]
    Mse(String),
}

/// What Vigil sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", content = "value")]
enum ServerMessage {
    /// The answer to a `webrtc/offer`, as SDP text.
    #[serde(rename = "webrtc/answer")]
    WebRtcAnswer(String),
    /// The answer to a `webrtc` offer: `{"type":"answer","sdp":…}`.
    #[serde(rename = "webrtc")]
    WebRtc(SessionDescription),
    /// One of Vigil's ICE candidates (`candidate:…`), for the first m-line.
    #[serde(rename = "webrtc/candidate")]
    WebRtcCandidate(String),
    /// The MSE content type (`video/mp4; codecs="…"`), sent just before the init segment.
    #[serde(rename = "mse")]
    Mse(String),
    /// What went wrong, prefixed with the message type it answers (`webrtc/offer: …`), as
    /// go2rtc's player expects.
    #[serde(rename = "error")]
    Error(String),
}

/// An SDP offer or answer in the W3C JSON form, with the ICE servers an offer may bring.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionDescription {
    #[serde(rename = "type")]
    pub kind: String,
    pub sdp: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ice_servers: Vec<IceServerJson>,
}

impl SessionDescription {
    pub fn answer(sdp: String) -> Self {
        Self {
            kind: "answer".into(),
            sdp,
            ice_servers: Vec::new(),
        }
    }
}

/// An `RTCIceServer` as JSON: `urls` is one URL or a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IceServerJson {
    pub urls: OneOrMany,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The usable ICE servers of an offer; ones Vigil cannot use are skipped (and logged).
pub fn ice_servers_of(description: &SessionDescription) -> Vec<IceServer> {
    let mut servers = Vec::new();
    for server in &description.ice_servers {
        let urls = match &server.urls {
            OneOrMany::One(url) => std::slice::from_ref(url),
            OneOrMany::Many(urls) => urls.as_slice(),
        };
        for url in urls {
            match IceServer::parse(
                url,
                server.username.as_deref(),
                server.credential.as_deref(),
            ) {
                Ok(parsed) => servers.push(parsed),
                Err(e) => tracing::debug!("ICE server from the offer skipped: {e}"),
            }
        }
    }
    servers
}

/// Middleware for the API port: a WebSocket from a page of another site is refused.
pub async fn check_origin(request: Request, next: Next) -> Response {
    let upgrade = request.headers().get(axum::http::header::UPGRADE).is_some();
    if upgrade && !auth::same_origin(request.headers()) {
        return (
            StatusCode::FORBIDDEN,
            "WebSocket from a page of another site refused (its Origin is not this host).\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// `GET /api/ws?src=`: upgrades to the go2rtc protocol. An unknown `src` is reported in the
/// protocol (an `error` message answering the first request), as go2rtc does, so Home
/// Assistant shows it to the user.
pub async fn upgrade(
    ws: WebSocketUpgrade,
    State(state): State<WebState>,
    RawQuery(query): RawQuery,
) -> Result<Response, super::ApiError> {
    let pairs = query_pairs(query.as_deref());
    let src = src_of(&pairs)?.to_string();
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| connection(socket, src, state)))
}

/// What the writer sends.
enum Outgoing {
    Json(ServerMessage),
    Binary(Vec<u8>),
    /// An error message, then the close frame.
    Fatal(String),
}

async fn connection(socket: WebSocket, src: String, state: WebState) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut outgoing) = mpsc::channel::<Outgoing>(16);
    let token = state.live.token().child_token();
    let writer_token = token.clone();
    let writer = async move {
        while let Some(message) = outgoing.recv().await {
            let (frame, last) = match message {
                Outgoing::Json(m) => (Message::Text(json(&m).into()), false),
                Outgoing::Binary(data) => (Message::Binary(data.into()), false),
                Outgoing::Fatal(text) => (
                    Message::Text(json(&ServerMessage::Error(text)).into()),
                    true,
                ),
            };
            let sent = tokio::time::timeout(WRITE_TIMEOUT, sink.send(frame)).await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::debug!("WebSocket client gone or not reading: dropped");
                break;
            }
            if last {
                let close = Message::Close(Some(CloseFrame {
                    code: axum::extract::ws::close_code::POLICY,
                    reason: "bad request".into(),
                }));
                let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(close)).await;
                break;
            }
        }
        writer_token.cancel();
    };
    let reader_token = token.clone();
    let reader = async move {
        let token = reader_token;
        let mut remote: Option<Remote> = None;
        loop {
            let message = tokio::select! {
                _ = token.cancelled() => break,
                message = stream.next() => message,
            };
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            };
            if let Err(fatal) = handle(&text, &src, &state, &out, &mut remote, &token).await {
                let _ = out.send(Outgoing::Fatal(fatal)).await;
                break;
            }
        }
        // The viewers' senders stop with the token; once they and `out` are gone, the writer
        // ends after what is queued (such as a last error).
        token.cancel();
    };
    tokio::join!(writer, reader);
    token.cancel();
}

fn json(message: &ServerMessage) -> String {
    serde_json::to_string(message).unwrap_or_else(|_| r#"{"type":"error","value":"?"}"#.into())
}

/// Handles one text message; an `Err` is an error to send before closing the connection.
async fn handle(
    text: &str,
    src: &str,
    state: &WebState,
    out: &mpsc::Sender<Outgoing>,
    remote: &mut Option<Remote>,
    token: &tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let mut value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("malformed JSON ({e}); send {{\"type\":…,\"value\":…}}"))?;
    let kind = value
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string();
    // go2rtc's player sends `mse` without a value when it supports every codec.
    if let Some(object) = value.as_object_mut() {
        object.entry("value").or_insert_with(|| "".into());
    }
    let message = match serde_json::from_value::<ClientMessage>(value) {
        Ok(message) => message,
        Err(_)
            if !matches!(
                kind.as_str(),
                "webrtc/offer" | "webrtc" | "webrtc/candidate" | "mse"
            ) =>
        {
            // Other go2rtc requests (hls, mjpeg, …): say so, the player falls back.
            let _ = out
                .send(Outgoing::Json(ServerMessage::Error(format!(
                    "{kind}: not supported by Vigil (it serves webrtc and mse)"
                ))))
                .await;
            return Ok(());
        }
        Err(e) => return Err(format!("{kind}: malformed message ({e})")),
    };
    let camera = match state.resolve(src) {
        Ok(camera) => camera,
        Err(e) => return Err(format!("{kind}: {}", e.message)),
    };
    match message {
        ClientMessage::WebRtcCandidate(candidate) => {
            if let Some(remote) = remote {
                remote.add_candidate(&candidate);
            }
        }
        ClientMessage::WebRtcOffer(sdp) => {
            let offer = Offer {
                sdp,
                ice_servers: Vec::new(),
            };
            let started = webrtc::start(&state.live, &camera, offer)
                .await
                .map_err(|e| format!("{kind}: {e}"))?;
            let answer = ServerMessage::WebRtcAnswer(started.answer.clone());
            answered(started, answer, out, remote, token).await;
        }
        ClientMessage::WebRtc(description) => {
            if description.kind != "offer" {
                return Err(format!(
                    "webrtc: expected an offer, got '{}'",
                    description.kind
                ));
            }
            let offer = Offer {
                ice_servers: ice_servers_of(&description),
                sdp: description.sdp,
            };
            let started = webrtc::start(&state.live, &camera, offer)
                .await
                .map_err(|e| format!("{kind}: {e}"))?;
            let answer = ServerMessage::WebRtc(SessionDescription::answer(started.answer.clone()));
            answered(started, answer, out, remote, token).await;
        }
        ClientMessage::Mse(codecs) => {
            let player = PlayerCodecs::parse(&codecs);
            let stream = mp4::start(&state.live, &camera, player, ConsumerKind::Mse)
                .await
                .map_err(|e| format!("mse: {e}"))?;
            tokio::spawn(pump_mse(stream, out.clone(), token.clone()));
        }
    }
    Ok(())
}

/// Sends the answer, keeps the viewer's handle for the browser's candidates, and forwards the
/// viewer's candidates.
async fn answered(
    started: webrtc::Started,
    answer: ServerMessage,
    out: &mpsc::Sender<Outgoing>,
    remote: &mut Option<Remote>,
    token: &tokio_util::sync::CancellationToken,
) {
    let _ = out.send(Outgoing::Json(answer)).await;
    *remote = Some(started.remote.clone());
    forward_candidates(started, out.clone(), token.clone());
}

/// Sends the viewer's candidates as they are gathered, until the connection ends.
fn forward_candidates(
    started: webrtc::Started,
    out: mpsc::Sender<Outgoing>,
    token: tokio_util::sync::CancellationToken,
) {
    let mut signals = started.signals;
    tokio::spawn(async move {
        loop {
            let signal = tokio::select! {
                _ = token.cancelled() => return,
                signal = signals.recv() => signal,
            };
            match signal {
                Some(Signal::Candidate(candidate)) => {
                    let message = ServerMessage::WebRtcCandidate(candidate);
                    if out.send(Outgoing::Json(message)).await.is_err() {
                        return;
                    }
                }
                Some(Signal::GatheringDone) => {}
                None => return,
            }
        }
    });
}

/// Sends the MSE content type, then the stream as binary messages, until either side ends.
async fn pump_mse(
    mut stream: mp4::Fmp4Stream,
    out: mpsc::Sender<Outgoing>,
    token: tokio_util::sync::CancellationToken,
) {
    let content_type = ServerMessage::Mse(stream.content_type.clone());
    if out.send(Outgoing::Json(content_type)).await.is_err() {
        return;
    }
    loop {
        let chunk = tokio::select! {
            _ = token.cancelled() => return,
            chunk = stream.next() => chunk,
        };
        let Some(chunk) = chunk else { break };
        let mut data = chunk.to_vec();
        while data.len() < MAX_BINARY {
            match stream.try_next() {
                Some(more) => data.extend_from_slice(&more),
                None => break,
            }
        }
        if out.send(Outgoing::Binary(data)).await.is_err() {
            return;
        }
    }
    let reason = if stream.too_slow() {
        "mse: the connection did not keep up with the camera; reconnect"
    } else {
        "mse: the stream ended (the camera's format changed or it went away); reconnect"
    };
    let _ = out.send(Outgoing::Fatal(reason.into())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_in_both_forms() {
        let go2rtc: ClientMessage =
            serde_json::from_str(r#"{"type":"webrtc/offer","value":"v=0\r\n"}"#).unwrap();
        assert!(matches!(go2rtc, ClientMessage::WebRtcOffer(s) if s.starts_with("v=0")));
        let ha: ClientMessage = serde_json::from_str(
            r#"{"type":"webrtc","value":{"type":"offer","sdp":"v=0","ice_servers":[{"urls":["stun:127.0.0.1:3478"]},{"urls":"turn:t.example.com","username":"u","credential":"c"}]}}"#,
        )
        .unwrap();
        let ClientMessage::WebRtc(description) = ha else {
            panic!("not a webrtc message");
        };
        assert_eq!(ice_servers_of(&description).len(), 2);
        let answer = json(&ServerMessage::WebRtc(SessionDescription::answer(
            "v=0".into(),
        )));
        assert_eq!(
            answer,
            r#"{"type":"webrtc","value":{"type":"answer","sdp":"v=0"}}"#
        );
        let candidate = json(&ServerMessage::WebRtcCandidate("candidate:1".into()));
        assert_eq!(
            candidate,
            r#"{"type":"webrtc/candidate","value":"candidate:1"}"#
        );
        let mse = json(&ServerMessage::Mse(
            "video/mp4; codecs=\"avc1.64001e\"".into(),
        ));
        assert_eq!(
            mse,
            r#"{"type":"mse","value":"video/mp4; codecs=\"avc1.64001e\""}"#
        );
    }
}
