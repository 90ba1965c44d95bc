//! A baby crying into a camera's microphone, through the real binary: the fake camera plays a
//! labelled cry clip over RTSP (G.711 A-law at 8 kHz on one camera, AAC at 16 kHz on the other),
//! and Home Assistant's crying entity turns ON over MQTT within 1.5 s of the moment the cry
//! becomes audible, OFF after it ends, as one episode in the panel's history.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fake_camera::FakeCamera;
use common::mosquitto::Mosquitto;
use common::mqtt_probe::{Probe, Seen};
use common::mqtt_run::broker_options;
use common::{Ports, Vigil, http_get, wait_until};

const PASSWORD: &str = "Cry-Br0ker-Pa55";
/// A clear cry (docs/detection.md: peak score 0.99, found at the defaults).
const CLIP: &str = "cry_03_burping.wav";
/// How late crying may turn ON after the cry becomes audible (the bound).
const ON_WITHIN: Duration = Duration::from_millis(1500);

fn clip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/audio")
        .join(CLIP)
}

/// Where the cry becomes audible in `path`: the start of the first 50 ms block whose RMS level
/// is within 20 dB of the clip's loudest block (the cry itself, not the room before it).
fn audible_offset(path: &Path) -> Duration {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    let samples: Vec<f32> = reader
        .samples::<i16>()
        .step_by(spec.channels as usize)
        .map(|s| s.unwrap() as f32 / 32768.0)
        .collect();
    let block = spec.sample_rate as usize / 20;
    let levels: Vec<f32> = samples
        .chunks(block)
        .map(|b| (b.iter().map(|s| s * s).sum::<f32>() / b.len() as f32).sqrt())
        .collect();
    let loudest = levels.iter().cloned().fold(0.0, f32::max);
    let first = levels.iter().position(|&l| l >= loudest / 10.0).unwrap();
    Duration::from_millis(first as u64 * 50)
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

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
        ("nursery", FakeCamera::start(&["--audio", "pcma"])),
        ("playroom", FakeCamera::start(&["--audio", "aac"])),
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

    let offset = audible_offset(&clip());
    let audible: Vec<u64> = cameras
        .iter_mut()
        .map(|(_, camera)| camera.play(&clip()) + offset.as_millis() as u64)
        .collect();

    for ((name, _), audible) in cameras.iter().zip(&audible) {
        let on = probe.wait_for(
            &format!("vigil/{name}/crying"),
            "ON",
            Duration::from_secs(15),
        );
        let late = unix_ms_of(&on).saturating_sub(*audible);
        eprintln!("{name}: crying ON {late} ms after the cry became audible");
        assert!(
            Duration::from_millis(late) <= ON_WITHIN,
            "{name}: crying ON {late} ms after the cry became audible (at most {} ms)",
            ON_WITHIN.as_millis()
        );
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
