//! An MQTT client for tests: subscribes, records what it receives, publishes what a test (or Home
//! Assistant) would, and reads the broker's retained messages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use super::mosquitto::USER;

/// One message as the probe saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
    pub at: Instant,
}

pub struct Probe {
    client: Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Probe {
    /// Connects to the broker on `port` as `USER` and subscribes to `filters`.
    pub fn connect(port: u16, password: &str, filters: &[&str]) -> Self {
        let mut options = MqttOptions::new(
            format!("probe-{:08x}", fastrand::u32(..)),
            "127.0.0.1",
            port,
        );
        options
            .set_credentials(USER, password)
            .set_keep_alive(Duration::from_secs(30))
            // Room for retained "Last cry" pictures (base64 JPEGs), as Vigil allows itself.
            .set_max_packet_size(8 * 1024 * 1024, 8 * 1024 * 1024);
        let (client, mut connection) = Client::new(options, 100);
        for filter in filters {
            client.subscribe(*filter, QoS::AtLeastOnce).unwrap();
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (connected_tx, connected_rx) = std::sync::mpsc::channel();
        let sink = seen.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = connected_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => sink.lock().unwrap().push(Seen {
                        topic: p.topic.clone(),
                        payload: String::from_utf8_lossy(&p.payload).into_owned(),
                        retain: p.retain,
                        at: Instant::now(),
                    }),
                    Ok(_) => {}
                    // The test ended or dropped the broker: stop quietly.
                    Err(_) => return,
                }
            }
        });
        connected_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the probe could not connect to mosquitto");
        Self { client, seen }
    }

    /// Publishes as Home Assistant (or anyone) would.
    pub fn publish(&self, topic: &str, payload: &str, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
            .unwrap();
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Forgets what was received so far.
    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }

    /// The messages received on `topic`, oldest first.
    pub fn on(&self, topic: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }

    /// Waits for a message on `topic` with `payload`; panics with what was seen after `timeout`.
    pub fn wait_for(&self, topic: &str, payload: &str, timeout: Duration) -> Seen {
        self.wait_until(timeout, &format!("{topic} = {payload:?}"), |m| {
            m.topic == topic && m.payload == payload
        })
    }

    /// Waits for a message matching `test`.
    pub fn wait_until(&self, timeout: Duration, what: &str, test: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.seen().into_iter().find(|m| test(m)) {
                return m;
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = self
                    .seen()
                    .iter()
                    .map(|m| format!("{} = {}", m.topic, short(&m.payload)))
                    .collect();
                panic!("no {what} within {timeout:?}; seen:\n{}", seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The broker's retained messages under `filter` right now: a fresh client subscribes, then
/// publishes a marker to itself; the broker sends the retained messages before the marker.
pub fn retained(port: u16, password: &str, filter: &str) -> BTreeMap<String, String> {
    let marker = format!("test/marker/{:08x}", fastrand::u32(..));
    let probe = Probe::connect(port, password, &[filter, &marker]);
    probe.publish(&marker, "end", false);
    probe.wait_for(&marker, "end", Duration::from_secs(10));
    probe
        .seen()
        .into_iter()
        .filter(|m| m.retain && m.topic != marker)
        .map(|m| (m.topic, m.payload))
        .collect()
}

/// Waits until the retained messages under `filter` pass `test`; panics with them after
/// `timeout`.
pub fn wait_retained(
    port: u16,
    password: &str,
    filter: &str,
    timeout: Duration,
    what: &str,
    test: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = retained(port, password, filter);
        if test(&now) {
            return now;
        }
        if Instant::now() > deadline {
            panic!("retained under {filter} never showed {what} within {timeout:?}: {now:#?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn short(text: &str) -> String {
    match text.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}
