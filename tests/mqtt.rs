//! Vigil's MQTT part against a real mosquitto (with a password), driven through the library API:
//! what Home Assistant would read on the broker, what happens when Home Assistant sends commands
//! or restarts, when the broker restarts or refuses the login, and when Vigil dies.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TempDir;
use common::mosquitto::Mosquitto;
use common::mqtt_probe::{Probe, retained, wait_retained};
use common::mqtt_run::{MqttRun, broker_options};
use serde_json::Value;
use vigil::mqtt::MqttStatus;
use vigil::mqtt::discovery::{Entity, config_topic, state_topic};

const PASSWORD: &str = "Br0ker-Pa55";
const WAIT: Duration = Duration::from_secs(15);
const TWO_CAMERAS: &str = "cameras:\n  - {name: nursery, url: 'rtsp://127.0.0.1:9/a'}\n  - {name: baby_room, url: 'rtsp://127.0.0.1:9/b'}\n";
const ONE_CAMERA: &str = "cameras:\n  - {name: nursery, url: 'rtsp://127.0.0.1:9/a'}\n";

fn options(broker: &Mosquitto, cameras: &str) -> String {
    format!("{cameras}{}", broker_options(broker.port, PASSWORD))
}

/// A broker, and Vigil connected to it with `cameras`, their configs announced.
fn connected(label: &str, cameras: &str) -> (Mosquitto, TempDir, MqttRun) {
    let broker = Mosquitto::start(PASSWORD);
    let data = TempDir::new(label);
    let run = MqttRun::start(&options(&broker, cameras), data.path());
    run.wait_connected();
    wait_configs(&broker, "nursery");
    (broker, data, run)
}

/// Waits until all of `camera`'s configs are retained, and returns them parsed.
fn wait_configs(broker: &Mosquitto, camera: &str) -> BTreeMap<Entity, Value> {
    let topics: Vec<String> = Entity::ALL
        .iter()
        .map(|e| config_topic(camera, *e))
        .collect();
    let all = wait_retained(
        broker.port,
        PASSWORD,
        "homeassistant/#",
        WAIT,
        "every config",
        |r| topics.iter().all(|t| r.contains_key(t)),
    );
    Entity::ALL
        .into_iter()
        .map(|e| {
            let text = &all[&config_topic(camera, e)];
            let value: Value = serde_json::from_str(text).expect("config is JSON");
            (e, value)
        })
        .collect()
}

fn retained_state(broker: &Mosquitto, camera: &str, entity: Entity) -> Option<String> {
    retained(broker.port, PASSWORD, "vigil/#").remove(&state_topic(camera, entity))
}

fn wait_state(broker: &Mosquitto, camera: &str, entity: Entity, want: &str) {
    let topic = state_topic(camera, entity);
    wait_retained(
        broker.port,
        PASSWORD,
        "vigil/#",
        WAIT,
        &format!("{topic} = {want}"),
        |r| r.get(&topic).map(String::as_str) == Some(want),
    );
}

fn wait_availability(broker: &Mosquitto, want: &str) {
    wait_retained(broker.port, PASSWORD, "vigil/status", WAIT, want, |r| {
        r.get("vigil/status").map(String::as_str) == Some(want)
    });
}

#[test]
fn discovery_announces_each_camera_with_what_home_assistant_needs() {
    let broker = Mosquitto::start(PASSWORD);
    let data = TempDir::new("mqtt-discovery");
    let run = MqttRun::start(&options(&broker, TWO_CAMERAS), data.path());
    run.wait_connected();
    for camera in ["nursery", "baby_room"] {
        let configs = wait_configs(&broker, camera);
        for (entity, config) in &configs {
            let device = &config["device"];
            assert_eq!(
                device["identifiers"][0],
                format!("vigil_{camera}"),
                "{config:#}"
            );
            assert_eq!(device["manufacturer"], "Vigil");
            assert_eq!(device["model"], "RTSP camera");
            assert_eq!(device["sw_version"], env!("CARGO_PKG_VERSION"));
            assert!(device["name"].as_str().is_some_and(|n| !n.is_empty()));
            assert_eq!(config["origin"]["name"], "Vigil");
            assert_eq!(
                config["unique_id"],
                format!("vigil_{camera}_{}", entity.key())
            );
            // The image's picture is on its image_topic; every other entity has a state.
            let topic = if *entity == Entity::LastCry {
                "image_topic"
            } else {
                "state_topic"
            };
            assert_eq!(config[topic], state_topic(camera, *entity));
            assert_eq!(config["availability"][0]["topic"], "vigil/status");
            assert_eq!(
                config["availability"][0]["payload_not_available"],
                "offline"
            );
            assert_eq!(config["name"], entity.name());
        }
        assert_eq!(configs[&Entity::Crying]["device_class"], "sound");
        assert_eq!(configs[&Entity::Online]["device_class"], "connectivity");
        assert_eq!(configs[&Entity::CryScore]["unit_of_measurement"], "%");
        assert_eq!(configs[&Entity::SoundLevel]["unit_of_measurement"], "dBFS");
        assert_eq!(configs[&Entity::SoundLevel]["state_class"], "measurement");
        assert_eq!(
            configs[&Entity::Detection]["command_topic"],
            format!("vigil/{camera}/detection/set")
        );
        assert_eq!(configs[&Entity::Sensitivity]["max"], 100);
    }
    let states = retained(broker.port, PASSWORD, "vigil/#");
    assert_eq!(states["vigil/status"], "online");
    assert_eq!(states["vigil/nursery/crying"], "OFF");
    assert_eq!(states["vigil/nursery/online"], "OFF");
    assert_eq!(states["vigil/nursery/cry_score"], "None");
    assert_eq!(states["vigil/nursery/detection"], "ON");
    assert_eq!(states["vigil/nursery/sensitivity"], "50");
    run.stop();
}

#[test]
fn crying_is_sent_at_once_and_measurements_at_a_bounded_rate() {
    let (broker, _data, run) = connected("mqtt-states", ONE_CAMERA);
    let probe = Probe::connect(broker.port, PASSWORD, &["vigil/nursery/#"]);
    run.set_online("nursery", true);
    probe.wait_for("vigil/nursery/online", "ON", WAIT);
    run.set_cry("nursery", false, 0.01, -60.0);
    probe.wait_for("vigil/nursery/cry_score", "1", WAIT);

    let onset = Instant::now();
    run.set_cry("nursery", true, 0.9, -20.0);
    let on = probe.wait_for("vigil/nursery/crying", "ON", WAIT);
    let latency = on.at.duration_since(onset);
    println!("cry onset -> MQTT ON on the broker: {latency:?}");
    assert!(latency < Duration::from_secs(3), "{latency:?}");
    probe.wait_for("vigil/nursery/cry_score", "90", WAIT);

    // Two seconds of readings every 0.1 s (the detector's pace is 0.48 s), all different.
    probe.clear();
    let burst = Instant::now();
    for i in 0..20 {
        run.set_cry("nursery", true, 0.88 - 0.02 * i as f32, -30.0 + i as f32);
        std::thread::sleep(Duration::from_millis(100));
    }
    let during = Instant::now().duration_since(burst);
    let scores = probe.on("vigil/nursery/cry_score");
    let levels = probe.on("vigil/nursery/sound_level");
    assert!(
        scores.len() <= 1,
        "{} score messages in {during:?}: {scores:?}",
        scores.len()
    );
    assert!(
        levels.len() <= 1,
        "{} level messages in {during:?}: {levels:?}",
        levels.len()
    );
    // The last change still arrives once the interval is up.
    probe.wait_for("vigil/nursery/cry_score", "50", Duration::from_secs(10));
    probe.wait_for("vigil/nursery/sound_level", "-11", Duration::from_secs(10));

    run.set_cry("nursery", false, 0.05, -50.0);
    probe.wait_for("vigil/nursery/crying", "OFF", WAIT);
    probe.wait_for("vigil/nursery/cry_score", "5", WAIT);
    run.set_online("nursery", false);
    probe.wait_for("vigil/nursery/online", "OFF", WAIT);
    run.stop();
}

#[test]
fn switch_and_number_commands_change_the_settings_and_survive_a_restart() {
    let (broker, data, run) = connected("mqtt-commands", ONE_CAMERA);
    let ha = Probe::connect(broker.port, PASSWORD, &["vigil/nursery/#"]);

    ha.publish("vigil/nursery/detection/set", "OFF", false);
    ha.wait_for("vigil/nursery/detection", "OFF", WAIT);
    ha.publish("vigil/nursery/sensitivity/set", "30", false);
    ha.wait_for("vigil/nursery/sensitivity", "30", WAIT);
    let now = run.settings.camera("nursery").unwrap();
    assert!(!now.detection);
    assert!((now.cry_threshold - 0.7).abs() < 1e-6, "{now:?}");

    // Nonsense is refused and the state said again.
    ha.clear();
    ha.publish("vigil/nursery/sensitivity/set", "250", false);
    ha.wait_for("vigil/nursery/sensitivity", "30", WAIT);
    ha.publish("vigil/nursery/detection/set", "maybe", false);
    ha.wait_for("vigil/nursery/detection", "OFF", WAIT);
    run.stop();
    wait_availability(&broker, "offline");

    // A command someone retained is not obeyed at every start.
    ha.publish("vigil/nursery/detection/set", "ON", true);
    wait_retained(
        broker.port,
        PASSWORD,
        "vigil/nursery/detection/set",
        WAIT,
        "the command",
        |r| !r.is_empty(),
    );
    // A new run reads the settings back from the data dir and publishes them.
    let again = MqttRun::start(&options(&broker, ONE_CAMERA), data.path());
    again.wait_connected();
    wait_availability(&broker, "online");
    std::thread::sleep(Duration::from_millis(500));
    ha.publish("vigil/nursery/detection/set", "", true);
    assert_eq!(
        retained_state(&broker, "nursery", Entity::Detection).as_deref(),
        Some("OFF")
    );
    assert_eq!(
        retained_state(&broker, "nursery", Entity::Sensitivity).as_deref(),
        Some("30")
    );
    let kept = again.settings.camera("nursery").unwrap();
    assert!(
        !kept.detection && (kept.cry_threshold - 0.7).abs() < 1e-6,
        "{kept:?}"
    );
    again.stop();
}

#[test]
fn the_last_will_marks_vigil_offline_when_it_dies() {
    let broker = Mosquitto::start(PASSWORD);
    let data = TempDir::new("mqtt-will");
    let run = MqttRun::start(&options(&broker, ONE_CAMERA), data.path());
    run.wait_connected();
    wait_availability(&broker, "online");
    run.kill();
    let died = Instant::now();
    wait_availability(&broker, "offline");
    println!("killed -> retained offline: {:?}", died.elapsed());

    // Back again; then a clean stop says offline itself.
    let run = MqttRun::start(&options(&broker, ONE_CAMERA), data.path());
    run.wait_connected();
    wait_availability(&broker, "online");
    run.stop();
    assert_eq!(
        retained(broker.port, PASSWORD, "vigil/status")["vigil/status"],
        "offline"
    );
}

#[test]
fn home_assistants_birth_message_brings_the_configs_back() {
    let (broker, _data, run) = connected("mqtt-birth", ONE_CAMERA);
    // Someone wipes the retained configs (a broker that lost them, a user clearing topics).
    let ha = Probe::connect(broker.port, PASSWORD, &[]);
    for entity in Entity::ALL {
        ha.publish(&config_topic("nursery", entity), "", true);
    }
    wait_retained(
        broker.port,
        PASSWORD,
        "homeassistant/#",
        WAIT,
        "no config",
        |r| r.is_empty(),
    );
    ha.publish("homeassistant/status", "online", false);
    let configs = wait_configs(&broker, "nursery");
    assert_eq!(configs[&Entity::Crying]["device_class"], "sound");
    run.stop();
}

#[test]
fn a_broker_restart_is_survived_and_everything_published_again() {
    let mut broker = Mosquitto::start(PASSWORD);
    let data = TempDir::new("mqtt-restart");
    let run = MqttRun::start(&options(&broker, ONE_CAMERA), data.path());
    run.wait_connected();
    run.set_online("nursery", true);
    wait_state(&broker, "nursery", Entity::Online, "ON");

    broker.stop();
    run.wait_status("reconnecting", WAIT, |s| {
        matches!(s, MqttStatus::Connecting { .. })
    });
    // While the broker is away the detector keeps talking; only the latest reading matters.
    for i in 0..10_000 {
        run.set_cry("nursery", i % 2 == 0, 0.5, -30.0);
    }
    run.set_cry("nursery", true, 0.95, -12.0);
    // No persistence: the restarted broker has forgotten every retained message.
    broker.restart();
    let probe = Probe::connect(broker.port, PASSWORD, &["vigil/nursery/crying"]);
    run.wait_connected();
    wait_configs(&broker, "nursery");
    wait_availability(&broker, "online");
    wait_state(&broker, "nursery", Entity::Crying, "ON");
    wait_state(&broker, "nursery", Entity::CryScore, "95");
    wait_state(&broker, "nursery", Entity::Online, "ON");
    std::thread::sleep(Duration::from_millis(500));
    let sent = probe.on("vigil/nursery/crying");
    assert!(
        sent.len() <= 2,
        "the backlog was sent: {} messages",
        sent.len()
    );
    run.stop();
}

#[test]
fn a_broker_down_at_start_is_waited_for() {
    let mut broker = Mosquitto::start(PASSWORD);
    broker.stop();
    let data = TempDir::new("mqtt-late-broker");
    let run = MqttRun::start(&options(&broker, ONE_CAMERA), data.path());
    let status = run.wait_status(
        "failing",
        WAIT,
        |s| matches!(s, MqttStatus::Connecting { attempts, .. } if *attempts >= 1),
    );
    let MqttStatus::Connecting { last_error, .. } = status else {
        unreachable!()
    };
    assert!(
        last_error
            .as_deref()
            .is_some_and(|e| e.contains("is the broker running?")),
        "{last_error:?}"
    );
    broker.restart();
    run.wait_connected();
    wait_configs(&broker, "nursery");
    run.stop();
}

#[test]
fn a_refused_login_is_retried_slowly_until_it_works() {
    let broker = Mosquitto::start("another-password");
    let data = TempDir::new("mqtt-refused");
    let run = MqttRun::start_with(&options(&broker, ONE_CAMERA), data.path(), None, |setup| {
        setup.backoff.first_not_authorized = Duration::from_millis(300);
        setup.backoff.max_not_authorized = Duration::from_millis(600);
    });
    let status = run.wait_status(
        "retried",
        WAIT,
        |s| matches!(s, MqttStatus::Connecting { attempts, .. } if *attempts >= 2),
    );
    let MqttStatus::Connecting { last_error, .. } = status else {
        unreachable!()
    };
    let error = last_error.unwrap_or_default();
    assert!(error.contains("not authorized"), "{error}");
    assert!(!error.contains(PASSWORD), "{error}");
    // The broker's admin fixes the password: the next retry gets in.
    broker.set_password(PASSWORD);
    run.wait_connected();
    wait_configs(&broker, "nursery");
    run.stop();
}

#[test]
fn a_removed_camera_leaves_nothing_behind() {
    let broker = Mosquitto::start(PASSWORD);
    let data = TempDir::new("mqtt-removed");
    let run = MqttRun::start(&options(&broker, TWO_CAMERAS), data.path());
    run.wait_connected();
    wait_configs(&broker, "baby_room");
    run.stop();

    let gone = |r: &BTreeMap<String, String>| !r.keys().any(|t| t.contains("baby_room"));
    // The camera is taken out of the options: the data dir remembers it was announced.
    let run = MqttRun::start(&options(&broker, ONE_CAMERA), data.path());
    run.wait_connected();
    wait_retained(broker.port, PASSWORD, "#", WAIT, "no baby_room topic", gone);
    assert_eq!(wait_configs(&broker, "nursery").len(), Entity::ALL.len());
    run.stop();

    // Same again with a wiped data dir: the configs read back from the broker are enough.
    let run = MqttRun::start(&options(&broker, TWO_CAMERAS), data.path());
    run.wait_connected();
    wait_configs(&broker, "baby_room");
    run.stop();
    let wiped = TempDir::new("mqtt-removed-wiped");
    let run = MqttRun::start(&options(&broker, ONE_CAMERA), wiped.path());
    run.wait_connected();
    wait_retained(broker.port, PASSWORD, "#", WAIT, "no baby_room topic", gone);
    assert_eq!(wait_configs(&broker, "nursery").len(), Entity::ALL.len());
    run.stop();
}
