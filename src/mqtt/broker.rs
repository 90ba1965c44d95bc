//! Which broker, and how to reach it: the `mqtt` options or the Supervisor's MQTT service, the
//! rumqttc options built from that (credentials, last will, TLS), and connection failures told in
//! words a user can act on.
//!
//! The password lives in a [`Secret`] and is exposed only to rumqttc's options here; failures are
//! passed through a [`Redactor`] that knows it. This module does no I/O.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError, LastWill, QoS, StateError, TlsConfiguration};

use super::discovery::{AVAILABILITY_TOPIC, OFFLINE};
use crate::config::MqttOptions as MqttSettings;
use crate::secret::{Redactor, Secret};
use crate::supervisor::MqttService;

/// MQTT's default ports.
pub const DEFAULT_PORT: u16 = 1883;
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// How often the broker hears from Vigil when nothing else is sent; a silent death is noticed
/// (and the last will sent) after 1.5 times this.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Largest packet Vigil accepts. Retained configs read back are about 1 KiB; an oversized packet
/// would make rumqttc drop the connection over and over, so leave plenty of room.
const MAX_INCOMING_PACKET: usize = 256 * 1024;
/// Largest packet Vigil sends: a cry picture (at most [`crate::cry_pictures::MAX_PICTURE_BYTES`],
/// a third more in base64) fits; a packet over the limit would drop the connection, again and
/// again, as the picture is sent again after each reconnect.
pub const MAX_OUTGOING_PACKET: usize = 8 * 1024 * 1024;
const _: () =
    assert!(crate::cry_pictures::MAX_PICTURE_BYTES / 3 * 4 + 64 * 1024 < MAX_OUTGOING_PACKET);

/// How many requests the client queues for the event loop (rumqttc's channel is bounded).
pub const REQUEST_QUEUE: usize = 64;

/// Where the broker's address and credentials came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerSource {
    /// The `mqtt` options.
    Options,
    /// `GET /services/mqtt` on the Supervisor.
    Supervisor,
}

/// A broker to connect to.
#[derive(Debug, Clone, PartialEq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls: bool,
    pub source: BrokerSource,
}

impl Broker {
    /// The broker named in the options, if `mqtt.host` is set.
    pub fn from_options(options: &MqttSettings) -> Option<Broker> {
        let host = options.host.clone()?;
        Some(Broker {
            host,
            port: options.port.unwrap_or(DEFAULT_PORT),
            username: options.username.clone(),
            password: options.password.clone(),
            tls: false,
            source: BrokerSource::Options,
        })
    }

    /// The broker the Supervisor describes.
    pub fn from_service(service: MqttService) -> Broker {
        Broker {
            port: match service.port {
                0 if service.ssl => DEFAULT_TLS_PORT,
                0 => DEFAULT_PORT,
                port => port,
            },
            host: service.host,
            username: service.username,
            password: service.password,
            tls: service.ssl,
            source: BrokerSource::Supervisor,
        }
    }

    /// `host:port`, with `(TLS)` when encrypted: what the log and the panel show.
    pub fn address(&self) -> String {
        let tls = if self.tls { " (TLS)" } else { "" };
        format!("{}:{}{tls}", self.host, self.port)
    }

    /// Masks this broker's password in free text.
    pub fn redactor(&self) -> Redactor {
        let mut redactor = Redactor::new();
        if let Some(password) = &self.password {
            redactor.add(password.expose());
        }
        redactor
    }

    /// rumqttc's options: credentials, a retained `offline` last will on the availability
    /// topic, a clean session, TLS when asked.
    pub fn client_options(&self, client_id: &str) -> Result<rumqttc::MqttOptions, String> {
        let mut options = rumqttc::MqttOptions::new(client_id, &self.host, self.port);
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
            .set_request_channel_capacity(REQUEST_QUEUE)
            .set_last_will(LastWill::new(
                AVAILABILITY_TOPIC,
                OFFLINE,
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(username) = &self.username {
            let password = self.password.as_ref().map_or("", |p| p.expose());
            options.set_credentials(username, password);
        }
        if self.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(tls_config()?));
        }
        Ok(options)
    }

    /// What to check when the broker refuses the login.
    fn login_hint(&self) -> String {
        let user = match &self.username {
            Some(user) => format!("user '{user}'"),
            None => "no user name".to_string(),
        };
        match self.source {
            BrokerSource::Options => format!(
                "{user}; check mqtt.username and mqtt.password in the options, and the broker's \
                 users and ACLs"
            ),
            BrokerSource::Supervisor => format!(
                "{user} from the Supervisor; Vigil asks the Supervisor for fresh credentials \
                 before each retry"
            ),
        }
    }
}

/// TLS with the system's root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` add others), and
/// the broker's host name checked. The crypto provider is named, not guessed, so a second one
/// pulled in by another crate cannot make rustls panic.
fn tls_config() -> Result<TlsConfiguration, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        let errors: Vec<String> = native.errors.iter().map(|e| e.to_string()).collect();
        return Err(format!(
            "no root certificate found for TLS to the broker ({})",
            if errors.is_empty() {
                "install ca-certificates".to_string()
            } else {
                errors.join("; ")
            }
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

/// What kind of failure, which decides how long to wait before the next try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The broker refused the credentials: retrying soon will not help.
    NotAuthorized,
    /// Anything else: the broker is down, restarting or unreachable.
    Unreachable,
}

/// A connection failure, described for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub text: String,
}

/// Describes `error` from connecting to (or talking with) `broker`; secrets are masked.
pub fn describe(error: &ConnectionError, broker: &Broker) -> Failure {
    let unreachable = |text: String| Failure {
        kind: FailureKind::Unreachable,
        text,
    };
    let failure = match error {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword,
        ) => Failure {
            kind: FailureKind::NotAuthorized,
            text: format!(
                "not authorized: the broker refused the login ({})",
                broker.login_hint()
            ),
        },
        ConnectionError::ConnectionRefused(code) => {
            unreachable(format!("the broker refused the connection ({code:?})"))
        }
        ConnectionError::Io(e) => unreachable(describe_io(e, broker)),
        ConnectionError::MqttState(StateError::Io(e)) => {
            unreachable(format!("connection lost ({})", describe_io(e, broker)))
        }
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            unreachable("the broker closed the connection".to_string())
        }
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            unreachable("the broker stopped answering (no ping reply)".to_string())
        }
        ConnectionError::NetworkTimeout => {
            unreachable("no answer from the broker in time (network timeout)".to_string())
        }
        ConnectionError::Tls(e) => unreachable(format!(
            "TLS with the broker failed: {e} (is the port a TLS port, and does the broker's \
             certificate name the host?)"
        )),
        other => unreachable(other.to_string()),
    };
    Failure {
        text: broker.redactor().redact(&failure.text),
        ..failure
    }
}

fn describe_io(e: &std::io::Error, broker: &Broker) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => format!(
            "nothing accepts connections on {}:{} (is the broker running?)",
            broker.host, broker.port
        ),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof => {
            "the broker closed the connection".to_string()
        }
        ErrorKind::TimedOut => "the connection timed out".to_string(),
        _ if e.to_string().contains("lookup") || e.to_string().contains("resolve") => {
            format!("cannot resolve the host name '{}': {e}", broker.host)
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(source: BrokerSource) -> Broker {
        Broker {
            host: "core-mosquitto".into(),
            port: 1883,
            username: Some("addons".into()),
            password: Some(Secret::new("pa55word")),
            tls: false,
            source,
        }
    }

    fn check(error: ConnectionError, kind: FailureKind, words: &str) {
        let failure = describe(&error, &broker(BrokerSource::Options));
        assert_eq!(failure.kind, kind, "{failure:?}");
        assert!(
            failure.text.contains(words),
            "{:?} lacks {words:?}",
            failure.text
        );
        assert!(!failure.text.contains("pa55word"));
    }

    #[test]
    fn failures_read_well() {
        check(
            ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
            FailureKind::NotAuthorized,
            "not authorized",
        );
        check(
            ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword),
            FailureKind::NotAuthorized,
            "mqtt.username",
        );
        check(
            ConnectionError::Io(std::io::ErrorKind::ConnectionRefused.into()),
            FailureKind::Unreachable,
            "is the broker running?",
        );
        check(
            ConnectionError::MqttState(StateError::ConnectionAborted),
            FailureKind::Unreachable,
            "closed the connection",
        );
        check(
            ConnectionError::Io(std::io::Error::other("failed to lookup address: pa55word")),
            FailureKind::Unreachable,
            "***",
        );
    }

    #[test]
    fn brokers_come_from_options_or_the_supervisor() {
        assert_eq!(Broker::from_options(&MqttSettings::default()), None);
        let options = MqttSettings {
            host: Some("10.0.0.5".into()),
            ..Default::default()
        };
        let b = Broker::from_options(&options).unwrap();
        assert_eq!(
            (b.address().as_str(), b.source),
            ("10.0.0.5:1883", BrokerSource::Options)
        );
        let b = Broker::from_service(MqttService {
            host: "core-mosquitto".into(),
            port: 8883,
            ssl: true,
            protocol: None,
            username: Some("addons".into()),
            password: Some(Secret::new("x")),
            provider: None,
        });
        assert!(b.tls);
        assert_eq!(b.address(), "core-mosquitto:8883 (TLS)");
        assert!(!format!("{b:?}").contains("\"x\""));
    }

    #[test]
    fn client_options_carry_the_will_and_credentials() {
        let options = broker(BrokerSource::Supervisor)
            .client_options("vigil-test")
            .unwrap();
        let will = options.last_will().unwrap();
        assert_eq!(will.topic, AVAILABILITY_TOPIC);
        assert_eq!(&will.message[..], OFFLINE.as_bytes());
        assert!(will.retain);
        let login = options.credentials().unwrap();
        assert_eq!(login.username, "addons");
        assert_eq!(
            options.broker_address(),
            ("core-mosquitto".to_string(), 1883)
        );
    }
}
