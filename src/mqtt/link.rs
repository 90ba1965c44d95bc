//! The connection to the broker: polls rumqttc's event loop, reconnects with backoff (slowly when
//! the login is refused, asking the Supervisor for fresh credentials first), keeps
//! [`MqttStatus`] current, and tells the session what happened.
//!
//! It owns no state about cameras; it never publishes anything itself. Each failure is logged
//! once when it starts (at debug while it repeats), with the password masked.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectionError, Event, EventLoop, Outgoing, Packet, Publish};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::MqttStatus;
use super::broker::{Broker, BrokerSource, FailureKind, describe};
use crate::supervisor::Supervisor;

/// What the session hears from the link.
#[derive(Debug)]
pub(super) enum LinkEvent {
    /// A connection (first or again) is up: subscribe and publish everything.
    Connected,
    /// The connection dropped; the link is reconnecting.
    Lost,
    /// A message on a subscribed topic.
    Message(Publish),
}

/// Waits between connection attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// After the first failure; doubles on each failure after that, up to `max`.
    pub first: Duration,
    pub max: Duration,
    /// The same when the broker refuses the login: slower, since only a change of credentials
    /// (or of the broker's users) helps.
    pub first_not_authorized: Duration,
    pub max_not_authorized: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
            first_not_authorized: Duration::from_secs(10),
            max_not_authorized: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The wait before attempt `failures + 1`, with ±20 % jitter so that many clients of a
    /// restarted broker do not all come back at once.
    pub fn delay(&self, kind: FailureKind, failures: u32) -> Duration {
        let (first, max) = match kind {
            FailureKind::NotAuthorized => (self.first_not_authorized, self.max_not_authorized),
            FailureKind::Unreachable => (self.first, self.max),
        };
        let doublings = failures.saturating_sub(1).min(16);
        let base = first.saturating_mul(1 << doublings).min(max);
        base.mul_f64(0.8 + 0.4 * fastrand::f64())
    }
}

pub(super) struct Link {
    pub eventloop: EventLoop,
    pub broker: Broker,
    pub client_id: String,
    /// Asked for new credentials when the broker refuses the old ones.
    pub supervisor: Option<Supervisor>,
    pub backoff: Backoff,
    pub status: Arc<watch::Sender<MqttStatus>>,
    pub events: mpsc::Sender<LinkEvent>,
    /// Ends the link during a wait (shutdown while the broker is away).
    pub stop: CancellationToken,
}

impl Link {
    /// Runs until the session disconnects, drops the client, or `stop` is cancelled.
    pub async fn run(mut self) {
        let mut connected = false;
        let mut failures = 0u32;
        let mut last_failure: Option<String> = None;
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let address = self.broker.address();
                    match failures {
                        0 => tracing::info!("connected to the MQTT broker at {address}"),
                        n => tracing::info!(
                            "connected to the MQTT broker at {address} after {n} failed attempt{}",
                            if n == 1 { "" } else { "s" }
                        ),
                    }
                    connected = true;
                    failures = 0;
                    last_failure = None;
                    self.status
                        .send_replace(MqttStatus::Connected { broker: address });
                    if self.events.send(LinkEvent::Connected).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if self.events.send(LinkEvent::Message(publish)).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(ConnectionError::RequestsDone) => return,
                Err(error) => {
                    if self.stop.is_cancelled() {
                        return;
                    }
                    let failure = describe(&error, &self.broker);
                    let address = self.broker.address();
                    if connected {
                        connected = false;
                        tracing::warn!(
                            "lost the connection to the MQTT broker at {address}: {}; reconnecting",
                            failure.text
                        );
                        last_failure = Some(failure.text.clone());
                        if self.events.send(LinkEvent::Lost).await.is_err() {
                            return;
                        }
                    }
                    failures += 1;
                    let wait = self.backoff.delay(failure.kind, failures);
                    let line = format!(
                        "cannot connect to the MQTT broker at {address}: {}; retrying in {:.1} s",
                        failure.text,
                        wait.as_secs_f32()
                    );
                    if last_failure.as_deref() == Some(failure.text.as_str()) {
                        tracing::debug!("{line} (attempt {failures})");
                    } else {
                        tracing::warn!("{line}");
                    }
                    self.status.send_replace(MqttStatus::Connecting {
                        broker: address,
                        attempts: failures,
                        last_error: Some(failure.text.clone()),
                    });
                    last_failure = Some(failure.text);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.stop.cancelled() => return,
                    }
                    if failure.kind == FailureKind::NotAuthorized {
                        self.refresh_credentials().await;
                    }
                }
            }
        }
    }

    /// After a refused login: the Supervisor may have new credentials (the Mosquitto add-on
    /// was reinstalled, or restarted with new ones).
    async fn refresh_credentials(&mut self) {
        let (BrokerSource::Supervisor, Some(supervisor)) = (self.broker.source, &self.supervisor)
        else {
            return;
        };
        let fresh = match supervisor.mqtt_service().await {
            Ok(service) => Broker::from_service(service),
            Err(e) => {
                tracing::debug!("cannot refresh the MQTT credentials: {e}");
                return;
            }
        };
        if fresh == self.broker {
            return;
        }
        match fresh.client_options(&self.client_id) {
            Ok(options) => {
                tracing::info!(
                    "the Supervisor handed out new MQTT credentials (broker {}); trying them",
                    fresh.address()
                );
                self.eventloop.mqtt_options = options;
                self.broker = fresh;
            }
            Err(e) => tracing::warn!("cannot use the Supervisor's new MQTT broker: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let b = Backoff::default();
        let secs = |kind, n| b.delay(kind, n).as_secs_f64();
        for _ in 0..50 {
            let first = secs(FailureKind::Unreachable, 1);
            assert!((0.8..=1.2).contains(&first), "{first}");
            let fourth = secs(FailureKind::Unreachable, 4);
            assert!((6.4..=9.6).contains(&fourth), "{fourth}");
            let late = secs(FailureKind::Unreachable, 40);
            assert!((24.0..=36.0).contains(&late), "{late}");
            let login = secs(FailureKind::NotAuthorized, 1);
            assert!((8.0..=12.0).contains(&login), "{login}");
            let login_late = secs(FailureKind::NotAuthorized, 1000);
            assert!((240.0..=360.0).contains(&login_late), "{login_late}");
        }
    }
}
