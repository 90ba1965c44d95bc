//! A real Home Assistant core for end-to-end tests, run with the harness in `tests/ha/`
//! (`install.sh` puts a pinned core in a cached venv; `start.sh`, `onboard.py`, `setup_mqtt.py`,
//! `webrtc_offer.py`): its REST API, its states, a registered "phone" that receives
//! notifications the way the companion app does (local push over the websocket), and a stop by
//! PID.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{TempDir, free_port, signal};

/// The Home Assistant harness.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ha")
}

/// The venv `tests/ha/install.sh` made: `HA_VENV`, as for the scripts, or their default.
pub fn venv() -> PathBuf {
    match std::env::var_os("HA_VENV") {
        Some(v) => PathBuf::from(v),
        None => {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/vigil/ha/venv")
        }
    }
}

pub struct HomeAssistant {
    pub url: String,
    pub token: String,
    pid: u32,
    config: TempDir,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl HomeAssistant {
    /// Starts Home Assistant with `extra_yaml` appended to its configuration, after `prepare`
    /// has put files into the config directory; onboards it and keeps a long-lived token.
    pub fn start(extra_yaml: &str, prepare: impl FnOnce(&Path)) -> Self {
        let python = venv().join("bin/python");
        assert!(
            python.exists(),
            "no Home Assistant venv at {}: run scripts/install-deps.sh test",
            venv().display()
        );
        let config = TempDir::new("ha");
        prepare(config.path());
        let extra = config.write("extra.yaml.in", extra_yaml);
        let port = free_port();
        let out = Command::new("bash")
            .arg(scripts_dir().join("start.sh"))
            .arg(config.path())
            .env("HA_PORT", port.to_string())
            .env("HA_VENV", venv())
            .env("HA_EXTRA_YAML", &extra)
            .output()
            .expect("cannot run tests/ha/start.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "tests/ha/start.sh failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix("pid="))
            .and_then(|p| p.parse().ok())
            .expect("tests/ha/start.sh printed no pid");
        let url = format!("http://127.0.0.1:{port}");
        let mut ha = Self {
            url: url.clone(),
            token: String::new(),
            pid,
            config,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            // No idle keep-alive connections: Home Assistant waits up to 10 s for open ones
            // when it stops.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        };
        ha.token = ha.script(&python, "onboard.py", &["--url", &url]);
        ha
    }

    /// Runs one of the harness's Python scripts with the HA venv; returns its stdout.
    fn script(&self, python: &Path, name: &str, args: &[&str]) -> String {
        let out = Command::new(python)
            .arg(scripts_dir().join(name))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        assert!(
            out.status.success(),
            "{name} failed:\n{}\n--- HA log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Adds the MQTT integration for the broker on loopback `port`.
    pub fn setup_mqtt(&self, port: u16, username: &str, password: &str) {
        let python = venv().join("bin/python");
        let port = port.to_string();
        self.script(
            &python,
            "setup_mqtt.py",
            &[
                "--url",
                &self.url,
                "--token",
                &self.token,
                "--broker",
                "127.0.0.1",
                "--port",
                &port,
                "--username",
                username,
                "--password",
                password,
            ],
        );
    }

    /// Waits until the config entry of `domain` is `loaded` (for go2rtc: HA accepted the
    /// server's `GET /api`); panics with the entries and the log after `timeout`.
    pub fn wait_entry_loaded(&self, domain: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let entries = self.get(&format!("config/config_entries/entry?domain={domain}"));
            let loaded = entries
                .as_ref()
                .and_then(|e| e.as_array())
                .is_some_and(|e| e.iter().any(|entry| entry["state"] == "loaded"));
            if loaded {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the {domain} entry is not loaded after {timeout:?}: {entries:?}\n--- HA log tail ---\n{}",
                    tail(&self.log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends a WebRTC offer for `entity` through HA's websocket, as the frontend does; returns
    /// the events HA sent back (`session`, `answer`, `candidate`, `error`).
    pub fn webrtc_offer(&self, entity: &str, offer: &str) -> Vec<Value> {
        let python = venv().join("bin/python");
        let file = self.config.write("offer.sdp", offer);
        let file = file.to_string_lossy().into_owned();
        let out = Command::new(python)
            .arg(scripts_dir().join("webrtc_offer.py"))
            .args([
                "--url",
                &self.url,
                "--token",
                &self.token,
                "--entity",
                entity,
            ])
            .args(["--offer-file", &file])
            .output()
            .expect("cannot run webrtc_offer.py");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// `GET /api/<path>` as JSON (`None` for 404).
    pub fn get(&self, path: &str) -> Option<Value> {
        let (status, _, body) = self.get_bytes(path);
        if status == 404 {
            return None;
        }
        assert!((200..300).contains(&status), "GET {path}: {status}");
        Some(serde_json::from_slice(&body).expect("not JSON"))
    }

    /// `GET /api/<path>` as bytes: (status, content type, body).
    pub fn get_bytes(&self, path: &str) -> (u16, String, Vec<u8>) {
        self.runtime.block_on(async {
            let response = self
                .http
                .get(format!("{}/api/{path}", self.url))
                .bearer_auth(&self.token)
                .send()
                .await
                .expect("Home Assistant does not answer");
            let status = response.status().as_u16();
            let kind = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = response.bytes().await.unwrap_or_default().to_vec();
            (status, kind, body)
        })
    }

    /// Sends one websocket command (as the frontend does) and returns its `result`; panics
    /// with the error Home Assistant gave.
    pub fn ws_command(&self, command: Value) -> Value {
        let url = format!("{}/api/websocket", self.url.replace("http://", "ws://"));
        self.runtime.block_on(async {
            let mut ws = authenticated_socket(&url, &self.token).await;
            let text = |v: Value| Message::Text(v.to_string().into());
            let mut command = command;
            command["id"] = json!(1);
            ws.send(text(command.clone())).await.unwrap();
            let answer = loop {
                let reply = match ws.next().await {
                    Some(Ok(Message::Text(reply))) => reply,
                    Some(Ok(_)) => continue,
                    _ => panic!("the websocket closed before answering {command}"),
                };
                let reply: Value = serde_json::from_str(&reply).unwrap_or(Value::Null);
                if reply["type"] == "result" && reply["id"] == 1 {
                    break reply;
                }
            };
            let _ = ws.close(None).await;
            assert_eq!(answer["success"], true, "{command}: {answer}");
            answer["result"].clone()
        })
    }

    /// `POST /api/<path>` with a JSON body; panics on an HTTP error, with the answer.
    pub fn post(&self, path: &str, body: Value) -> Value {
        self.runtime.block_on(async {
            let response = self
                .http
                .post(format!("{}/api/{path}", self.url))
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await
                .expect("Home Assistant does not answer");
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            assert!(status.is_success(), "POST {path} {body}: {status} {text}");
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        })
    }

    /// Calls a service, as the frontend or an automation would.
    pub fn call_service(&self, domain: &str, service: &str, data: Value) {
        self.post(&format!("services/{domain}/{service}"), data);
    }

    /// Renders a template in Home Assistant.
    pub fn template(&self, template: &str) -> String {
        match self.post("template", json!({ "template": template })) {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }

    /// An entity's state object, if it exists.
    pub fn state(&self, entity_id: &str) -> Option<Value> {
        self.get(&format!("states/{entity_id}"))
    }

    /// Waits until `entity_id`'s state is `want`; panics with the last state after `timeout`.
    pub fn wait_state(&self, entity_id: &str, want: &str, timeout: Duration) -> Value {
        self.wait_state_by(entity_id, want, timeout, |state| state == want)
    }

    /// Waits until `entity_id`'s state is the number `want` (`50` and `50.0` are the same).
    pub fn wait_number(&self, entity_id: &str, want: f64, timeout: Duration) -> Value {
        self.wait_state_by(entity_id, &want.to_string(), timeout, |state| {
            state.parse::<f64>().is_ok_and(|v| (v - want).abs() < 1e-9)
        })
    }

    fn wait_state_by(
        &self,
        entity_id: &str,
        want: &str,
        timeout: Duration,
        test: impl Fn(&str) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.state(entity_id);
            if let Some(state) = &now
                && state["state"].as_str().is_some_and(&test)
            {
                return state.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "{entity_id} never became {want:?} within {timeout:?}; last: {now:#?}\n--- HA log tail ---\n{}",
                    tail(&self.log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Home Assistant's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.path().join("home-assistant.log")).unwrap_or_default()
    }

    /// Registers a phone the way the companion app does (`POST /api/mobile_app/registrations`)
    /// and opens its local push channel; returns its device id and a receiver of the
    /// notifications Home Assistant pushes to it.
    pub fn register_phone(&self, name: &str) -> Phone {
        let registration = self.post(
            "mobile_app/registrations",
            json!({
                "device_id": format!("vigil-test-{}", fastrand::u32(..)),
                "app_id": "io.homeassistant.companion.android",
                "app_name": "Home Assistant",
                "app_version": "2025.4.0",
                "device_name": name,
                "manufacturer": "Vigil",
                "model": "Test phone",
                "os_name": "Android",
                "os_version": "14",
                "supports_encryption": false,
                "app_data": {"push_websocket_channel": true},
            }),
        );
        let webhook_id = registration["webhook_id"]
            .as_str()
            .expect("no webhook_id")
            .to_string();
        let device_id = self.template(&format!("{{{{ device_id('{name}') }}}}"));
        assert!(
            !device_id.is_empty() && device_id != "None",
            "no device for {name}"
        );
        let (sender, notifications) = std::sync::mpsc::channel();
        let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
        let (hang_up_tx, mut hang_up) = tokio::sync::oneshot::channel::<()>();
        let ws_url = format!("{}/api/websocket", self.url.replace("http://", "ws://"));
        let token = self.token.clone();
        let webhook = webhook_id.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut ws = authenticated_socket(&ws_url, &token).await;
                let send = |v: Value| Message::Text(v.to_string().into());
                ws.send(send(json!({
                    "id": 1,
                    "type": "mobile_app/push_notification_channel",
                    "webhook_id": webhook,
                    "support_confirm": false,
                })))
                .await
                .unwrap();
                loop {
                    let message = tokio::select! {
                        message = ws.next() => message,
                        _ = &mut hang_up => {
                            let _ = ws.close(None).await;
                            return;
                        }
                    };
                    let Some(Ok(message)) = message else { return };
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    match value["type"].as_str() {
                        Some("result") if value["id"] == 1 => {
                            let _ = subscribed_tx.send(value["success"] == true);
                        }
                        // The test dropped the receiver: done.
                        Some("event")
                            if value["id"] == 1 && sender.send(value["event"].clone()).is_err() =>
                        {
                            return;
                        }
                        _ => {}
                    }
                }
            });
        });
        assert_eq!(
            subscribed.recv_timeout(Duration::from_secs(10)),
            Ok(true),
            "the push channel was not opened"
        );
        Phone {
            device_id,
            webhook_id,
            notifications,
            hang_up: Some(hang_up_tx),
        }
    }

    /// Stops Home Assistant by its PID (SIGTERM, then SIGKILL after 10 s).
    fn stop(&mut self) {
        // Not gone, and not a zombie (whoever adopted it may never reap it).
        let alive = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .is_some_and(|s| !s.trim_start().starts_with('Z'))
            })
        };
        if !alive(self.pid) {
            return;
        }
        signal(self.pid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(self.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(self.pid) {
            signal(self.pid, "KILL");
        }
    }
}

impl Drop for HomeAssistant {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A phone registered with the companion app's API.
pub struct Phone {
    pub device_id: String,
    pub webhook_id: String,
    /// Each notification Home Assistant pushes: `{message, title, data, …}`.
    pub notifications: std::sync::mpsc::Receiver<Value>,
    hang_up: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Phone {
    /// Closes the websocket (Home Assistant waits for open connections when it stops).
    fn drop(&mut self) {
        if let Some(hang_up) = self.hang_up.take() {
            let _ = hang_up.send(());
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Home Assistant's websocket at `url`, past `auth_required`, with the auth message sent.
async fn authenticated_socket(url: &str, token: &str) -> Socket {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    let first = loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                break serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
            }
            Some(Ok(_)) => continue,
            _ => panic!("the websocket closed before auth"),
        }
    };
    assert_eq!(first["type"], "auth_required");
    let auth = json!({"type": "auth", "access_token": token});
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .unwrap();
    ws
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
