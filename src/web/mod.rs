//! HTTP servers: the panel on `web_port` (through Home Assistant's ingress) and, later, the
//! go2rtc-compatible API on `api_port`.
//!
//! Owns binding (a port in use is a clear error naming the option), the ingress guard (only
//! allowed peers reach the panel) and graceful shutdown. Handlers never see camera credentials.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod streams;

use crate::camera::Cameras;
use crate::config::IpNet;

/// What every handler may read. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WebState {
    pub cameras: Cameras,
}

/// Binds `0.0.0.0:port` for the service named by the option `key`, with an error a user can act on.
pub async fn bind(key: &str, port: u16) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    TcpListener::bind(addr)
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

/// The panel's routes, behind the ingress guard.
pub fn panel_router(state: WebState, allow: Vec<IpNet>) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/streams", get(streams::streams))
        .with_state(state)
        .layer(middleware::from_fn_with_state(Allow(allow), guard))
}

/// Serves `router` on `listener` until `shutdown`; open connections get a moment to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
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

/// Peers allowed to connect; empty = anyone.
#[derive(Clone)]
struct Allow(Vec<IpNet>);

async fn guard(
    State(Allow(allow)): State<Allow>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if allow.is_empty() || allow.iter().any(|net| net.contains(peer.ip())) {
        return next.run(request).await;
    }
    tracing::debug!(%peer, path = %request.uri().path(), "refused: peer not in web_allow");
    (
        StatusCode::FORBIDDEN,
        "This panel is only reachable through Home Assistant (ingress).\n",
    )
        .into_response()
}
