//! Home Assistant MQTT discovery: the topics Vigil uses and the retained config payloads that make
//! one Home Assistant device per camera, with its ten entities.
//!
//! Entity ids come from the device name and the entity name (`Nursery` + `Crying` →
//! `binary_sensor.nursery_crying`), so the device name is the camera name made readable.
//! Everything here is pure: no I/O, no clock.

use serde::Serialize;
use serde_json::{Value, json};

/// Home Assistant's default discovery prefix.
pub const DISCOVERY_PREFIX: &str = "homeassistant";

/// Where Home Assistant announces itself (`online`) after it (re)connects to the broker.
pub const BIRTH_TOPIC: &str = "homeassistant/status";

/// The node id in discovery topics and the root of Vigil's own topics.
pub const NODE_ID: &str = "vigil";

/// Vigil's availability: `online` while connected, `offline` as the last will and on stop.
pub const AVAILABILITY_TOPIC: &str = "vigil/status";
pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";

/// Binary states and switch payloads (Home Assistant's defaults).
pub const ON: &str = "ON";
pub const OFF: &str = "OFF";

/// A sensor's "no value" (`unknown` in Home Assistant).
pub const NO_VALUE: &str = "None";

/// Every config Vigil has ever retained under the discovery prefix matches this.
pub const CONFIG_SUBSCRIPTION: &str = "homeassistant/+/vigil/+/config";

/// Where Home Assistant sends switch and number commands.
pub const COMMAND_SUBSCRIPTION: &str = "vigil/+/+/set";

/// Where users find Vigil (the `origin` block's support URL).
pub const SUPPORT_URL: &str = "https://github.com/vigil-hub/vigil";

/// The entities of one camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entity {
    /// `binary_sensor`, device class `sound`: a cry is going on.
    Crying,
    /// `sensor`, %: the detector's latest cry score.
    CryScore,
    /// `sensor`, dBFS: the latest sound level.
    SoundLevel,
    /// `binary_sensor`, device class `connectivity`: the camera's stream is up.
    Online,
    /// `switch`: cry detection on or off.
    Detection,
    /// `number`, 0–100 %: how easily a sound counts as a cry.
    Sensitivity,
    /// `image`: the camera's picture at the last cry's onset (JPEG, base64 on its topic).
    LastCry,
    /// `event`: fires `cry_started` and `cry_ended`; its messages are never retained.
    Cry,
    /// `sensor`: cry episodes in the last 12 hours.
    CriesLast12h,
    /// `sensor`, minutes: time spent crying in the last 12 hours.
    CryingTimeLast12h,
}

/// The cry event entity's event types.
pub const CRY_STARTED: &str = "cry_started";
pub const CRY_ENDED: &str = "cry_ended";

impl Entity {
    pub const ALL: [Entity; 10] = [
        Entity::Crying,
        Entity::CryScore,
        Entity::SoundLevel,
        Entity::Online,
        Entity::Detection,
        Entity::Sensitivity,
        Entity::LastCry,
        Entity::Cry,
        Entity::CriesLast12h,
        Entity::CryingTimeLast12h,
    ];

    /// The entity's part of topics and unique ids.
    pub fn key(self) -> &'static str {
        match self {
            Entity::Crying => "crying",
            Entity::CryScore => "cry_score",
            Entity::SoundLevel => "sound_level",
            Entity::Online => "online",
            Entity::Detection => "detection",
            Entity::Sensitivity => "sensitivity",
            Entity::LastCry => "last_cry",
            Entity::Cry => "cry",
            Entity::CriesLast12h => "cries_12h",
            Entity::CryingTimeLast12h => "crying_time_12h",
        }
    }

    /// The Home Assistant platform.
    pub fn component(self) -> &'static str {
        match self {
            Entity::Crying | Entity::Online => "binary_sensor",
            Entity::CryScore
            | Entity::SoundLevel
            | Entity::CriesLast12h
            | Entity::CryingTimeLast12h => "sensor",
            Entity::Detection => "switch",
            Entity::Sensitivity => "number",
            Entity::LastCry => "image",
            Entity::Cry => "event",
        }
    }

    /// The entity's name in Home Assistant (shown after the device name).
    pub fn name(self) -> &'static str {
        match self {
            Entity::Crying => "Crying",
            Entity::CryScore => "Cry score",
            Entity::SoundLevel => "Sound level",
            Entity::Online => "Online",
            Entity::Detection => "Cry detection",
            Entity::Sensitivity => "Cry sensitivity",
            Entity::LastCry => "Last cry",
            Entity::Cry => "Cry",
            Entity::CriesLast12h => "Cries in the last 12 h",
            Entity::CryingTimeLast12h => "Crying time in the last 12 h",
        }
    }

    /// The entity id Home Assistant gives it, such as `binary_sensor.nursery_crying`.
    pub fn entity_id(self, camera: &str) -> String {
        let name = self.name().to_ascii_lowercase().replace(' ', "_");
        format!("{}.{camera}_{name}", self.component())
    }

    /// Whether Home Assistant sends commands to it.
    pub fn takes_commands(self) -> bool {
        matches!(self, Entity::Detection | Entity::Sensitivity)
    }

    /// An event's messages fire it when they arrive: never retained, never sent again after a
    /// reconnect (a replayed event would fire again).
    pub fn is_event(self) -> bool {
        self == Entity::Cry
    }

    /// Crying, score and level mean something only while Vigil listens: they are unavailable
    /// while the camera is offline or detection is off.
    fn needs_listening(self) -> bool {
        matches!(self, Entity::Crying | Entity::CryScore | Entity::SoundLevel)
    }

    fn from_key(key: &str) -> Option<Entity> {
        Entity::ALL.into_iter().find(|e| e.key() == key)
    }
}

/// `vigil/<camera>/<entity>`: where the entity's state is retained.
pub fn state_topic(camera: &str, entity: Entity) -> String {
    format!("{NODE_ID}/{camera}/{}", entity.key())
}

/// `vigil/<camera>/<entity>/set`: where Home Assistant sends commands.
pub fn command_topic(camera: &str, entity: Entity) -> String {
    format!("{}/set", state_topic(camera, entity))
}

/// `homeassistant/<component>/vigil/<camera>_<entity>/config`.
pub fn config_topic(camera: &str, entity: Entity) -> String {
    format!(
        "{DISCOVERY_PREFIX}/{}/{NODE_ID}/{camera}_{}/config",
        entity.component(),
        entity.key()
    )
}

/// The camera and entity a command topic is for.
pub fn parse_command_topic(topic: &str) -> Option<(&str, Entity)> {
    let rest = topic.strip_prefix(NODE_ID)?.strip_prefix('/')?;
    let rest = rest.strip_suffix("/set")?;
    let (camera, key) = rest.split_once('/')?;
    let entity = Entity::from_key(key).filter(|e| e.takes_commands())?;
    (!camera.is_empty()).then_some((camera, entity))
}

/// True for a discovery config topic under Vigil's node id.
pub fn is_config_topic(topic: &str) -> bool {
    let mut parts = topic.split('/');
    parts.next() == Some(DISCOVERY_PREFIX)
        && parts.next().is_some_and(|c| !c.is_empty())
        && parts.next() == Some(NODE_ID)
        && parts.next().is_some_and(|o| !o.is_empty())
        && parts.next() == Some("config")
        && parts.next().is_none()
}

/// What Home Assistant shows about one camera's device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraDevice {
    /// The camera's name from the options (`[a-z0-9_]`).
    pub camera: String,
    /// Such as "RTSP camera" or "Demo camera".
    pub model: String,
    /// The panel, such as `homeassistant://hassio/ingress/<slug>`; `None` when no URL would work.
    pub panel_url: Option<String>,
}

impl CameraDevice {
    /// `baby_room` → `Baby room`: readable, and Home Assistant slugifies it back to `baby_room`.
    pub fn display_name(&self) -> String {
        let spaced = self.camera.replace('_', " ");
        let mut chars = spaced.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => spaced,
        }
    }
}

#[derive(Serialize)]
struct Device<'a> {
    identifiers: [String; 1],
    name: String,
    manufacturer: &'static str,
    model: &'a str,
    sw_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    configuration_url: Option<&'a str>,
}

#[derive(Serialize)]
struct Availability {
    topic: String,
    payload_available: &'static str,
    payload_not_available: &'static str,
}

/// The retained discovery config of one entity.
pub fn config_payload(device: &CameraDevice, entity: Entity) -> Value {
    let camera = device.camera.as_str();
    let mut availability = vec![Availability {
        topic: AVAILABILITY_TOPIC.to_string(),
        payload_available: ONLINE,
        payload_not_available: OFFLINE,
    }];
    if entity.needs_listening() {
        for gate in [Entity::Online, Entity::Detection] {
            availability.push(Availability {
                topic: state_topic(camera, gate),
                payload_available: ON,
                payload_not_available: OFF,
            });
        }
    }
    let mut config = json!({
        "name": entity.name(),
        "unique_id": format!("{NODE_ID}_{camera}_{}", entity.key()),
        "state_topic": state_topic(camera, entity),
        "availability": availability,
        "availability_mode": "all",
        "qos": 1,
        "device": Device {
            identifiers: [format!("{NODE_ID}_{camera}")],
            name: device.display_name(),
            manufacturer: "Vigil",
            model: &device.model,
            sw_version: env!("CARGO_PKG_VERSION"),
            configuration_url: device.panel_url.as_deref(),
        },
        "origin": {
            "name": "Vigil",
            "sw_version": env!("CARGO_PKG_VERSION"),
            "support_url": SUPPORT_URL,
        },
    });
    let extra = match entity {
        Entity::Crying => json!({ "device_class": "sound", "icon": "mdi:baby-face-outline" }),
        Entity::CryScore => json!({
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "icon": "mdi:chart-bell-curve-cumulative",
        }),
        // No device class fits: sound_pressure is for dB SPL, and dBFS is relative to the
        // microphone's full scale. A sensor with no device class may carry any unit.
        Entity::SoundLevel => json!({
            "unit_of_measurement": "dBFS",
            "state_class": "measurement",
            "suggested_display_precision": 1,
            "icon": "mdi:volume-high",
        }),
        Entity::Online => {
            json!({ "device_class": "connectivity", "entity_category": "diagnostic" })
        }
        Entity::Detection => json!({
            "command_topic": command_topic(camera, entity),
            "entity_category": "config",
            "icon": "mdi:ear-hearing",
        }),
        Entity::Sensitivity => json!({
            "command_topic": command_topic(camera, entity),
            "min": 0,
            "max": 100,
            "step": 1,
            "mode": "slider",
            "unit_of_measurement": "%",
            "entity_category": "config",
            "icon": "mdi:tune-vertical",
        }),
        // Base64, so the JPEG travels as text; Home Assistant decodes it.
        Entity::LastCry => json!({
            "image_topic": state_topic(camera, entity),
            "content_type": "image/jpeg",
            "image_encoding": "b64",
            "icon": "mdi:image-filter-center-focus",
        }),
        // The payload is JSON: `event_type` and the episode's details as attributes.
        Entity::Cry => json!({
            "event_types": [CRY_STARTED, CRY_ENDED],
            "icon": "mdi:emoticon-cry-outline",
        }),
        Entity::CriesLast12h => json!({
            "state_class": "measurement",
            "icon": "mdi:counter",
        }),
        Entity::CryingTimeLast12h => json!({
            "device_class": "duration",
            "unit_of_measurement": "min",
            "state_class": "measurement",
            "suggested_display_precision": 0,
            "icon": "mdi:timer-sand",
        }),
    };
    if let (Value::Object(config), Value::Object(extra)) = (&mut config, extra) {
        config.extend(extra);
        if entity == Entity::LastCry {
            // An image has no state topic: its image_topic carries the picture.
            config.remove("state_topic");
        }
    }
    config
}

/// The config topics and payloads of every entity of `device`.
pub fn announcements(device: &CameraDevice) -> Vec<(String, String)> {
    Entity::ALL
        .into_iter()
        .map(|e| {
            (
                config_topic(&device.camera, e),
                config_payload(device, e).to_string(),
            )
        })
        .collect()
}

/// Every topic Vigil retains for `camera` (configs and states; an event's topic holds
/// nothing), so a removed camera leaves nothing behind.
pub fn retained_topics(camera: &str) -> Vec<String> {
    Entity::ALL
        .into_iter()
        .flat_map(|e| {
            let state = (!e.is_event()).then(|| state_topic(camera, e));
            std::iter::once(config_topic(camera, e)).chain(state)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nursery(panel: Option<&str>) -> CameraDevice {
        CameraDevice {
            camera: "baby_room".into(),
            model: "RTSP camera".into(),
            panel_url: panel.map(str::to_string),
        }
    }

    fn check(entity: Entity, expected: Value) {
        let got = config_payload(
            &nursery(Some("homeassistant://hassio/ingress/x_vigil")),
            entity,
        );
        let Value::Object(expected) = expected else {
            panic!("expected an object")
        };
        for (key, want) in expected {
            assert_eq!(got.get(&key), Some(&want), "{entity:?}.{key} in {got:#}");
        }
    }

    #[test]
    fn every_entity_carries_what_home_assistant_needs() {
        for entity in Entity::ALL {
            let config = config_payload(&nursery(None), entity);
            let topic = if entity == Entity::LastCry {
                "image_topic"
            } else {
                "state_topic"
            };
            for key in [
                "name",
                "unique_id",
                topic,
                "availability",
                "device",
                "origin",
            ] {
                assert!(
                    config.get(key).is_some(),
                    "{entity:?} lacks {key}: {config:#}"
                );
            }
            assert_eq!(config["device"]["identifiers"], json!(["vigil_baby_room"]));
            assert_eq!(config["device"]["name"], "Baby room");
            assert_eq!(config["device"]["manufacturer"], "Vigil");
            assert_eq!(config["origin"]["name"], "Vigil");
            assert_eq!(config["availability"][0]["topic"], AVAILABILITY_TOPIC);
            // Without a panel URL that works, none is given (Home Assistant rejects a bad one).
            assert!(config["device"].get("configuration_url").is_none());
            assert_eq!(
                config.get("command_topic").is_some(),
                entity.takes_commands()
            );
        }
    }

    #[test]
    fn each_entity_has_its_class_unit_and_topics() {
        check(
            Entity::Crying,
            json!({
                "unique_id": "vigil_baby_room_crying",
                "state_topic": "vigil/baby_room/crying",
                "device_class": "sound",
                "availability_mode": "all",
                "availability": [
                    {"topic": "vigil/status", "payload_available": "online", "payload_not_available": "offline"},
                    {"topic": "vigil/baby_room/online", "payload_available": "ON", "payload_not_available": "OFF"},
                    {"topic": "vigil/baby_room/detection", "payload_available": "ON", "payload_not_available": "OFF"},
                ],
            }),
        );
        check(
            Entity::CryScore,
            json!({"unit_of_measurement": "%", "state_class": "measurement"}),
        );
        check(
            Entity::SoundLevel,
            json!({"unit_of_measurement": "dBFS", "state_class": "measurement"}),
        );
        check(
            Entity::Online,
            json!({
                "device_class": "connectivity",
                "availability": [{"topic": "vigil/status", "payload_available": "online", "payload_not_available": "offline"}],
            }),
        );
        check(
            Entity::Detection,
            json!({"command_topic": "vigil/baby_room/detection/set", "entity_category": "config"}),
        );
        check(
            Entity::Sensitivity,
            json!({"command_topic": "vigil/baby_room/sensitivity/set", "min": 0, "max": 100, "step": 1}),
        );
        check(
            Entity::LastCry,
            json!({
                "image_topic": "vigil/baby_room/last_cry",
                "content_type": "image/jpeg",
                "image_encoding": "b64",
                "availability": [{"topic": "vigil/status", "payload_available": "online", "payload_not_available": "offline"}],
            }),
        );
        assert!(
            config_payload(&nursery(None), Entity::LastCry)
                .get("state_topic")
                .is_none()
        );
        // The event: its two types on a topic of its own, available while Vigil runs (a cry
        // that ended as the camera went offline still fires `cry_ended`).
        check(
            Entity::Cry,
            json!({
                "unique_id": "vigil_baby_room_cry",
                "state_topic": "vigil/baby_room/cry",
                "event_types": ["cry_started", "cry_ended"],
                "availability": [{"topic": "vigil/status", "payload_available": "online", "payload_not_available": "offline"}],
            }),
        );
        check(
            Entity::CriesLast12h,
            json!({
                "name": "Cries in the last 12 h",
                "state_topic": "vigil/baby_room/cries_12h",
                "state_class": "measurement",
                "availability": [{"topic": "vigil/status", "payload_available": "online", "payload_not_available": "offline"}],
            }),
        );
        check(
            Entity::CryingTimeLast12h,
            json!({
                "name": "Crying time in the last 12 h",
                "state_topic": "vigil/baby_room/crying_time_12h",
                "device_class": "duration",
                "unit_of_measurement": "min",
                "state_class": "measurement",
            }),
        );
        for entity in [Entity::Cry, Entity::CriesLast12h, Entity::CryingTimeLast12h] {
            assert!(
                config_payload(&nursery(None), entity)
                    .get("command_topic")
                    .is_none()
            );
        }
        let config = config_payload(
            &nursery(Some("homeassistant://hassio/ingress/x_vigil")),
            Entity::Crying,
        );
        assert_eq!(
            config["device"]["configuration_url"],
            "homeassistant://hassio/ingress/x_vigil"
        );
    }

    #[test]
    fn topics_and_ids_are_stable() {
        assert_eq!(
            config_topic("nursery", Entity::Crying),
            "homeassistant/binary_sensor/vigil/nursery_crying/config"
        );
        assert_eq!(
            Entity::Crying.entity_id("nursery"),
            "binary_sensor.nursery_crying"
        );
        assert_eq!(
            Entity::CryScore.entity_id("nursery"),
            "sensor.nursery_cry_score"
        );
        assert_eq!(
            Entity::Detection.entity_id("nursery"),
            "switch.nursery_cry_detection"
        );
        assert_eq!(
            Entity::Sensitivity.entity_id("nursery"),
            "number.nursery_cry_sensitivity"
        );
        for entity in Entity::ALL {
            assert!(is_config_topic(&config_topic("baby_room", entity)));
        }
        assert!(!is_config_topic("homeassistant/sensor/other/x/config"));
        assert!(!is_config_topic(
            "homeassistant/sensor/vigil/x/config/extra"
        ));
        assert_eq!(
            Entity::CriesLast12h.entity_id("nursery"),
            "sensor.nursery_cries_in_the_last_12_h"
        );
        assert_eq!(
            Entity::CryingTimeLast12h.entity_id("nursery"),
            "sensor.nursery_crying_time_in_the_last_12_h"
        );
        assert_eq!(Entity::Cry.entity_id("nursery"), "event.nursery_cry");
        assert_eq!(
            config_topic("nursery", Entity::Cry),
            "homeassistant/event/vigil/nursery_cry/config"
        );
        // Ten configs and nine states: the event's topic retains nothing.
        let retained = retained_topics("a");
        assert_eq!(retained.len(), 19);
        assert!(!retained.contains(&state_topic("a", Entity::Cry)));
    }

    #[test]
    fn command_topics_parse_back() {
        assert_eq!(
            parse_command_topic("vigil/baby_room/detection/set"),
            Some(("baby_room", Entity::Detection))
        );
        assert_eq!(
            parse_command_topic("vigil/a/sensitivity/set"),
            Some(("a", Entity::Sensitivity))
        );
        for bad in [
            "vigil/a/crying/set",
            "vigil//detection/set",
            "other/a/detection/set",
            "vigil/a/detection",
        ] {
            assert_eq!(parse_command_topic(bad), None, "{bad}");
        }
    }
}
