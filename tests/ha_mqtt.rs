//! End to end with a real Home Assistant core and a real mosquitto, the broker handed out by a fake
//! Supervisor as inside Home Assistant OS: Vigil's MQTT part (driven
//! in-process, the camera feeds in the test's hands) makes a device with its entities in Home
//! Assistant, crying turns `binary_sensor.nursery_crying` on and off, Home Assistant's switch and
//! number change Vigil's settings, the blueprint's notification reaches a registered phone, and
//! a killed Vigil leaves the entities unavailable.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::TempDir;
use common::fake_supervisor::{Answers, FakeSupervisor, SLUG, mqtt_service};
use common::home_assistant::HomeAssistant;
use common::mosquitto::{Mosquitto, USER};
use common::mqtt_run::MqttRun;
use serde_json::json;
use vigil::secret::Secret;
use vigil::supervisor::Supervisor;

const PASSWORD: &str = "Ha-Br0ker-Pa55";
const WAIT: Duration = Duration::from_secs(30);
const CAMERA: &str = "cameras:\n  - {name: nursery, url: 'rtsp://127.0.0.1:9/a'}\n";

/// What the test adds to Home Assistant's minimal configuration.
const EXTRA_YAML: &str = "automation: !include automations.yaml\nmobile_app:\n";

fn install_blueprint(config: &Path) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("blueprints/automation/vigil/cry_notification.yaml");
    let target = config.join("blueprints/automation/vigil");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(source, target.join("cry_notification.yaml")).unwrap();
    std::fs::write(config.join("automations.yaml"), "[]\n").unwrap();
}

/// Waits until `test` holds, polling; panics with `what` after `timeout`.
fn wait_until(what: &str, timeout: Duration, test: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !test() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn home_assistant_shows_vigils_entities_and_controls_them() {
    let started = Instant::now();
    let broker = Mosquitto::start(PASSWORD);
    let ha = HomeAssistant::start(EXTRA_YAML, install_blueprint);
    ha.setup_mqtt(broker.port, USER, PASSWORD);
    let ha_ready = started.elapsed();

    // As inside Home Assistant OS: no mqtt options, the broker comes from the Supervisor.
    let supervisor = FakeSupervisor::start(Answers {
        token: "ha-test-token".into(),
        mqtt: Some(mqtt_service(broker.port, USER, PASSWORD, false)),
        mqtt_access: true,
        v2: false,
    });
    let data = TempDir::new("ha-mqtt");
    let run = MqttRun::start_with(
        CAMERA,
        data.path(),
        Some(Supervisor::new(
            &supervisor.url,
            Secret::new("ha-test-token"),
        )),
        |_| {},
    );
    run.set_online("nursery", true);

    // The entities, with their classes and units, on one device.
    let announced = Instant::now();
    let crying = ha.wait_state("binary_sensor.nursery_crying", "off", WAIT);
    let entities_after = announced.elapsed();
    assert_eq!(crying["attributes"]["device_class"], "sound", "{crying:#}");
    assert_eq!(crying["attributes"]["friendly_name"], "Nursery Crying");
    let online = ha.wait_state("binary_sensor.nursery_online", "on", WAIT);
    assert_eq!(online["attributes"]["device_class"], "connectivity");
    let score = ha.wait_state("sensor.nursery_cry_score", "unknown", WAIT);
    assert_eq!(score["attributes"]["unit_of_measurement"], "%");
    assert_eq!(score["attributes"]["state_class"], "measurement");
    let level = ha.wait_state("sensor.nursery_sound_level", "unknown", WAIT);
    assert_eq!(level["attributes"]["unit_of_measurement"], "dBFS");
    assert_eq!(level["attributes"]["state_class"], "measurement");
    ha.wait_state("switch.nursery_cry_detection", "on", WAIT);
    let sensitivity = ha.wait_number("number.nursery_cry_sensitivity", 50.0, WAIT);
    assert_eq!(sensitivity["attributes"]["max"], 100.0);
    let device = "device_id('binary_sensor.nursery_crying')";
    assert_eq!(
        ha.template(&format!("{{{{ device_attr({device}, 'name') }}}}")),
        "Nursery"
    );
    assert_eq!(
        ha.template(&format!("{{{{ device_attr({device}, 'manufacturer') }}}}")),
        "Vigil"
    );
    assert_eq!(
        ha.template(&format!("{{{{ device_entities({device}) | length }}}}")),
        "10"
    );
    // Home Assistant accepted the link to the panel (it drops a config with a bad one).
    assert_eq!(
        ha.template(&format!(
            "{{{{ device_attr({device}, 'configuration_url') }}}}"
        )),
        format!("homeassistant://hassio/ingress/{SLUG}")
    );

    // A cry, and its end.
    let onset = Instant::now();
    run.set_cry("nursery", true, 0.93, -18.04);
    ha.wait_state("binary_sensor.nursery_crying", "on", WAIT);
    let cry_on_after = onset.elapsed();
    ha.wait_number("sensor.nursery_cry_score", 93.0, WAIT);
    ha.wait_number("sensor.nursery_sound_level", -18.0, WAIT);
    run.set_cry("nursery", false, 0.04, -52.3);
    ha.wait_state("binary_sensor.nursery_crying", "off", WAIT);
    ha.wait_number("sensor.nursery_sound_level", -52.3, WAIT);

    // Home Assistant's controls change Vigil's settings; crying is unavailable while off.
    let switch = json!({"entity_id": "switch.nursery_cry_detection"});
    ha.call_service("switch", "turn_off", switch.clone());
    ha.wait_state("switch.nursery_cry_detection", "off", WAIT);
    wait_until("detection off in the settings", WAIT, || {
        run.settings.camera("nursery").is_some_and(|s| !s.detection)
    });
    ha.wait_state("binary_sensor.nursery_crying", "unavailable", WAIT);
    ha.call_service("switch", "turn_on", switch);
    ha.wait_state("binary_sensor.nursery_crying", "off", WAIT);
    ha.call_service(
        "number",
        "set_value",
        json!({"entity_id": "number.nursery_cry_sensitivity", "value": 30}),
    );
    ha.wait_number("number.nursery_cry_sensitivity", 30.0, WAIT);
    wait_until("threshold 0.7 in the settings", WAIT, || {
        run.settings
            .camera("nursery")
            .is_some_and(|s| (s.cry_threshold - 0.7).abs() < 1e-6)
    });

    // The blueprint: a phone gets the notification, with the device's "last cry" picture.
    let phone = ha.register_phone("Test phone");
    let saved = ha.post(
        "config/automation/config/vigil_cry",
        json!({
            "alias": "Vigil cry notification",
            "use_blueprint": {
                "path": "vigil/cry_notification.yaml",
                "input": {
                    "crying_sensor": "binary_sensor.nursery_crying",
                    "camera": "camera.nursery",
                    "notify_device": phone.device_id,
                    "quiet_minutes": 0,
                },
            },
        }),
    );
    assert_eq!(saved["result"], "ok", "{saved}");
    ha.wait_state("automation.vigil_cry_notification", "on", WAIT);
    let onset = Instant::now();
    run.set_cry("nursery", true, 0.88, -20.0);
    let notification = phone
        .notifications
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("no notification; HA log:\n{}", ha.log()));
    let notified_after = onset.elapsed();
    assert_eq!(notification["title"], "Baby is crying", "{notification:#}");
    assert_eq!(notification["message"], "Nursery hears crying");
    assert_eq!(
        notification["data"]["image"],
        "/api/image_proxy/image.nursery_last_cry"
    );
    assert_eq!(notification["data"]["channel"], "Baby crying");
    // Tapping it opens Vigil's panel (the night's cries), on Android and on iOS.
    let panel = format!("/hassio/ingress/{SLUG}");
    assert_eq!(
        notification["data"]["clickAction"], panel,
        "{notification:#}"
    );
    assert_eq!(notification["data"]["url"], panel, "{notification:#}");
    run.set_cry("nursery", false, 0.02, -50.0);
    ha.wait_state("binary_sensor.nursery_crying", "off", WAIT);

    // Vigil dies: the broker's last will makes every entity unavailable.
    let killed = Instant::now();
    run.kill();
    for entity in [
        "binary_sensor.nursery_crying",
        "binary_sensor.nursery_online",
        "sensor.nursery_cry_score",
        "switch.nursery_cry_detection",
        "number.nursery_cry_sensitivity",
    ] {
        ha.wait_state(entity, "unavailable", WAIT);
    }
    let unavailable_after = killed.elapsed();
    println!(
        "HA up and MQTT set up: {ha_ready:?}; entities after {entities_after:?}; cry onset -> \
         HA on: {cry_on_after:?}; -> phone notified: {notified_after:?}; kill -> unavailable: \
         {unavailable_after:?}; whole test {:?}",
        started.elapsed()
    );
    let log = ha.log();
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARNING"))
        .filter(|l| {
            ["mqtt", "automation", "blueprint", "mobile_app"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "Home Assistant complained:\n{}",
        problems.join("\n")
    );
}
