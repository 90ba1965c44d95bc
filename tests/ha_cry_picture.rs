//! The picture with the alert, end to end with a real Home Assistant core and mosquitto: a cry
//! clip played into the fake camera's microphone gives Home Assistant a new "Nursery last cry"
//! image within 2 s of the moment the cry becomes audible, a JPEG at the camera's size fetched
//! through Home Assistant's image proxy (what the notification blueprint attaches).

mod common;

use std::time::{Duration, Instant};

use common::cry::{audible_offset, clip, unix_ms_now};
use common::fake_camera::FakeCamera;
use common::home_assistant::HomeAssistant;
use common::mosquitto::{Mosquitto, USER};
use common::mqtt_run::broker_options;
use common::{Ports, Vigil, cameras_yaml, jpeg_size};

const PASSWORD: &str = "Picture-Br0ker-Pa55";
const IMAGE: &str = "image.nursery_last_cry";
/// How late the picture may reach Home Assistant after the cry becomes audible (the bound).
const WITHIN: Duration = Duration::from_secs(2);

#[test]
fn a_cry_gives_home_assistant_a_new_last_cry_picture_within_two_seconds() {
    let broker = Mosquitto::start(PASSWORD);
    let mut camera = FakeCamera::start(&["--audio", "pcma"]);
    let ha = HomeAssistant::start("", |_| {});
    ha.setup_mqtt(broker.port, USER, PASSWORD);
    let ports = Ports::free();
    let options = format!(
        "{}{}",
        cameras_yaml(&[("nursery", &camera.url())]),
        broker_options(broker.port, PASSWORD)
    );
    let mut vigil = Vigil::start(&ports.options(&options));
    vigil.wait_for_log("connected to the MQTT broker", Duration::from_secs(20));
    ha.wait_state(
        "binary_sensor.nursery_online",
        "on",
        Duration::from_secs(30),
    );
    let before = ha
        .state(IMAGE)
        .unwrap_or_else(|| panic!("no {IMAGE}\n{}", vigil.output()))["state"]
        .clone();
    // Some seconds of the room's silence first, as at night.
    std::thread::sleep(Duration::from_secs(3));

    let audible = camera.play(&clip()) + audible_offset(&clip()).as_millis() as u64;
    let deadline = Instant::now() + Duration::from_secs(15);
    let arrived = loop {
        let now = ha.state(IMAGE).map(|s| s["state"].clone());
        let picture = now
            .as_ref()
            .and_then(|s| s.as_str())
            .is_some_and(|s| !["unknown", "unavailable"].contains(&s));
        if picture && now.as_ref() != Some(&before) {
            eprintln!("{IMAGE}: {before} -> {now:?}");
            break unix_ms_now();
        }
        if Instant::now() > deadline {
            // Say whether the cry itself was heard, to tell detection from the picture.
            let crying = ha.state("binary_sensor.nursery_crying");
            panic!(
                "{IMAGE} never changed (still {before}); crying: {:?}\n{}",
                crying.map(|s| s["state"].clone()),
                vigil.output()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let late = Duration::from_millis(arrived.saturating_sub(audible));
    eprintln!("the cry's picture reached Home Assistant {late:?} after the cry became audible");
    assert!(
        late <= WITHIN,
        "the picture came {late:?} after the cry (at most {WITHIN:?})"
    );

    let (status, kind, jpeg) = ha.get_bytes(&format!("image_proxy/{IMAGE}"));
    assert_eq!(
        status,
        200,
        "{}\n--- HA log ---\n{}",
        String::from_utf8_lossy(&jpeg),
        ha.log()
    );
    assert_eq!(kind, "image/jpeg");
    assert_eq!(jpeg_size(&jpeg), Some((640, 360)), "not a 640x360 JPEG");
    let kept = std::fs::read_dir(vigil.data_dir.path().join("cry-pictures/nursery"))
        .expect("no cry-pictures directory")
        .count();
    assert_eq!(kept, 1);
}
