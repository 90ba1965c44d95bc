//! A stand-in for Home Assistant's Supervisor (which cannot run here): a small HTTP server that
//! answers `GET /services/mqtt` and `GET /addons/self/info` the way the real one does, token
//! checked — no token is 401, an unknown token 403, a missing `mqtt:want` 403 "No access to mqtt
//! service!", no broker 400 "Service not enabled" (supervisor/api/services.py, middleware).
//!
//! With [`FakeSupervisor::proxy_core`] it also proxies Home Assistant core's API as the real
//! one does (supervisor/api/proxy.py): `/core/api/<path>` to a real core's `/api/<path>`, and the
//! websocket `/core/websocket` (its own `auth_required`/`auth` with the add-on's token, then
//! core's websocket authenticated with core's token); an unknown token gets 401 or
//! `auth_invalid`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as TungMessage;

/// The add-on's slug as the Supervisor reports it (repository hash + slug).
pub const SLUG: &str = "a0d7b954_vigil";

/// What the fake Supervisor answers; change it while it runs.
#[derive(Debug, Clone)]
pub struct Answers {
    /// The add-on's token.
    pub token: String,
    /// The MQTT service's data, or `None` for "Service not enabled".
    pub mqtt: Option<Value>,
    /// False answers as for an add-on without `services: [mqtt:want]`.
    pub mqtt_access: bool,
    /// Use the `/v2` spelling (`app` instead of `addon`).
    pub v2: bool,
}

pub struct FakeSupervisor {
    pub url: String,
    answers: Arc<Mutex<Answers>>,
    requests: Arc<Mutex<Vec<String>>>,
    core: Arc<Mutex<Option<Core>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The MQTT service data for a broker on loopback `port`.
pub fn mqtt_service(port: u16, username: &str, password: &str, ssl: bool) -> Value {
    json!({
        "host": "127.0.0.1",
        "port": port,
        "ssl": ssl,
        "protocol": "3.1.1",
        "username": username,
        "password": password,
        "addon": "core_mosquitto",
    })
}

/// The Home Assistant core the proxy forwards to.
#[derive(Debug, Clone)]
struct Core {
    url: String,
    token: String,
}

#[derive(Clone)]
struct Shared {
    answers: Arc<Mutex<Answers>>,
    requests: Arc<Mutex<Vec<String>>>,
    core: Arc<Mutex<Option<Core>>>,
}

impl FakeSupervisor {
    pub fn start(answers: Answers) -> Self {
        let answers = Arc::new(Mutex::new(answers));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let core = Arc::new(Mutex::new(None));
        let shared = Shared {
            answers: answers.clone(),
            requests: requests.clone(),
            core: core.clone(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let router = Router::new()
                    .route("/services/mqtt", get(services_mqtt))
                    .route("/addons/self/info", get(self_info))
                    .route("/core/api/{*path}", any(core_api))
                    .route("/core/websocket", get(core_websocket))
                    .with_state(shared);
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Self {
            url,
            answers,
            requests,
            core,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Proxies Home Assistant core's API from now on: the core at `url`, called with `token`
    /// (the add-on declares `homeassistant_api: true`).
    pub fn proxy_core(&self, url: &str, token: &str) {
        *self.core.lock().unwrap() = Some(Core {
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
        });
    }

    /// Changes what it answers from now on.
    pub fn change(&self, change: impl FnOnce(&mut Answers)) {
        change(&mut self.answers.lock().unwrap());
    }

    /// The paths asked so far, with the token each request carried (`-` for none).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeSupervisor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The token check of the Supervisor's security middleware; `Ok` carries the answers.
fn check_token(
    shared: &Shared,
    headers: &HeaderMap,
    path: &str,
) -> Result<Answers, (StatusCode, &'static str)> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    shared
        .requests
        .lock()
        .unwrap()
        .push(format!("{path} {}", token.as_deref().unwrap_or("-")));
    let answers = shared.answers.lock().unwrap().clone();
    match token {
        None => Err((StatusCode::UNAUTHORIZED, "401: Unauthorized")),
        Some(t) if t != answers.token => Err((StatusCode::FORBIDDEN, "403: Forbidden")),
        Some(_) => Ok(answers),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"result": "error", "message": message})),
    )
        .into_response()
}

async fn services_mqtt(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    let answers = match check_token(&shared, &headers, "/services/mqtt") {
        Ok(a) => a,
        Err(refused) => return refused.into_response(),
    };
    if !answers.mqtt_access {
        return error(StatusCode::FORBIDDEN, "No access to mqtt service!");
    }
    match answers.mqtt {
        None => error(StatusCode::BAD_REQUEST, "Service not enabled"),
        Some(mut data) => {
            if answers.v2
                && let Some(object) = data.as_object_mut()
                && let Some(provider) = object.remove("addon")
            {
                object.insert("app".into(), provider);
            }
            axum::Json(json!({"result": "ok", "data": data})).into_response()
        }
    }
}

async fn self_info(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    match check_token(&shared, &headers, "/addons/self/info") {
        Ok(_) => axum::Json(json!({
            "result": "ok",
            "data": {"name": "Vigil", "slug": SLUG, "version": "0.1.0", "state": "started"},
        }))
        .into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// `/core/api/<path>`: the add-on's token checked, then the same request to core's
/// `/api/<path>` with core's token; core's status and body back.
async fn core_api(
    State(shared): State<Shared>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = check_token(&shared, &headers, &format!("/core/api/{path}")) {
        // The real proxy answers every refused token with 401.
        return (StatusCode::UNAUTHORIZED, refused.1).into_response();
    }
    let Some(core) = shared.core.lock().unwrap().clone() else {
        return (StatusCode::BAD_GATEWAY, "no Home Assistant core").into_response();
    };
    let mut url = format!("{}/api/{path}", core.url);
    if let Some(query) = query {
        url.push('?');
        url.push_str(&query);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut request = client
        .request(method, &url)
        .bearer_auth(&core.token)
        .body(body.to_vec());
    if let Some(kind) = headers.get("content-type") {
        request = request.header("content-type", kind);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let kind = response
                .headers()
                .get("content-type")
                .cloned()
                .unwrap_or_else(|| "application/octet-stream".parse().unwrap());
            let body = response.bytes().await.unwrap_or_default();
            (status, [("content-type", kind)], body).into_response()
        }
        Err(_) => (StatusCode::BAD_GATEWAY, "502: Bad Gateway").into_response(),
    }
}

async fn core_websocket(State(shared): State<Shared>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| relay_websocket(shared, socket))
}

/// The Supervisor's websocket proxy: its own auth phase with the add-on's token, then core's
/// websocket authenticated with core's token, then every message relayed both ways.
async fn relay_websocket(shared: Shared, mut addon: WebSocket) {
    let send = |v: Value| AxumMessage::Text(v.to_string().into());
    let _ = addon
        .send(send(
            json!({"type": "auth_required", "ha_version": "2025.4.4"}),
        ))
        .await;
    let token = match addon.recv().await {
        Some(Ok(AxumMessage::Text(text))) => serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["access_token"].as_str().map(str::to_string)),
        _ => None,
    };
    shared.requests.lock().unwrap().push(format!(
        "/core/websocket {}",
        token.as_deref().unwrap_or("-")
    ));
    let expected = shared.answers.lock().unwrap().token.clone();
    let core = shared.core.lock().unwrap().clone();
    let (Some(core), true) = (core, token.as_deref() == Some(expected.as_str())) else {
        let _ = addon
            .send(send(
                json!({"type": "auth_invalid", "message": "Invalid access"}),
            ))
            .await;
        return;
    };
    let ws_url = format!("{}/api/websocket", core.url.replacen("http://", "ws://", 1));
    let Ok((mut upstream, _)) = tokio_tungstenite::connect_async(ws_url).await else {
        return;
    };
    let _ = upstream.next().await; // auth_required
    let _ = upstream
        .send(TungMessage::text(
            json!({"type": "auth", "access_token": core.token}).to_string(),
        ))
        .await;
    match upstream.next().await {
        Some(Ok(TungMessage::Text(text))) if text.contains("auth_ok") => {}
        _ => return,
    }
    let _ = addon
        .send(send(json!({"type": "auth_ok", "ha_version": "2025.4.4"})))
        .await;
    loop {
        tokio::select! {
            from_addon = addon.recv() => match from_addon {
                Some(Ok(AxumMessage::Text(text))) => {
                    if upstream.send(TungMessage::text(text.as_str())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(AxumMessage::Close(_))) | None | Some(Err(_)) => {
                    let _ = upstream.close(None).await;
                    return;
                }
                Some(Ok(_)) => {}
            },
            from_core = upstream.next() => match from_core {
                Some(Ok(TungMessage::Text(text))) => {
                    if addon.send(AxumMessage::Text(text.as_str().into())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(TungMessage::Close(_))) | None | Some(Err(_)) => {
                    let _ = addon.close().await;
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}
