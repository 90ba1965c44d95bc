//! Home Assistant core's API as an add-on reaches it: through the Supervisor's proxy
//! (`http://supervisor/core/api/…` and `ws://supervisor/core/websocket`, with
//! `SUPERVISOR_TOKEN`; the add-on declares `homeassistant_api: true`). Only the calls the
//! camera entries need: config entries and their flows over REST, titles and entity ids over
//! the websocket.
//!
//! Every failure is a sentence with the call it was; the token never appears in one.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::plan::Entry;
use crate::supervisor::{Supervisor, short};

/// A config flow step may take long: Home Assistant opens the camera's stream (up to 30 s).
const FLOW_TIMEOUT: Duration = Duration::from_secs(60);
/// Every other call.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// What a Generic Camera entry is given (the flow's `user` or `init` step).
#[derive(Clone)]
pub struct CameraSettings(pub Value);

/// A client of Home Assistant core through the Supervisor.
#[derive(Clone)]
pub struct CoreApi {
    supervisor: Supervisor,
    http: reqwest::Client,
}

/// An open websocket to Home Assistant core, authenticated.
pub struct CoreSocket {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl CoreApi {
    pub fn new(supervisor: Supervisor) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self { supervisor, http }
    }

    /// The Generic Camera entries (`GET /api/config/config_entries/entry?domain=generic`).
    pub async fn generic_entries(&self) -> Result<Vec<Entry>, String> {
        let answer = self
            .call(
                reqwest::Method::GET,
                "config/config_entries/entry?domain=generic",
                None,
                CALL_TIMEOUT,
            )
            .await?;
        serde_json::from_value(answer).map_err(|e| format!("unexpected list of entries: {e}"))
    }

    /// Runs the Generic Camera config flow with `settings`; returns the new entry's id.
    pub async fn create_generic(&self, settings: &CameraSettings) -> Result<String, String> {
        let flow = self
            .call(
                reqwest::Method::POST,
                "config/config_entries/flow",
                Some(json!({"handler": "generic", "show_advanced_options": false})),
                CALL_TIMEOUT,
            )
            .await?;
        let result = self
            .run_flow("config/config_entries/flow", &flow, settings)
            .await?;
        result["result"]["entry_id"]
            .as_str()
            .or_else(|| result["result"].as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("the camera flow created no entry: {result}"))
    }

    /// Runs the options flow of entry `entry_id` with `settings`.
    pub async fn update_generic(
        &self,
        entry_id: &str,
        settings: &CameraSettings,
    ) -> Result<(), String> {
        let flow = self
            .call(
                reqwest::Method::POST,
                "config/config_entries/options/flow",
                Some(json!({"handler": entry_id, "show_advanced_options": false})),
                CALL_TIMEOUT,
            )
            .await?;
        self.run_flow("config/config_entries/options/flow", &flow, settings)
            .await
            .map(|_| ())
    }

    /// `DELETE /api/config/config_entries/entry/<id>`.
    pub async fn delete_entry(&self, entry_id: &str) -> Result<(), String> {
        self.call(
            reqwest::Method::DELETE,
            &format!("config/config_entries/entry/{entry_id}"),
            None,
            CALL_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    /// `POST /api/config/config_entries/entry/<id>/reload`: the entity takes the new title.
    pub async fn reload_entry(&self, entry_id: &str) -> Result<(), String> {
        self.call(
            reqwest::Method::POST,
            &format!("config/config_entries/entry/{entry_id}/reload"),
            None,
            CALL_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    /// The settings step, then the confirmation; the flow is aborted when a step fails.
    async fn run_flow(
        &self,
        base: &str,
        flow: &Value,
        settings: &CameraSettings,
    ) -> Result<Value, String> {
        let Some(flow_id) = flow["flow_id"].as_str() else {
            return Err(format!("Home Assistant started no flow: {flow}"));
        };
        let path = format!("{base}/{flow_id}");
        let result = async {
            let step = self
                .call(
                    reqwest::Method::POST,
                    &path,
                    Some(settings.0.clone()),
                    FLOW_TIMEOUT,
                )
                .await?;
            if step["step_id"] != "user_confirm" {
                return Err(format!(
                    "Home Assistant's Generic Camera refused the stream or the still image: {}",
                    step.get("errors").unwrap_or(&step)
                ));
            }
            let done = self
                .call(
                    reqwest::Method::POST,
                    &path,
                    Some(json!({"confirmed_ok": true})),
                    FLOW_TIMEOUT,
                )
                .await?;
            if done["type"] != "create_entry" {
                return Err(format!("the camera flow did not finish: {done}"));
            }
            Ok(done)
        }
        .await;
        if result.is_err() {
            let _ = self
                .call(reqwest::Method::DELETE, &path, None, CALL_TIMEOUT)
                .await;
        }
        result
    }

    /// One REST call to `/api/<path>` through the Supervisor; JSON answer or a sentence.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, String> {
        let url = format!("{}/core/api/{path}", self.supervisor.url());
        let what = format!("{method} /api/{}", path.split('?').next().unwrap_or(path));
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(self.supervisor.token().expose())
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            format!("{what}: cannot reach Home Assistant through the Supervisor ({e})")
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(format!(
                "{what}: the Supervisor refused access to Home Assistant's API (HTTP {status}); the \
                 add-on needs `homeassistant_api: true`"
            ));
        }
        if !status.is_success() {
            return Err(format!("{what}: HTTP {status}: {}", short(&text)));
        }
        serde_json::from_str(&text).map_err(|_| format!("{what}: not JSON: {}", short(&text)))
    }

    /// Opens and authenticates the websocket (`/core/websocket`).
    pub async fn socket(&self) -> Result<CoreSocket, String> {
        let url = format!("{}/core/websocket", self.supervisor.url())
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        let (socket, _) =
            tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::connect_async(&url))
                .await
                .map_err(|_| "the websocket to Home Assistant did not open".to_string())?
                .map_err(|e| format!("cannot open the websocket to Home Assistant: {e}"))?;
        let mut socket = CoreSocket { socket, next_id: 1 };
        let hello = socket.receive().await?;
        if hello["type"] != "auth_required" {
            return Err(format!("unexpected websocket greeting: {hello}"));
        }
        let token = self.supervisor.token().expose().to_string();
        socket
            .send(json!({"type": "auth", "access_token": token}))
            .await?;
        let answer = socket.receive().await?;
        if answer["type"] != "auth_ok" {
            return Err(format!(
                "the Supervisor refused the websocket to Home Assistant ({}); the add-on needs \
                 `homeassistant_api: true`",
                answer["message"].as_str().unwrap_or("no reason given")
            ));
        }
        Ok(socket)
    }
}

impl CoreSocket {
    /// Sends one command (an `id` is added) and returns its `result`, or the error's message.
    pub async fn command(&mut self, mut command: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let kind = command["type"].as_str().unwrap_or("?").to_string();
        command["id"] = json!(id);
        self.send(command).await?;
        loop {
            let answer = self.receive().await?;
            if answer["id"] != json!(id) || answer["type"] != "result" {
                continue;
            }
            if answer["success"] == true {
                return Ok(answer["result"].clone());
            }
            return Err(format!(
                "{kind}: {}",
                answer["error"]["message"].as_str().unwrap_or("failed")
            ));
        }
    }

    async fn send(&mut self, value: Value) -> Result<(), String> {
        self.socket
            .send(Message::text(value.to_string()))
            .await
            .map_err(|e| format!("the websocket to Home Assistant closed: {e}"))
    }

    async fn receive(&mut self) -> Result<Value, String> {
        loop {
            let message = tokio::time::timeout(CALL_TIMEOUT, self.socket.next())
                .await
                .map_err(|_| "Home Assistant did not answer on the websocket".to_string())?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text)
                        .map_err(|_| format!("not JSON on the websocket: {}", short(&text)));
                }
                Some(Ok(Message::Close(_))) | None => {
                    return Err("the websocket to Home Assistant closed".into());
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("the websocket to Home Assistant failed: {e}")),
            }
        }
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
