//! A stand-in for Home Assistant's Supervisor (which cannot run here): a small HTTP server that
//! answers `GET /services/mqtt` and `GET /addons/self/info` the way the real one does, token
//! checked — no token is 401, an unknown token 403, a missing `mqtt:want` 403 "No access to mqtt
//! service!", no broker 400 "Service not enabled" (supervisor/api/services.py, middleware).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

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

#[derive(Clone)]
struct Shared {
    answers: Arc<Mutex<Answers>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeSupervisor {
    pub fn start(answers: Answers) -> Self {
        let answers = Arc::new(Mutex::new(answers));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            answers: answers.clone(),
            requests: requests.clone(),
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
            stop: Some(stop),
            thread: Some(thread),
        }
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
