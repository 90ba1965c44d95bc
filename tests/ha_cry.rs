//! End to end, everything real: a cry clip played into the fake camera's microphone reaches the
//! `vigil` binary over RTSP, YAMNet hears it, and a real Home Assistant core, through a real
//! mosquitto, turns `binary_sensor.nursery_crying` on and then off; killing Vigil leaves its
//! entities unavailable.

mod common;

use std::time::{Duration, Instant};

use common::fake_camera::FakeCamera;
use common::home_assistant::HomeAssistant;
use common::mosquitto::{Mosquitto, USER};
use common::mqtt_run::broker_options;
use common::{Ports, Vigil, signal, wait_until};

const PASSWORD: &str = "Ha-Cry-Br0ker-Pa55";
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_cry_at_the_camera_turns_home_assistants_crying_sensor_on_and_off() {
    let broker = Mosquitto::start(PASSWORD);
    let ha = HomeAssistant::start("", |_| {});
    ha.setup_mqtt(broker.port, USER, PASSWORD);
    let mut camera = FakeCamera::start(&["--audio", "pcma"]);
    let ports = Ports::free();
    let vigil = Vigil::start(&ports.options(&format!(
        "cameras:\n  - {{name: nursery, url: '{}'}}\n{}",
        camera.url(),
        broker_options(broker.port, PASSWORD)
    )));
    ha.wait_state("binary_sensor.nursery_online", "on", WAIT);
    ha.wait_state("binary_sensor.nursery_crying", "off", WAIT);

    let clip = common::fixtures::audio("cry_09_tired.wav");
    let played = Instant::now();
    camera.play(&clip);
    ha.wait_state("binary_sensor.nursery_crying", "on", WAIT);
    let on_after = played.elapsed();
    wait_until("a cry score of 50 % or more in HA", WAIT, || {
        ha.state("sensor.nursery_cry_score")
            .and_then(|s| s["state"].as_str()?.parse::<f64>().ok())
            .is_some_and(|score| score >= 50.0)
    });
    ha.wait_state("binary_sensor.nursery_crying", "off", WAIT);
    let off_after = played.elapsed();

    let killed = Instant::now();
    signal(vigil.pid(), "KILL");
    for entity in [
        "binary_sensor.nursery_crying",
        "binary_sensor.nursery_online",
        "sensor.nursery_sound_level",
    ] {
        ha.wait_state(entity, "unavailable", WAIT);
    }
    println!(
        "clip played -> HA crying on {on_after:?}, off {off_after:?}; kill -> unavailable {:?}",
        killed.elapsed()
    );
}
