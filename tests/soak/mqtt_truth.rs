//! What the broker must hold: Vigil's availability, each camera's `online` as it really is,
//! crying OFF (no cry is going on when this is asked), and every camera's discovery configs.

use super::common::mqtt_probe::retained;

/// Entities per camera, each with a retained discovery config.
const ENTITIES_PER_CAMERA: usize = 6;

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
