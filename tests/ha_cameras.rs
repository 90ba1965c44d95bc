//! Camera entities in a real Home Assistant core with no URL copied: Vigil, given a Supervisor
//! (a fake one proxying the real core's API, token checked, as the real proxy does), adds one
//! Generic Camera per camera whose still image and stream play through Home Assistant, makes
//! no duplicate after a restart, updates its entries when the ports change, leaves an entry the
//! user edited alone, removes the entry of a camera taken out of the options, and removes its
//! own entries when `homeassistant_cameras` is turned off.

mod common;

use std::time::{Duration, Instant};

use common::fake_camera::FakeCamera;
use common::fake_supervisor::{Answers, FakeSupervisor};
use common::home_assistant::HomeAssistant;
use common::{Ports, Vigil, cameras_yaml};
use serde_json::{Value, json};

const TOKEN: &str = "addon-token-for-vigil";
const IN_SYNC: &str = "Home Assistant camera entries in sync";

/// The Generic Camera entries: entry id → title.
fn entries(ha: &HomeAssistant) -> Vec<(String, String)> {
    let list = ha
        .get("config/config_entries/entry?domain=generic")
        .unwrap_or(Value::Null);
    let mut entries: Vec<(String, String)> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["entry_id"].as_str().unwrap_or_default().to_string(),
                e["title"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    entries.sort_by(|a, b| a.1.cmp(&b.1));
    entries
}

fn titles(entries: &[(String, String)]) -> Vec<&str> {
    entries.iter().map(|(_, t)| t.as_str()).collect()
}

#[test]
fn vigil_keeps_one_generic_camera_per_camera_in_home_assistant() {
    let started = Instant::now();
    let camera = FakeCamera::start(&[]);
    let ha = HomeAssistant::start("", |_| {});
    let supervisor = FakeSupervisor::start(Answers {
        token: TOKEN.into(),
        mqtt: None,
        mqtt_access: true,
        v2: false,
    });
    supervisor.proxy_core(&ha.url, &ha.token);
    let env = [
        ("SUPERVISOR_TOKEN", TOKEN),
        ("SUPERVISOR_URL", supervisor.url.as_str()),
    ];
    let ports = Ports::free();
    let url = camera.url();
    let three = ports.options(&cameras_yaml(&[
        ("nursery", &url),
        ("bedroom", &url),
        ("attic", &url),
    ]));

    let ha_ready = started.elapsed();
    let mut vigil = Vigil::start_with_env(&three, &env);
    vigil.wait_for_log(IN_SYNC, Duration::from_secs(150));
    let first = entries(&ha);
    assert_eq!(
        titles(&first),
        ["attic (Vigil)", "bedroom (Vigil)", "nursery (Vigil)"],
        "{first:?}"
    );
    for name in ["nursery", "bedroom", "attic"] {
        let state = ha
            .state(&format!("camera.{name}"))
            .unwrap_or_else(|| panic!("no camera.{name}\n{}", vigil.output()));
        assert_eq!(
            state["attributes"]["friendly_name"],
            format!("{name} (Vigil)")
        );
    }

    let added = started.elapsed();
    // It plays: the still image through Home Assistant's camera proxy (Vigil's snapshot)...
    let (status, kind, jpeg) = ha.get_bytes("camera_proxy/camera.nursery");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&jpeg));
    assert_eq!(kind, "image/jpeg");
    assert!(jpeg.starts_with(&[0xFF, 0xD8]), "not a JPEG");
    // ...and the stream, which Home Assistant opens from Vigil's restream.
    let stream = ha.ws_command(json!({"type": "camera/stream", "entity_id": "camera.nursery"}));
    let playlist = stream["url"].as_str().expect("no stream url");
    // Home Assistant answers the master playlist only once its stream worker has received two
    // segments from the restream (404 before: components/stream/hls.py).
    let (status, kind, _) = ha.get_bytes(playlist.trim_start_matches("/api/"));
    assert_eq!(status, 200, "{}", ha.log());
    assert_eq!(kind, "application/vnd.apple.mpegurl");
    let played = started.elapsed();
    // A restart makes no duplicate.
    vigil.restart_with(&three, &env);
    vigil.wait_for_log(IN_SYNC, Duration::from_secs(150));
    assert_eq!(entries(&ha), first, "\n{}", vigil.output());
    assert!(!vigil.output().contains("camera entity added"));

    // The user renames the bedroom's entry; the attic leaves the options.
    let bedroom = &first[1].0;
    ha.ws_command(json!({
        "type": "config_entries/update",
        "entry_id": bedroom,
        "title": "Baby's bedroom",
    }));
    // ...and the ports change: the nursery's entry is updated, not made again.
    let ports = Ports::free();
    let one = ports.options(&cameras_yaml(&[("nursery", &url)]));
    vigil.restart_with(&one, &env);
    vigil.wait_for_log(IN_SYNC, Duration::from_secs(150));
    let last = entries(&ha);
    assert_eq!(
        titles(&last),
        ["Baby's bedroom", "nursery (Vigil)"],
        "{last:?}"
    );
    assert_eq!(last[0].0, *bedroom);
    assert_eq!(last[1].0, first[2].0);
    assert!(
        ha.state("camera.attic").is_none(),
        "the attic's entity stays"
    );
    assert!(ha.state("camera.bedroom").is_some());

    // The option off: Vigil's entry goes, the user's stays.
    vigil.restart_with(&format!("{one}homeassistant_cameras: false\n"), &env);
    vigil.wait_for_log(IN_SYNC, Duration::from_secs(150));
    assert_eq!(titles(&entries(&ha)), ["Baby's bedroom"]);
    assert!(
        ha.state("camera.nursery").is_none(),
        "the nursery's entity stays"
    );

    // Nothing of the Supervisor's token or the proxy's reached the log.
    assert!(!vigil.output().contains(TOKEN));
    println!(
        "HA up {ha_ready:.1?}, three entries {added:.1?}, played {played:.1?}, whole test {:.1?}",
        started.elapsed()
    );
}
