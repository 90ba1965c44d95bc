//! HTTP servers: the go2rtc-compatible API on `api_port` at the server root (Home Assistant
//! core's go2rtc integration and go2rtc cards call it), and the panel on `web_port` (through
//! Home Assistant's ingress) with the same live endpoints under relative paths.
//!
//! Owns binding (a port in use is a clear error naming the option), access (the ingress guard
//! on the panel, Basic auth and the same-origin check on the API), request parsing and the
//! wire formats. Media is [`crate::live`]'s; handlers never see camera credentials.

mod api;
mod auth;
mod listen;
pub mod names;
mod ws;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod panel;
pub mod streams;

use crate::audio::Detection;
use crate::camera::{CameraHandle, Cameras};
use crate::clips::Clips;
use crate::config::IpNet;
use crate::live::{Live, LiveError};
use crate::mqtt::MqttStatus;
use crate::settings::Settings;

pub use auth::{ApiAuth, basic_credentials_match};
pub use listen::{api_peers, bind_api, bind_lan};
pub use names::StreamNames;

/// What every handler may read. Cheap to clone.
#[derive(Clone)]
pub struct WebState {
    pub cameras: Cameras,
    /// `None` when cry detection could not start (no model or ONNX Runtime).
    pub detection: Option<Detection>,
    pub settings: Settings,
    pub mqtt: tokio::sync::watch::Receiver<MqttStatus>,
    pub live: Live,
    /// Names registered with `PUT /api/streams`.
    pub names: StreamNames,
    /// The restream's port, to recognise our own restream URLs.
    pub rtsp_port: u16,
    /// The cry pictures' directory ([`crate::cry_pictures`]), for the panel's episodes.
    pub cry_pictures: std::path::PathBuf,
    /// The cry clips: their folder (served at `/api/clips/…`) and each camera's clip status.
    pub clips: Clips,
}

impl std::fmt::Debug for WebState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebState")
            .field("cameras", &self.cameras)
            .finish()
    }
}

impl WebState {
    /// The camera a go2rtc `src` stands for: a camera's name or a registered stream name.
    pub fn resolve(&self, src: &str) -> Result<CameraHandle, ApiError> {
        let camera = self
            .cameras
            .get(src)
            .or_else(|| self.names.camera_of(src).and_then(|c| self.cameras.get(&c)));
        camera.cloned().ok_or_else(|| ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "stream '{src}' not found; Vigil's cameras are: {} (Home Assistant registers its \
                 camera entities with PUT /api/streams)",
                self.cameras.names().join(", ")
            ),
        })
    }
}

/// An error answer: a status and a sentence saying what is wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<LiveError> for ApiError {
    fn from(error: LiveError) -> Self {
        let status = match &error {
            LiveError::NoPicture { .. } | LiveError::TooManyViewers { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            LiveError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            LiveError::BadOffer(_) | LiveError::BadRequest(_) => StatusCode::BAD_REQUEST,
            LiveError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            LiveError::Pipeline { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            message: error.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, format!("{}\n", self.message)).into_response()
    }
}

/// Binds `0.0.0.0:port` for the service named by the option `key`, with an error a user can act on.
pub async fn bind(key: &str, port: u16) -> anyhow::Result<TcpListener> {
    bind_on(key, IpAddr::V4(Ipv4Addr::UNSPECIFIED), port).await
}

/// Binds `ip:port` for the service named by the option `key`.
async fn bind_on(key: &str, ip: IpAddr, port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(ip, port))
        .await
        .map_err(|e| port_error(key, port, &e))
}

/// What to tell the user when the port of option `key` cannot be bound.
pub fn port_error(key: &str, port: u16, e: &std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "{key} {port} is already in use by another program; stop it or choose another \
             {key} in the options"
        ),
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "{key} {port} needs privileges to bind; choose a port above 1023 in the options"
        ),
        _ => anyhow::anyhow!("cannot listen on {key} {port}: {e}"),
    }
}

/// The live endpoints both servers carry (relative to where they are mounted).
fn live_routes() -> Router<WebState> {
    Router::new()
        .route("/api/ws", get(ws::upgrade))
        .route("/api/frame.jpeg", get(api::frame_jpeg))
        .route("/api/stream.mp4", get(api::stream_mp4))
        .route("/api/webrtc", axum::routing::post(api::webrtc_post))
}

/// The panel's routes, behind the ingress guard: the panel, the live endpoints, and `live`, a
/// page with one camera's player (`live?src=<camera>[&mode=webrtc|mse]`).
pub fn panel_router(state: WebState, allow: Vec<IpNet>) -> Router {
    Router::new()
        .route("/live", get(live_page))
        .route("/api/health", get(health))
        .route("/api/streams", get(streams::streams))
        .merge(panel::routes())
        .merge(live_routes())
        .with_state(state)
        .layer(middleware::from_fn_with_state(
            Allow {
                peers: allow,
                refusal: "This panel is only reachable through Home Assistant (ingress).\n",
            },
            guard,
        ))
}

/// The go2rtc-compatible API at the server root, behind Basic auth when `auth` has
/// credentials, for the peers in `peers` (empty = anyone).
pub fn api_router(state: WebState, auth: ApiAuth, peers: Vec<IpNet>) -> Router {
    Router::new()
        .route("/api", get(api::info))
        .route("/api/streams", get(streams::streams).put(api::put_stream))
        .merge(live_routes())
        .with_state(state)
        .layer(middleware::from_fn(ws::check_origin))
        .layer(middleware::from_fn_with_state(auth, auth::require_basic))
        .layer(middleware::from_fn_with_state(
            Allow {
                peers,
                refusal: "This port is for Home Assistant only; players on the home network use \
                          the LAN port (the lan_port option).\n",
            },
            guard,
        ))
}

/// The kernel's send buffer per connection. Left to itself Linux grows it to 4 MiB for a
/// client that stops reading, and a stalled viewer would be noticed only minutes later; this
/// still carries a 4 Mbit/s camera on a LAN with room to spare.
const SEND_BUFFER: usize = 512 * 1024;

/// Serves `router` on `listener` until `shutdown`; open connections get a moment to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|stream| {
        let socket = socket2::SockRef::from(&*stream);
        if let Err(e) = socket.set_send_buffer_size(SEND_BUFFER) {
            tracing::debug!("cannot bound a connection's send buffer: {e}");
        }
        let _ = stream.set_nodelay(true);
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await?;
    Ok(())
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn live_page() -> Html<&'static str> {
    Html(include_str!("live.html"))
}

/// Peers allowed to connect (empty = anyone), and what the others are told. `/api/health` is
/// also answered to loopback, where the image's health check (`vigil-healthcheck`) asks: in the
/// add-on only the ingress gateway may open the panel, and the check got 403.
#[derive(Clone)]
struct Allow {
    peers: Vec<IpNet>,
    refusal: &'static str,
}

async fn guard(
    State(Allow { peers, refusal }): State<Allow>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let health_check = peer.ip().is_loopback() && request.uri().path() == "/api/health";
    if peers.is_empty() || health_check || peers.iter().any(|net| net.contains(peer.ip())) {
        return next.run(request).await;
    }
    tracing::debug!(%peer, path = %request.uri().path(), "refused: peer not allowed");
    (StatusCode::FORBIDDEN, refusal).into_response()
}
