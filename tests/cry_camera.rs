//! A baby crying into a camera's microphone, through the real binary: the fake camera plays a
//! labelled cry clip over RTSP (G.711 A-law at 8 kHz on one camera, AAC at 16 kHz on the other),
//! and Home Assistant's crying entity turns ON over MQTT within 1.5 s of the moment the cry
//! becomes audible, OFF after it ends, as one episode in the panel's history.

mod common;

use std::time::{Duration, Instant};

use common::cry::{audible_offset, clip, unix_ms_now};
use common::fake_camera::FakeCamera;
use common::mosquitto::Mosquitto;
use common::mqtt_probe::{Probe, Seen};
use common::mqtt_run::broker_options;
use common::{Ports, Vigil, http_get, wait_until};

const PASSWORD: &str = "Cry-Br0ker-Pa55";
/// How late crying may turn ON after the cry becomes audible (the bound).
const ON_WITHIN: Duration = Duration::from_millis(1500);

/// When the probe received `message`, in unix milliseconds.
fn unix_ms_of(message: &Seen) -> u64 {
    unix_ms_now() - Instant::now().duration_since(message.at).as_millis() as u64
}

fn episodes(web_port: u16, camera: &str) -> Vec<serde_json::Value> {
    let (status, body) = http_get(web_port, &format!("/api/panel/history?camera={camera}"));
    assert_eq!(status, 200, "{body}");
    let history: serde_json::Value = serde_json::from_str(&body).unwrap();
    history["episodes"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_cry_through_the_camera_turns_crying_on_then_off_as_one_episode() {
    let broker = Mosquitto::start(PASSWORD);
    let mut cameras = [
        // Not in alphabetical order, so each camera's reading must find its own entity.
        ("playroom", FakeCamera::start(&["--audio", "pcma"])),
        ("nursery", FakeCamera::start(&["--audio", "aac"])),
    ];
    let ports = Ports::free();
    let mut options = String::from("cameras:\n");
    for (name, camera) in &cameras {
        options.push_str(&format!("  - {{name: {name}, url: '{}'}}\n", camera.url()));
    }
    options.push_str(&broker_options(broker.port, PASSWORD));
    let mut vigil = Vigil::start(&ports.options(&options));
    vigil.wait_for_log("connected to the MQTT broker", Duration::from_secs(20));

    let probe = Probe::connect(broker.port, PASSWORD, &["vigil/+/crying", "vigil/+/online"]);
    for (name, _) in &cameras {
        probe.wait_for(
            &format!("vigil/{name}/online"),
            "ON",
            Duration::from_secs(20),
        );
        probe.wait_for(
            &format!("vigil/{name}/crying"),
            "OFF",
            Duration::from_secs(20),
        );
    }
    // Some seconds of the room's silence first, as at night.
    std::thread::sleep(Duration::from_secs(3));
    probe.clear();

    // One camera after the other: each one's crying turns on, and only its own.
    let offset = audible_offset(&clip());
    let mut audible = Vec::new();
    for index in 0..cameras.len() {
        let (name, camera) = &mut cameras[index];
        let at = camera.play(&clip()) + offset.as_millis() as u64;
        let on = probe.wait_for(
            &format!("vigil/{name}/crying"),
            "ON",
            Duration::from_secs(15),
        );
        let late = unix_ms_of(&on).saturating_sub(at);
        eprintln!("{name}: crying ON {late} ms after the cry became audible");
        assert!(
            Duration::from_millis(late) <= ON_WITHIN,
            "{name}: crying ON {late} ms after the cry became audible (at most {} ms)",
            ON_WITHIN.as_millis()
        );
        for (quiet, _) in &cameras[index + 1..] {
            assert!(
                probe
                    .on(&format!("vigil/{quiet}/crying"))
                    .iter()
                    .all(|m| m.payload == "OFF"),
                "{quiet} cries while only {} does",
                cameras[index].0
            );
        }
        audible.push(at);
    }
    for ((name, _), audible) in cameras.iter().zip(&audible) {
        // The clip lasts about 6 s; crying ends once the hold (10 s) passes without crying.
        probe.wait_for(
            &format!("vigil/{name}/crying"),
            "OFF",
            Duration::from_secs(30),
        );
        let ons = probe
            .on(&format!("vigil/{name}/crying"))
            .iter()
            .filter(|m| m.payload == "ON")
            .count();
        assert_eq!(ons, 1, "{name}: one cry, one ON");
        let mut found = Vec::new();
        wait_until("the episode in the history", Duration::from_secs(5), || {
            found = episodes(ports.web, name);
            found.len() == 1 && found[0]["ended_ms"].is_u64()
        });
        let started = found[0]["started_ms"].as_u64().unwrap();
        assert!(
            started.abs_diff(*audible) < 3000,
            "{name}: the episode starts at {started}, the cry at {audible}"
        );
    }
    let out = vigil.output();
    assert!(
        !out.contains(PASSWORD),
        "the broker password reached the log"
    );
}
