//! What the broker must hold: Vigil's availability, each camera's `online` as it really is,
//! crying OFF (no cry is going on when this is asked), and every camera's discovery configs;
//! and the soak's broker faults (a restart, Home Assistant's birth message) checked against it.

use std::time::Duration;

use super::common::mqtt_probe::{Probe, retained};
use super::{PASSWORD, Soak, within};

/// Entities per camera, each with a retained discovery config.
const ENTITIES_PER_CAMERA: usize = vigil::mqtt::discovery::Entity::ALL.len();

/// `Ok` when the retained messages match: `vigil/status` is `online` when `running` (else
/// `offline`), and for each (camera, up) `vigil/<camera>/online` is ON when up, crying OFF.
pub fn holds(
    port: u16,
    password: &str,
    running: bool,
    cameras: &[(&str, bool)],
) -> Result<(), String> {
    let now = retained(port, password, "#");
    let mut wrong = Vec::new();
    let mut expect = |topic: String, payload: &str| {
        let found = now.get(&topic).map(String::as_str);
        if found != Some(payload) {
            wrong.push(format!("{topic} is {found:?}, the truth is {payload:?}"));
        }
    };
    expect(
        "vigil/status".into(),
        if running { "online" } else { "offline" },
    );
    for (camera, up) in cameras {
        expect(
            format!("vigil/{camera}/online"),
            if *up { "ON" } else { "OFF" },
        );
        expect(format!("vigil/{camera}/crying"), "OFF");
    }
    let configs = now
        .keys()
        .filter(|t| t.starts_with("homeassistant/") && t.ends_with("/config"))
        .count();
    if configs != cameras.len() * ENTITIES_PER_CAMERA {
        wrong.push(format!(
            "{configs} discovery configs retained, expected {}",
            cameras.len() * ENTITIES_PER_CAMERA
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

impl Soak {
    /// Home Assistant's birth message makes Vigil publish everything again: a discovery config
    /// and a state removed from the broker come back.
    pub fn birth(&mut self) {
        self.record.fault("Home Assistant birth");
        let port = self.broker.port;
        let configs = retained(port, PASSWORD, "homeassistant/+/vigil/+/config");
        let Some(config) = configs.keys().next().cloned() else {
            self.record
                .fail("no discovery configs retained before the birth message".into());
            return;
        };
        let state = format!("vigil/{}/online", self.cameras[0].name);
        let ha = Probe::connect(port, PASSWORD, &[]);
        ha.publish(&config, "", true);
        ha.publish(&state, "", true);
        std::thread::sleep(Duration::from_millis(300));
        ha.publish("homeassistant/status", "online", false);
        let back = within(Duration::from_secs(20), || {
            let now = retained(port, PASSWORD, "#");
            now.contains_key(&config) && now.get(&state).is_some_and(|s| s == "ON")
        });
        match back {
            Some(took) => self.record.log(&format!(
                "birth: all published again in {} ms",
                took.as_millis()
            )),
            None => self.record.fail(format!(
                "after Home Assistant's birth {config} or {state} never came back"
            )),
        }
    }

    /// The broker restarts and forgets everything (no persistence); Vigil reconnects and the
    /// broker holds the truth again.
    pub fn restart_broker(&mut self) {
        self.record.fault("broker restarted");
        self.broker.restart();
        let names: Vec<&str> = self.cameras.iter().map(|c| c.name).collect();
        let online: Vec<(&str, bool)> = names.iter().map(|n| (*n, true)).collect();
        let port = self.broker.port;
        match within(Duration::from_secs(30), || {
            holds(port, PASSWORD, true, &online).is_ok()
        }) {
            Some(took) => {
                self.record.log(&format!(
                    "broker restart: the truth retained again in {} ms",
                    took.as_millis()
                ));
                self.record
                    .recoveries
                    .entry("broker restart (MQTT truth)")
                    .or_default()
                    .push(took);
            }
            None => self.record.fail(format!(
                "after the broker restarted: {}",
                holds(port, PASSWORD, true, &online).unwrap_err()
            )),
        }
    }
}
