//! The Home Assistant Supervisor's API, as an add-on sees it: the MQTT service's credentials and
//! the add-on's own slug (for the panel's URL).
//!
//! Owns the `SUPERVISOR_TOKEN` (a [`Secret`], never printed) and the HTTP calls to
//! `http://supervisor`. Each failure is a [`SupervisorError`] the caller can branch on: no broker
//! installed, a refused token, a missing `mqtt:want`, or the Supervisor not answering. This
//! module never logs; its callers decide what a failure means for them.

use std::time::Duration;

use serde::Deserialize;

use crate::secret::{Redactor, Secret};

/// Where the Supervisor answers inside an add-on container.
pub const DEFAULT_SUPERVISOR_URL: &str = "http://supervisor";

/// The environment variable holding the add-on's API token (set by the Supervisor).
pub const TOKEN_ENV: &str = "SUPERVISOR_TOKEN";

/// Overrides [`DEFAULT_SUPERVISOR_URL`], for tests and development.
pub const URL_ENV: &str = "SUPERVISOR_URL";

/// How long one call may take; the Supervisor answers in milliseconds when it is up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for the Supervisor's API. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    base: String,
    token: Secret,
    http: reqwest::Client,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("base", &self.base)
            .field("token", &self.token)
            .finish()
    }
}

/// The MQTT service as the Supervisor describes it (`GET /services/mqtt`).
#[derive(Debug, Clone, PartialEq)]
pub struct MqttService {
    pub host: String,
    pub port: u16,
    /// True when the broker expects TLS on `port`.
    pub ssl: bool,
    /// The MQTT protocol version the broker speaks, such as `3.1.1`.
    pub protocol: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The slug of the add-on (app) that provides the broker, such as `core_mosquitto`.
    pub provider: Option<String>,
}

/// Why the Supervisor did not hand out what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// The service exists but no add-on provides it: no MQTT broker is installed.
    #[error(
        "the Supervisor has no MQTT broker to offer ({0}); install and start the Mosquitto \
         broker add-on, or set mqtt.host in the options"
    )]
    NotEnabled(String),
    /// The token was missing or not accepted.
    #[error(
        "the Supervisor refused the add-on's token (HTTP {status}); restart the add-on so the \
         Supervisor hands it a fresh SUPERVISOR_TOKEN"
    )]
    BadToken { status: u16 },
    /// The token is fine but the add-on may not use the service.
    #[error(
        "the Supervisor denies access to the MQTT service ({0}); the add-on's config.yaml must \
         declare `services: [mqtt:want]`"
    )]
    NoAccess(String),
    /// No answer at all (the Supervisor is restarting, or this is not an add-on).
    #[error("cannot reach the Supervisor at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// An answer that does not look like the Supervisor's.
    #[error("unexpected answer from the Supervisor ({0})")]
    BadAnswer(String),
}

/// The Supervisor's envelope: `{"result": "ok"|"error", "data": …, "message": …}`.
#[derive(Debug, Deserialize)]
struct Envelope<T> {
    result: String,
    data: Option<T>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawMqttService {
    host: String,
    port: u16,
    #[serde(default)]
    ssl: bool,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// `addon` in the v1 API; `app` with the `/v2` flag.
    #[serde(default, alias = "app")]
    addon: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawSelfInfo {
    slug: String,
}

impl Supervisor {
    /// A client for `base_url` with `token`.
    pub fn new(base_url: &str, token: Secret) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // The Supervisor is on the add-on's own network; never send its token to a proxy.
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self {
            base: base_url.trim_end_matches('/').to_string(),
            token,
            http,
        }
    }

    /// The client the add-on environment describes: `SUPERVISOR_TOKEN`, and `SUPERVISOR_URL` or
    /// `http://supervisor`. `None` outside an add-on (no token).
    pub fn from_env() -> Option<Self> {
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty())?;
        let url = std::env::var(URL_ENV)
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_SUPERVISOR_URL.to_string());
        Some(Self::new(&url, Secret::new(token.trim())))
    }

    /// The base URL (no secret in it).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The add-on's token, for calls to the Supervisor itself (its proxy to Home Assistant's
    /// API included) and nowhere else.
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// `GET /services/mqtt`: the broker's address and the credentials made for this add-on.
    pub async fn mqtt_service(&self) -> Result<MqttService, SupervisorError> {
        let raw: RawMqttService = self.get("/services/mqtt").await?;
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(MqttService {
            host: raw.host,
            port: raw.port,
            ssl: raw.ssl,
            protocol: nonempty(raw.protocol),
            username: nonempty(raw.username),
            password: nonempty(raw.password).map(Secret::new),
            provider: nonempty(raw.addon),
        })
    }

    /// `GET /addons/self/info`: the add-on's slug as the Supervisor knows it (with the
    /// repository's prefix, such as `a0d7b954_vigil`).
    pub async fn self_slug(&self) -> Result<String, SupervisorError> {
        let info: RawSelfInfo = self.get("/addons/self/info").await?;
        Ok(info.slug)
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, SupervisorError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: reqwest::Error| SupervisorError::Unreachable {
            url: url.clone(),
            reason: self.redact(&error_chain(&e)),
        };
        let response = self
            .http
            .get(&url)
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(unreachable)?;
        interpret(status, &body).map_err(|e| match e {
            SupervisorError::BadAnswer(what) => {
                SupervisorError::BadAnswer(format!("{path}: {}", self.redact(&what)))
            }
            other => other,
        })
    }

    fn redact(&self, text: &str) -> String {
        let mut redactor = Redactor::new();
        redactor.add(self.token.expose());
        redactor.redact(text)
    }
}

/// Turns the Supervisor's HTTP status and body into data or a [`SupervisorError`].
fn interpret<T: serde::de::DeserializeOwned>(
    status: u16,
    body: &str,
) -> Result<T, SupervisorError> {
    let envelope = serde_json::from_str::<Envelope<serde_json::Value>>(body).ok();
    let message = envelope
        .as_ref()
        .and_then(|e| e.message.clone())
        .unwrap_or_else(|| short(body));
    match status {
        200 => {
            let envelope = envelope
                .ok_or_else(|| SupervisorError::BadAnswer(format!("not JSON: {}", short(body))))?;
            if envelope.result != "ok" {
                return Err(SupervisorError::BadAnswer(format!(
                    "result '{}': {message}",
                    envelope.result
                )));
            }
            let data = envelope
                .data
                .ok_or_else(|| SupervisorError::BadAnswer("no data in the answer".into()))?;
            serde_json::from_value(data)
                .map_err(|e| SupervisorError::BadAnswer(format!("unexpected data: {e}")))
        }
        // No token, or one the Supervisor does not know.
        401 => Err(SupervisorError::BadToken { status }),
        403 if message.to_ascii_lowercase().contains("no access") => {
            Err(SupervisorError::NoAccess(message))
        }
        403 => Err(SupervisorError::BadToken { status }),
        // Older Supervisors answer every APIError, "No access" included, with 400.
        400 if message.to_ascii_lowercase().contains("no access") => {
            Err(SupervisorError::NoAccess(message))
        }
        400 if message.to_ascii_lowercase().contains("not enabled") => {
            Err(SupervisorError::NotEnabled(message))
        }
        _ => Err(SupervisorError::BadAnswer(format!(
            "HTTP {status}: {message}"
        ))),
    }
}

/// The first 200 characters of an answer, for an error message.
pub fn short(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &body[..i]),
        None => body.to_string(),
    }
}

/// An error and its causes on one line (reqwest's `Display` hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: u16, body: &str, expected: Result<MqttService, SupervisorError>) {
        let got = interpret::<RawMqttService>(status, body).map(|raw| MqttService {
            host: raw.host,
            port: raw.port,
            ssl: raw.ssl,
            protocol: raw.protocol,
            username: raw.username,
            password: raw.password.map(Secret::new),
            provider: raw.addon,
        });
        assert_eq!(got, expected, "HTTP {status} {body}");
    }

    fn service(provider: &str) -> MqttService {
        MqttService {
            host: "core-mosquitto".into(),
            port: 1883,
            ssl: false,
            protocol: Some("3.1.1".into()),
            username: Some("addons".into()),
            password: Some(Secret::new("Eech7ohp")),
            provider: Some(provider.into()),
        }
    }

    #[test]
    fn the_supervisors_answers_are_understood() {
        let ok = r#"{"result":"ok","data":{"host":"core-mosquitto","port":1883,"ssl":false,
            "protocol":"3.1.1","username":"addons","password":"Eech7ohp","addon":"core_mosquitto"}}"#;
        check(200, ok, Ok(service("core_mosquitto")));
        // The `/v2` flag renames `addon` to `app`.
        check(
            200,
            &ok.replace("\"addon\"", "\"app\""),
            Ok(service("core_mosquitto")),
        );
        check(
            400,
            r#"{"result":"error","message":"Service not enabled"}"#,
            Err(SupervisorError::NotEnabled("Service not enabled".into())),
        );
        check(
            403,
            r#"{"result":"error","message":"No access to mqtt service!"}"#,
            Err(SupervisorError::NoAccess(
                "No access to mqtt service!".into(),
            )),
        );
        check(
            400,
            r#"{"result":"error","message":"No access to mqtt service!"}"#,
            Err(SupervisorError::NoAccess(
                "No access to mqtt service!".into(),
            )),
        );
        check(
            403,
            "403: Forbidden",
            Err(SupervisorError::BadToken { status: 403 }),
        );
        check(
            401,
            "401: Unauthorized",
            Err(SupervisorError::BadToken { status: 401 }),
        );
    }

    #[test]
    fn odd_answers_are_named() {
        let Err(SupervisorError::BadAnswer(what)) =
            interpret::<RawMqttService>(200, "<html>hello</html>")
        else {
            panic!("HTML accepted");
        };
        assert!(what.contains("not JSON"), "{what}");
        let Err(SupervisorError::BadAnswer(what)) =
            interpret::<RawMqttService>(200, r#"{"result":"ok","data":{"port":1883}}"#)
        else {
            panic!("no host accepted");
        };
        assert!(what.contains("host"), "{what}");
        let Err(SupervisorError::BadAnswer(what)) = interpret::<RawMqttService>(502, "Bad Gateway")
        else {
            panic!("502 accepted");
        };
        assert!(what.contains("502"), "{what}");
    }

    #[test]
    fn the_token_never_prints() {
        let s = Supervisor::new("http://supervisor/", Secret::new("tok3n-value"));
        assert!(!format!("{s:?}").contains("tok3n-value"));
        assert_eq!(s.url(), "http://supervisor");
    }
}
