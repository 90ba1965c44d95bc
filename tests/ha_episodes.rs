//! The night's story in Home Assistant, everything real: a cry clip played into the fake camera's
//! microphone reaches the `vigil` binary over RTSP, YAMNet hears it, and a real Home Assistant
//! core, through a real mosquitto, sees `event.nursery_cry` fire `cry_started` and then
//! `cry_ended` (with the episode's duration, peak score and clip), and counts the cry in the "last
//! 12 h" sensors; DOCS.md's automation on `cry_ended` runs once. The event is never retained:
//! Home Assistant's birth message, which makes Vigil publish everything again, does not fire it
//! a second time.

mod common;

use std::time::{Duration, Instant};

use common::cry::{audible_offset, unix_ms_now};
use common::fake_camera::FakeCamera;
use common::home_assistant::HomeAssistant;
use common::mosquitto::{Mosquitto, USER};
use common::mqtt_probe::{Probe, retained};
use common::mqtt_run::broker_options;
use common::{Ports, Vigil, cameras_yaml};
use serde_json::Value;

const PASSWORD: &str = "Episodes-Br0ker-Pa55";
const WAIT: Duration = Duration::from_secs(30);
const EVENT: &str = "event.nursery_cry";
const CRIES: &str = "sensor.nursery_cries_in_the_last_12_h";
const CRYING_TIME: &str = "sensor.nursery_crying_time_in_the_last_12_h";
/// The automation DOCS.md shows: on the event entity, for `cry_ended` only.
const ON_CRY_ENDED: &str = "automation.nursery_cry_ended";

/// Waits until the event entity has fired `event_type` (its state is the time it fired).
fn wait_event(ha: &HomeAssistant, event_type: &str, vigil: &Vigil) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let state = ha.state(EVENT).unwrap_or_default();
        if state["attributes"]["event_type"] == event_type {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "{EVENT} never fired {event_type}; now {state:#}\n--- vigil ---\n{}\n--- HA log ---\n{}",
            vigil.output(),
            ha.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn number(state: &Value) -> f64 {
    state["state"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn a_cry_fires_home_assistants_cry_event_and_counts_in_the_last_12_hours() {
    let broker = Mosquitto::start(PASSWORD);
    let ha = HomeAssistant::start("automation: !include automations.yaml\n", |config| {
        std::fs::write(config.join("automations.yaml"), "[]\n").unwrap();
    });
    ha.setup_mqtt(broker.port, USER, PASSWORD);
    let mut camera = FakeCamera::start(&["--audio", "pcma"]);
    let ports = Ports::free();
    let vigil = Vigil::start(&ports.options(&format!(
        "{}{}",
        cameras_yaml(&[("nursery", &camera.url())]),
        broker_options(broker.port, PASSWORD)
    )));
    ha.wait_state("binary_sensor.nursery_online", "on", WAIT);
    ha.wait_state("binary_sensor.nursery_crying", "off", WAIT);

    // Before any cry: the event has never fired, the night counts nothing.
    let event = ha.wait_state(EVENT, "unknown", WAIT);
    assert_eq!(
        event["attributes"]["event_types"],
        serde_json::json!(["cry_started", "cry_ended"]),
        "{event:#}"
    );
    assert_eq!(event["attributes"]["friendly_name"], "Nursery Cry");
    ha.wait_number(CRIES, 0.0, WAIT);
    let time = ha.wait_number(CRYING_TIME, 0.0, WAIT);
    assert_eq!(time["attributes"]["unit_of_measurement"], "min", "{time:#}");
    assert_eq!(time["attributes"]["device_class"], "duration", "{time:#}");

    // DOCS.md's automation on the end of a cry.
    let saved = ha.post(
        "config/automation/config/nursery_cry_ended",
        serde_json::json!({
            "alias": "Nursery cry ended",
            "triggers": [{"trigger": "state", "entity_id": EVENT, "not_from": "unavailable"}],
            "conditions": [{"condition": "state", "entity_id": EVENT, "attribute": "event_type", "state": "cry_ended"}],
            "actions": [{"event": "vigil_test_cry_ended"}],
        }),
    );
    assert_eq!(saved["result"], "ok", "{saved}");
    ha.wait_state(ON_CRY_ENDED, "on", WAIT);
    let last_triggered = || ha.state(ON_CRY_ENDED).unwrap()["attributes"]["last_triggered"].clone();

    let clip = common::cry::clip();
    let audible = camera.play(&clip) + audible_offset(&clip).as_millis() as u64;
    let started = wait_event(&ha, "cry_started", &vigil);
    // Seen by polling every 100 ms: an upper bound.
    let event_after = Duration::from_millis(unix_ms_now().saturating_sub(audible));
    let started_at = started["state"].as_str().unwrap().to_string();
    assert!(
        started_at.starts_with("20"),
        "the state is when it fired: {started:#}"
    );
    assert_eq!(started["attributes"]["duration"], 0, "{started:#}");
    assert!(
        started["attributes"]["peak_score"].as_f64().unwrap() >= 50.0,
        "{started:#}"
    );
    // Counted as soon as it starts.
    ha.wait_number(CRIES, 1.0, WAIT);
    assert!(
        last_triggered().is_null(),
        "the automation ran at the start"
    );

    let ended = wait_event(&ha, "cry_ended", &vigil);
    let ended_at = ended["state"].as_str().unwrap().to_string();
    assert!(ended_at > started_at, "{started_at} then {ended_at}");
    let duration = ended["attributes"]["duration"].as_f64().unwrap();
    let clip_seconds = {
        let reader = hound::WavReader::open(&clip).unwrap();
        reader.duration() as f64 / reader.spec().sample_rate as f64
    };
    // The episode is the cry heard: more than a second, not longer than the clip.
    assert!(
        duration >= 1.0 && duration <= clip_seconds + 1.0,
        "a {duration} s episode from a {clip_seconds:.1} s clip: {ended:#}"
    );
    let peak = ended["attributes"]["peak_score"].as_f64().unwrap();
    assert!(
        (50.0..=100.0).contains(&peak),
        "peak score {peak}: {ended:#}"
    );
    // Its clip (recorded by default), relative to the clips folder, there once finished.
    let clip_path = ended["attributes"]["clip"]
        .as_str()
        .unwrap_or_else(|| panic!("no clip: {ended:#}"))
        .to_string();
    assert!(
        clip_path.starts_with("nursery/") && clip_path.ends_with(".mp4"),
        "{ended:#}"
    );
    let clip_file = vigil.data_dir.path().join("clips").join(&clip_path);
    common::wait_until("the clip finished", WAIT, || clip_file.is_file());

    let deadline = Instant::now() + WAIT;
    while last_triggered().is_null() {
        assert!(
            Instant::now() < deadline,
            "the automation never ran at the end"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ran_at = last_triggered();

    // One cry, and its minutes: the crying time is the episode's duration.
    let cries = ha.wait_number(CRIES, 1.0, WAIT);
    assert_eq!(number(&cries), 1.0);
    let deadline = Instant::now() + WAIT;
    let minutes = loop {
        let minutes = number(&ha.state(CRYING_TIME).unwrap_or_default());
        if minutes > 0.0 {
            break minutes;
        }
        assert!(Instant::now() < deadline, "no crying time counted");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        (minutes - duration / 60.0).abs() <= 0.1,
        "{minutes} min of crying for a {duration} s episode"
    );

    // Nothing of the event stands on the broker, so a reconnect cannot replay it …
    let kept = retained(broker.port, PASSWORD, "vigil/nursery/#");
    assert!(!kept.contains_key("vigil/nursery/cry"), "{kept:?}");
    assert_eq!(kept["vigil/nursery/cries_12h"], "1");
    // … and Home Assistant's birth message, after which Vigil publishes everything again, does
    // not fire it a second time.
    let probe = Probe::connect(broker.port, PASSWORD, &["vigil/nursery/#"]);
    probe.publish("homeassistant/status", "online", false);
    probe.wait_until(WAIT, "Vigil's states published again", |m| {
        m.topic == "vigil/nursery/online" && !m.retain
    });
    std::thread::sleep(Duration::from_secs(2));
    let after = ha.state(EVENT).unwrap();
    assert_eq!(after["state"], ended["state"], "fired again: {after:#}");
    assert_eq!(last_triggered(), ran_at, "the automation ran again");
    assert!(
        probe.on("vigil/nursery/cry").is_empty(),
        "{:?}",
        probe.on("vigil/nursery/cry")
    );
    println!(
        "cry_started {event_after:?} after the cry became audible, at {started_at} (clip {}), cry_ended at {ended_at}: {duration} s, peak \
         {peak} %, clip {clip_path}, {minutes} min of crying",
        started["attributes"]["clip"]
    );
}
