//! Removing what a camera leaves behind when it is taken out of the options: its retained
//! discovery configs (which make Home Assistant delete the entities) and its retained states.
//!
//! Two ways, so that either one suffices: the cameras announced last time are remembered under the
//! data directory, and the retained configs under Vigil's node id are read back from the broker
//! (which also catches an entity a newer version no longer has, or a data directory that was
//! wiped). File I/O only in [`load_announced`] and [`save_announced`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::discovery::{NODE_ID, is_config_topic};

/// The file under the data directory naming the cameras announced to Home Assistant.
pub const ANNOUNCED_FILE: &str = "mqtt-announced.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Announced {
    cameras: Vec<String>,
}

/// The cameras announced by the last run, or none if that is not known.
pub fn load_announced(data_dir: &Path) -> Vec<String> {
    crate::state_file::load_json::<Announced>(&data_dir.join(ANNOUNCED_FILE)).cameras
}

/// Remembers the cameras announced now.
pub fn save_announced(data_dir: &Path, cameras: &[String]) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&Announced {
        cameras: cameras.to_vec(),
    })
    .map_err(std::io::Error::other)?;
    crate::state_file::write(&data_dir.join(ANNOUNCED_FILE), text)
}

/// For a retained discovery config read back from the broker that Vigil no longer announces:
/// the topics to clear, the config first, then the state topic it names if it is Vigil's.
/// Empty for a config that is not Vigil's or is already cleared.
pub fn stale_topics(topic: &str, payload: &[u8]) -> Vec<String> {
    if payload.is_empty() || !is_config_topic(topic) {
        return Vec::new();
    }
    let mut topics = vec![topic.to_string()];
    let state = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|config| config.get("state_topic")?.as_str().map(str::to_string));
    if let Some(state) = state
        && state.starts_with(&format!("{NODE_ID}/"))
        && !state.contains(['+', '#'])
    {
        topics.push(state);
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_cameras_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("vigil-announced-{}", fastrand::u64(..)));
        assert!(load_announced(&dir).is_empty());
        save_announced(&dir, &["a".into(), "b".into()]).unwrap();
        assert_eq!(load_announced(&dir), ["a", "b"]);
        std::fs::write(dir.join(ANNOUNCED_FILE), "not json").unwrap();
        assert!(load_announced(&dir).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn stale_configs_take_their_state_along() {
        let topic = "homeassistant/binary_sensor/vigil/old_crying/config";
        assert_eq!(
            stale_topics(topic, br#"{"state_topic":"vigil/old/crying"}"#),
            [topic, "vigil/old/crying"]
        );
        // Someone else's state topic stays; an unreadable config is still removed.
        assert_eq!(
            stale_topics(topic, br#"{"state_topic":"zigbee/x"}"#),
            [topic]
        );
        assert_eq!(stale_topics(topic, b"garbage"), [topic]);
        assert!(stale_topics(topic, b"").is_empty());
        assert!(stale_topics("homeassistant/sensor/other/x/config", b"{}").is_empty());
    }
}
