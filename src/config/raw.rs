//! The options as written by the user: the shape of `/data/options.json` and of the standalone
//! YAML file, before validation. Every key here has the same spelling in `config.yaml`,
//! `translations/en.yaml` and DOCS.md.

use serde::{Deserialize, Serialize};

pub const DEFAULT_RTSP_PORT: u16 = 8554;
pub const DEFAULT_WEB_PORT: u16 = 8099;
pub const DEFAULT_API_PORT: u16 = 1984;
pub const DEFAULT_CRY_THRESHOLD: f64 = 0.5;
/// Quieter windows never count as crying (dBFS); chosen on the labelled clips (docs/detection.md).
pub const DEFAULT_CRY_MIN_LEVEL: f64 = -70.0;
/// Seconds without a cry before crying ends.
pub const DEFAULT_CRY_HOLD: f64 = 10.0;
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// How long the camera's jitter buffer may hold packets (over TCP they arrive in order).
pub const DEFAULT_CAMERA_LATENCY_MS: i64 = 100;
/// Seconds without a frame before a camera's connection is restarted.
pub const DEFAULT_STALL_TIMEOUT: i64 = 5;
/// Days a cry clip is kept.
pub const DEFAULT_CLIP_RETENTION_DAYS: i64 = 7;
/// Megabytes all cry clips together may take.
pub const DEFAULT_CLIP_MAX_MB: i64 = 1000;

/// Top-level option keys, in the order the options form shows them.
pub const TOP_KEYS: &[&str] = &[
    "cameras",
    "cry_threshold",
    "cry_min_level",
    "cry_hold",
    "yamnet_model",
    "clips",
    "clip_retention_days",
    "clip_max_mb",
    "clips_dir",
    "rtsp_port",
    "rtsp_username",
    "rtsp_password",
    "camera_latency_ms",
    "stall_timeout",
    "unify_audio",
    "web_port",
    "web_allow",
    "api_port",
    "api_username",
    "api_password",
    "lan_port",
    "lan_username",
    "lan_password",
    "homeassistant_cameras",
    "webrtc_ice_servers",
    "mqtt",
    "log_level",
];

/// Keys of one entry of `cameras`.
pub const CAMERA_KEYS: &[&str] = &["name", "url", "sub_url", "detection"];

/// Keys of one entry of `webrtc_ice_servers`.
pub const ICE_SERVER_KEYS: &[&str] = &["url", "username", "credential"];

/// Keys of `mqtt`.
pub const MQTT_KEYS: &[&str] = &["host", "port", "username", "password"];

/// Accepted values of `log_level`.
pub const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warning", "error"];

#[derive(Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct RawOptions {
    pub cameras: Vec<RawCamera>,
    pub cry_threshold: f64,
    pub cry_min_level: f64,
    pub cry_hold: f64,
    pub yamnet_model: Option<String>,
    pub clips: bool,
    pub clip_retention_days: i64,
    pub clip_max_mb: i64,
    /// Standalone only: where the clips go (the add-on's are in `/media/vigil`).
    pub clips_dir: Option<String>,
    pub rtsp_port: i64,
    pub rtsp_username: Option<String>,
    pub rtsp_password: Option<String>,
    pub camera_latency_ms: i64,
    pub stall_timeout: i64,
    pub unify_audio: bool,
    pub web_port: i64,
    pub web_allow: Option<Vec<String>>,
    pub api_port: i64,
    pub api_username: Option<String>,
    pub api_password: Option<String>,
    pub lan_port: Option<i64>,
    pub lan_username: Option<String>,
    pub lan_password: Option<String>,
    pub homeassistant_cameras: bool,
    pub webrtc_ice_servers: Vec<RawIceServer>,
    pub mqtt: RawMqtt,
    pub log_level: String,
}

impl Default for RawOptions {
    fn default() -> Self {
        Self {
            cameras: Vec::new(),
            cry_threshold: DEFAULT_CRY_THRESHOLD,
            cry_min_level: DEFAULT_CRY_MIN_LEVEL,
            cry_hold: DEFAULT_CRY_HOLD,
            yamnet_model: None,
            clips: true,
            clip_retention_days: DEFAULT_CLIP_RETENTION_DAYS,
            clip_max_mb: DEFAULT_CLIP_MAX_MB,
            clips_dir: None,
            rtsp_port: DEFAULT_RTSP_PORT.into(),
            rtsp_username: None,
            rtsp_password: None,
            camera_latency_ms: DEFAULT_CAMERA_LATENCY_MS,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            unify_audio: true,
            web_port: DEFAULT_WEB_PORT.into(),
            web_allow: None,
            api_port: DEFAULT_API_PORT.into(),
            api_username: None,
            api_password: None,
            lan_port: None,
            lan_username: None,
            lan_password: None,
            homeassistant_cameras: true,
            webrtc_ice_servers: Vec::new(),
            mqtt: RawMqtt::default(),
            log_level: DEFAULT_LOG_LEVEL.to_string(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
pub struct RawCamera {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub url: String,
    /// The camera's second, lighter stream (restreamed as `<name>_sub`).
    #[serde(default)]
    pub sub_url: Option<String>,
    #[serde(default = "default_true")]
    pub detection: bool,
}

/// One STUN or TURN server handed to WebRTC viewers.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawIceServer {
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawMqtt {
    pub host: Option<String>,
    pub port: Option<i64>,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(value: serde_json::Value) -> Vec<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    /// The key tables drive the unknown-key check; they must list exactly the struct's fields.
    #[test]
    fn key_tables_match_the_structs() {
        let mut top = keys_of(serde_json::to_value(RawOptions::default()).unwrap());
        let mut want: Vec<String> = TOP_KEYS.iter().map(|s| s.to_string()).collect();
        top.sort();
        want.sort();
        assert_eq!(top, want);

        let camera = RawCamera {
            name: String::new(),
            url: String::new(),
            sub_url: None,
            detection: true,
        };
        let mut cam = keys_of(serde_json::to_value(camera).unwrap());
        cam.sort();
        let mut want: Vec<String> = CAMERA_KEYS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(cam, want);

        let mut ice = keys_of(serde_json::to_value(RawIceServer::default()).unwrap());
        ice.sort();
        let mut want: Vec<String> = ICE_SERVER_KEYS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(ice, want);

        let mut mqtt = keys_of(serde_json::to_value(RawMqtt::default()).unwrap());
        mqtt.sort();
        let mut want: Vec<String> = MQTT_KEYS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(mqtt, want);
    }
}
