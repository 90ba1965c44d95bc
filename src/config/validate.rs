//! From text to a validated [`Config`]: syntax (with line and column), unknown keys (with the
//! closest valid one), types (with the key path) and values (with what is allowed).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use super::raw::{self, RawOptions};
use super::{
    CAMERA_URL_SCHEMES, CameraConfig, CameraSource, CameraUrl, ClipOptions, Config, ConfigError,
    Credentials, INGRESS_GATEWAY, IceServer, IpNet, LogLevel, Mode, MqttOptions, Problem,
    SUB_STREAM_SUFFIX, StreamProtocol,
};
use crate::secret::{Secret, redact_url};

/// Longest jitter-buffer latency: beyond 2 s the restream is no longer live.
const MAX_CAMERA_LATENCY_MS: i64 = 2000;
/// The stall watchdog's range: below 2 s a camera's hiccup would restart it; above 60 s a
/// frozen camera would go unnoticed.
const MIN_STALL_TIMEOUT: i64 = 2;
const MAX_STALL_TIMEOUT: i64 = 60;

/// Longest camera name: entity ids and RTSP paths stay readable.
const MAX_CAMERA_NAME: usize = 32;
/// The quietest volume gate: below this a camera's own noise floor would count as a cry.
const MIN_CRY_MIN_LEVEL: f64 = -100.0;
/// The longest hold: beyond five minutes two cries are two episodes for any parent.
const MAX_CRY_HOLD: f64 = 300.0;
/// A year of clips at most; the add-on's schema says the same.
const MAX_CLIP_RETENTION_DAYS: i64 = 365;
/// Room for a few clips at least, and at most about a terabyte.
const MIN_CLIP_MAX_MB: i64 = 50;
const MAX_CLIP_MAX_MB: i64 = 1_000_000;

/// Parses YAML (a superset of JSON) or strict JSON into a value; an empty file is `{}`.
pub(super) fn parse_text(text: &str, json: bool) -> Result<Value, ConfigError> {
    let value = if json {
        serde_json::from_str::<Value>(text).map_err(|e| {
            ConfigError::single(
                "",
                format!(
                    "JSON syntax error at line {}, column {}: {}",
                    e.line(),
                    e.column(),
                    strip_position(&e.to_string())
                ),
            )
        })?
    } else {
        serde_yaml_ng::from_str::<Value>(text).map_err(|e| {
            let message = strip_position(&e.to_string());
            match e.location() {
                Some(loc) => ConfigError::single(
                    "",
                    format!(
                        "YAML syntax error at line {}, column {}: {message}",
                        loc.line(),
                        loc.column()
                    ),
                ),
                None => ConfigError::single("", format!("YAML error: {message}")),
            }
        })?
    };
    Ok(match value {
        Value::Null => Value::Object(Default::default()),
        other => other,
    })
}

/// Removes the " at line X column Y" that serde libraries append, since we say it first.
fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

pub(super) fn validate(value: Value, mode: Mode) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let Value::Object(top) = &value else {
        return Err(ConfigError::single(
            "",
            format!(
                "the options must be a mapping of keys (cameras, rtsp_port, …), not {}",
                describe(&value)
            ),
        ));
    };
    check_keys(top, "", raw::TOP_KEYS, &mut problems);
    if let Some(Value::Array(cameras)) = top.get("cameras") {
        for (i, camera) in cameras.iter().enumerate() {
            if let Value::Object(map) = camera {
                check_keys(
                    map,
                    &format!("cameras[{i}]."),
                    raw::CAMERA_KEYS,
                    &mut problems,
                );
            }
        }
    }
    if let Some(Value::Object(mqtt)) = top.get("mqtt") {
        check_keys(mqtt, "mqtt.", raw::MQTT_KEYS, &mut problems);
    }
    if let Some(Value::Array(servers)) = top.get("webrtc_ice_servers") {
        for (i, server) in servers.iter().enumerate() {
            if let Value::Object(map) = server {
                check_keys(
                    map,
                    &format!("webrtc_ice_servers[{i}]."),
                    raw::ICE_SERVER_KEYS,
                    &mut problems,
                );
            }
        }
    }

    let raw: RawOptions = match deserialize_known(&value) {
        Ok(raw) => raw,
        Err(problem) => {
            problems.push(problem);
            return Err(ConfigError { problems });
        }
    };
    let config = check_values(raw, mode, &mut problems);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems })
    }
}

/// Deserializes with unknown keys removed (they were reported already), naming the key path of a
/// type error.
fn deserialize_known(value: &Value) -> Result<RawOptions, Problem> {
    let mut value = value.clone();
    retain_known(&mut value);
    serde_path_to_error::deserialize::<_, RawOptions>(value).map_err(|e| Problem {
        key: format_path(&e.path().to_string()),
        message: humanize_serde(&e.inner().to_string()),
    })
}

fn retain_known(value: &mut Value) {
    if let Value::Object(top) = value {
        top.retain(|k, _| raw::TOP_KEYS.contains(&k.as_str()));
        if let Some(Value::Array(cameras)) = top.get_mut("cameras") {
            for camera in cameras {
                if let Value::Object(map) = camera {
                    map.retain(|k, _| raw::CAMERA_KEYS.contains(&k.as_str()));
                }
            }
        }
        if let Some(Value::Object(mqtt)) = top.get_mut("mqtt") {
            mqtt.retain(|k, _| raw::MQTT_KEYS.contains(&k.as_str()));
        }
        if let Some(Value::Array(servers)) = top.get_mut("webrtc_ice_servers") {
            for server in servers {
                if let Value::Object(map) = server {
                    map.retain(|k, _| raw::ICE_SERVER_KEYS.contains(&k.as_str()));
                }
            }
        }
        // The Supervisor leaves unset optional values out, but a hand-written file may say
        // `key: null` (or `key:`) to mean the same.
        top.retain(|_, v| !v.is_null());
    }
}

/// serde_path_to_error writes `cameras[0].url`; the root is `.`.
fn format_path(path: &str) -> String {
    if path == "." {
        String::new()
    } else {
        path.to_string()
    }
}

/// Turns serde's wording ("invalid type: string \"x\", expected i64") into the user's.
fn humanize_serde(message: &str) -> String {
    message
        .replace("expected i64", "expected a whole number")
        .replace("expected f64", "expected a number")
        .replace("expected a boolean", "expected true or false")
        .replace("expected a sequence", "expected a list")
        .replace(
            "expected struct RawCamera",
            "expected a camera (name and url)",
        )
        .replace(
            "expected struct RawIceServer",
            "expected a server (url, and for TURN username and credential)",
        )
        .replace(
            "expected struct RawMqtt",
            "expected a mapping (host, port, username, password)",
        )
        .replace("invalid type: ", "")
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn check_keys(
    map: &serde_json::Map<String, Value>,
    prefix: &str,
    known: &[&str],
    problems: &mut Vec<Problem>,
) {
    for key in map.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        let hint = match closest(key, known) {
            Some(best) => format!("did you mean '{best}'?"),
            None => format!("valid keys here: {}", known.join(", ")),
        };
        problems.push(Problem {
            key: format!("{prefix}{key}"),
            message: format!("unknown option; {hint}"),
        });
    }
}

/// The known key nearest to `key`, if it is near enough to be a typo.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let key = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (*k, strsim::damerau_levenshtein(&key, k)))
        .filter(|(k, d)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
}

fn check_values(raw: RawOptions, mode: Mode, problems: &mut Vec<Problem>) -> Config {
    let mut push = |key: String, message: String| problems.push(Problem { key, message });

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut cameras = Vec::with_capacity(raw.cameras.len());
    for (i, camera) in raw.cameras.into_iter().enumerate() {
        let key = |field: &str| format!("cameras[{i}].{field}");
        if let Err(message) = check_camera_name(&camera.name) {
            push(key("name"), message);
        } else if let Some(first) = seen.insert(camera.name.clone(), i) {
            push(
                key("name"),
                format!(
                    "'{}' is already the name of cameras[{first}]; each camera needs its own name",
                    camera.name
                ),
            );
        }
        // The camera's name is in the message too: `cameras[3]` alone is hard to find in a list.
        let named = |message: String| match camera.name.is_empty() {
            true => message,
            false => format!("camera '{}': {message}", camera.name),
        };
        if let Err(message) = check_camera_url(&camera.url) {
            push(key("url"), named(message));
        }
        // An empty `sub_url` (the options form's cleared field) means no sub stream.
        let sub_url = camera.sub_url.filter(|url| !url.trim().is_empty());
        if let Some(sub_url) = &sub_url {
            if let Err(message) = check_camera_url(sub_url) {
                push(key("sub_url"), named(message));
            } else if sub_url == &camera.url {
                push(
                    key("sub_url"),
                    format!(
                        "'{}' is the same stream as url; give the camera's second, lighter \
                         stream (like .../stream2 on a Tapo, .../h264Preview_01_sub on a \
                         Reolink) or leave sub_url out",
                        redact_url(sub_url)
                    ),
                );
            }
        }
        cameras.push(CameraConfig {
            name: camera.name,
            source: CameraSource::Url(CameraUrl::new(camera.url)),
            sub_source: sub_url.map(CameraUrl::new),
            detection: camera.detection,
        });
    }

    if !(0.0..=1.0).contains(&raw.cry_threshold) || raw.cry_threshold.is_nan() {
        push(
            "cry_threshold".into(),
            format!(
                "{} is out of range; use a number from 0 to 1 (default {})",
                raw.cry_threshold,
                raw::DEFAULT_CRY_THRESHOLD
            ),
        );
    }

    let cry_min_level = check_range(
        "cry_min_level",
        raw.cry_min_level,
        (MIN_CRY_MIN_LEVEL, 0.0),
        "a level in dBFS from -100 (hear the faintest sound) to 0 (only the loudest)",
        raw::DEFAULT_CRY_MIN_LEVEL,
        &mut push,
    );
    let cry_hold = check_range(
        "cry_hold",
        raw.cry_hold,
        (0.0, MAX_CRY_HOLD),
        "a number of seconds from 0 to 300",
        raw::DEFAULT_CRY_HOLD,
        &mut push,
    );
    let clips = check_clips(
        RawClips {
            enabled: raw.clips,
            retention_days: raw.clip_retention_days,
            max_mb: raw.clip_max_mb,
            dir: raw.clips_dir,
        },
        mode,
        &mut push,
    );
    let yamnet_model = raw
        .yamnet_model
        .filter(|p| !p.trim().is_empty())
        .map(std::path::PathBuf::from);

    let rtsp_port = check_port("rtsp_port", raw.rtsp_port, &mut push);
    let web_port = check_port("web_port", raw.web_port, &mut push);
    let api_port = check_port("api_port", raw.api_port, &mut push);
    let lan_port = raw.lan_port.map(|p| check_port("lan_port", p, &mut push));
    let mut ports = vec![
        ("rtsp_port", rtsp_port),
        ("web_port", web_port),
        ("api_port", api_port),
    ];
    ports.extend(lan_port.map(|p| ("lan_port", p)));
    for (i, (a, pa)) in ports.iter().enumerate() {
        for (b, pb) in &ports[i + 1..] {
            if pa == pb && *pa != 0 {
                push(
                    (*b).into(),
                    format!("{pb} is also {a}; each service needs a port of its own"),
                );
            }
        }
    }

    let rtsp_auth = check_credentials(
        "rtsp_username",
        raw.rtsp_username,
        "rtsp_password",
        raw.rtsp_password,
        &mut push,
    );
    let camera_latency = check_whole_range(
        "camera_latency_ms",
        raw.camera_latency_ms,
        (0, MAX_CAMERA_LATENCY_MS),
        "milliseconds",
        raw::DEFAULT_CAMERA_LATENCY_MS,
        &mut push,
    )
    .map_or(Duration::ZERO, Duration::from_millis);
    let stall_timeout = check_whole_range(
        "stall_timeout",
        raw.stall_timeout,
        (MIN_STALL_TIMEOUT, MAX_STALL_TIMEOUT),
        "seconds",
        raw::DEFAULT_STALL_TIMEOUT,
        &mut push,
    )
    .map_or(Duration::ZERO, Duration::from_secs);
    let api_auth = check_credentials(
        "api_username",
        raw.api_username,
        "api_password",
        raw.api_password,
        &mut push,
    );
    let lan_auth = check_credentials(
        "lan_username",
        raw.lan_username,
        "lan_password",
        raw.lan_password,
        &mut push,
    );

    let web_allow = match raw.web_allow {
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match parse_ipnet(s) {
                Ok(net) => Some(net),
                Err(message) => {
                    push(format!("web_allow[{i}]"), message);
                    None
                }
            })
            .collect(),
        None if mode == Mode::Addon => vec![IpNet::host(INGRESS_GATEWAY)],
        None => Vec::new(),
    };

    let webrtc_ice_servers = raw
        .webrtc_ice_servers
        .iter()
        .enumerate()
        .filter_map(|(i, server)| {
            IceServer::parse(
                &server.url,
                server.username.as_deref(),
                server.credential.as_deref(),
            )
            .map_err(|message| push(format!("webrtc_ice_servers[{i}].url"), message))
            .ok()
        })
        .collect();

    let mqtt = check_mqtt(raw.mqtt, &mut push);

    let log_level = match raw.log_level.to_ascii_lowercase().as_str() {
        "trace" => LogLevel::Trace,
        "debug" => LogLevel::Debug,
        "info" | "notice" => LogLevel::Info,
        "warning" | "warn" => LogLevel::Warning,
        "error" | "fatal" => LogLevel::Error,
        other => {
            push(
                "log_level".into(),
                format!(
                    "'{other}' is not a log level; use one of: {}",
                    raw::LOG_LEVELS.join(", ")
                ),
            );
            LogLevel::Info
        }
    };

    Config {
        mode,
        data_dir: match mode {
            Mode::Addon => super::ADDON_DATA_DIR.into(),
            Mode::Standalone => super::default_standalone_data_dir(),
        },
        cameras,
        cry_threshold: raw.cry_threshold as f32,
        cry_min_level: cry_min_level as f32,
        cry_hold,
        yamnet_model,
        clips,
        rtsp_port,
        rtsp_auth,
        camera_latency,
        stall_timeout,
        unify_audio: raw.unify_audio,
        web_port,
        web_allow,
        api_port,
        api_auth,
        lan_port,
        lan_auth,
        homeassistant_cameras: raw.homeassistant_cameras,
        webrtc_ice_servers,
        mqtt,
        log_level,
    }
}

/// A camera name becomes an RTSP path (`/nursery`) and part of entity ids
/// (`binary_sensor.nursery_crying`), so it is held to what both allow.
pub fn check_camera_name(name: &str) -> Result<(), String> {
    const ALLOWED: &str = "use lowercase letters a-z, digits and _ (like 'nursery' or 'baby_room')";
    if name.trim().is_empty() {
        return Err(format!("a camera needs a name; {ALLOWED}"));
    }
    if name.len() > MAX_CAMERA_NAME {
        return Err(format!(
            "'{name}' is {} characters long; use at most {MAX_CAMERA_NAME}",
            name.len()
        ));
    }
    let valid = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        let suggestion = slugify(name);
        let hint = if suggestion.is_empty() {
            String::new()
        } else {
            format!(", for example '{suggestion}'")
        };
        return Err(format!(
            "'{name}' cannot be a stream path and entity id; {ALLOWED}{hint}"
        ));
    }
    if name.starts_with('_') || name.ends_with('_') {
        return Err(format!("'{name}' must not start or end with _; {ALLOWED}"));
    }
    if name.ends_with(SUB_STREAM_SUFFIX) {
        return Err(format!(
            "'{name}' ends with {SUB_STREAM_SUFFIX}, which names a camera's sub stream \
             ('nursery{SUB_STREAM_SUFFIX}' is the sub_url of 'nursery'); choose another name"
        ));
    }
    Ok(())
}

/// What a display name would become as a camera name.
fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_')
        .chars()
        .take(MAX_CAMERA_NAME)
        .collect()
}

/// A camera URL must have a scheme Vigil pulls ([`CAMERA_URL_SCHEMES`]) and a host. Messages
/// show it redacted.
pub fn check_camera_url(url: &str) -> Result<(), String> {
    const ALLOWED: &str = "use rtsp://[user:password@]host[:port]/path (rtsps:// for TLS), \
                           or a camera's FLV stream over http(s):// or rtmp(s):// \
                           (Reolink: http://host/flv?port=1935&app=bcs&stream=channel0_main.bcs&user=U&password=P)";
    if url.trim().is_empty() {
        return Err(format!("a camera needs a url; {ALLOWED}"));
    }
    let shown = redact_url(url);
    let parsed = match url::Url::parse(url.trim()) {
        Ok(parsed) => parsed,
        Err(e) => return Err(format!("'{shown}' is not a valid URL ({e}); {ALLOWED}")),
    };
    if StreamProtocol::of_scheme(parsed.scheme()).is_none() {
        return Err(format!(
            "'{shown}' is a {}:// URL, which Vigil does not take; the schemes allowed are \
             {CAMERA_URL_SCHEMES}",
            parsed.scheme()
        ));
    }
    if !parsed.has_host() || parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{shown}' has no host; {ALLOWED}"));
    }
    if url.trim() != url {
        return Err(format!("'{shown}' has spaces around it; remove them"));
    }
    Ok(())
}

/// The clip keys of [`RawOptions`].
struct RawClips {
    enabled: bool,
    retention_days: i64,
    max_mb: i64,
    dir: Option<String>,
}

/// The cry clips' options; `clips_dir` only standalone (the add-on's clips are Home Assistant
/// media, in `/media/vigil`).
fn check_clips(raw: RawClips, mode: Mode, push: &mut impl FnMut(String, String)) -> ClipOptions {
    let retention_days = check_whole_range(
        "clip_retention_days",
        raw.retention_days,
        (1, MAX_CLIP_RETENTION_DAYS),
        "days",
        raw::DEFAULT_CLIP_RETENTION_DAYS,
        push,
    )
    .unwrap_or(raw::DEFAULT_CLIP_RETENTION_DAYS as u64) as u32;
    let max_mb = check_whole_range(
        "clip_max_mb",
        raw.max_mb,
        (MIN_CLIP_MAX_MB, MAX_CLIP_MAX_MB),
        "megabytes",
        raw::DEFAULT_CLIP_MAX_MB,
        push,
    )
    .unwrap_or(raw::DEFAULT_CLIP_MAX_MB as u64);
    let dir = raw
        .dir
        .filter(|d| !d.trim().is_empty())
        .map(std::path::PathBuf::from);
    if mode == Mode::Addon && dir.is_some() {
        push(
            "clips_dir".into(),
            format!(
                "only standalone Vigil takes it; the add-on keeps its clips in {} (Home \
                 Assistant's Media → My media → vigil): remove the key",
                super::ADDON_CLIPS_DIR
            ),
        );
    }
    ClipOptions {
        enabled: raw.enabled,
        retention_days,
        max_bytes: max_mb * super::MEGABYTE,
        dir,
    }
}

/// `value` must lie in `range` (inclusive); else a problem saying what is allowed.
fn check_range(
    key: &str,
    value: f64,
    (low, high): (f64, f64),
    allowed: &str,
    default: f64,
    push: &mut impl FnMut(String, String),
) -> f64 {
    if (low..=high).contains(&value) {
        value
    } else {
        push(
            key.into(),
            format!("{value} is out of range; use {allowed} (default {default})"),
        );
        default
    }
}

fn check_port(key: &str, value: i64, push: &mut impl FnMut(String, String)) -> u16 {
    match u16::try_from(value) {
        Ok(port) if port > 0 => port,
        _ => {
            push(
                key.into(),
                format!("{value} is not a port; use a number from 1 to 65535"),
            );
            0
        }
    }
}

/// A whole number within `range` (inclusive), in `unit`.
fn check_whole_range(
    key: &str,
    value: i64,
    (min, max): (i64, i64),
    unit: &str,
    default: i64,
    push: &mut impl FnMut(String, String),
) -> Option<u64> {
    if (min..=max).contains(&value) {
        return u64::try_from(value).ok();
    }
    push(
        key.into(),
        format!("{value} is out of range; use {min} to {max} {unit} (default {default})"),
    );
    None
}

fn check_credentials(
    user_key: &str,
    user: Option<String>,
    password_key: &str,
    password: Option<String>,
    push: &mut impl FnMut(String, String),
) -> Option<Credentials> {
    let user = user.filter(|u| !u.is_empty());
    let password = password.filter(|p| !p.is_empty());
    match (user, password) {
        (None, None) => None,
        (Some(username), Some(password)) => {
            if username.contains(':') {
                push(user_key.into(), "must not contain ':'".into());
            }
            Some(Credentials {
                username,
                password: Secret::new(password),
            })
        }
        (Some(_), None) => {
            push(
                password_key.into(),
                format!("{user_key} is set, so {password_key} is needed too (or remove both)"),
            );
            None
        }
        (None, Some(_)) => {
            push(
                user_key.into(),
                format!("{password_key} is set, so {user_key} is needed too (or remove both)"),
            );
            None
        }
    }
}

fn check_mqtt(raw: raw::RawMqtt, push: &mut impl FnMut(String, String)) -> MqttOptions {
    let host = raw.host.filter(|h| !h.trim().is_empty());
    if let Some(host) = &host
        && (host.contains("://") || host.contains('/') || host.contains(' '))
    {
        push(
            "mqtt.host".into(),
            format!(
                "'{}' is not a host name; give only the host, like 'core-mosquitto' or '192.168.1.5'",
                redact_url(host)
            ),
        );
    }
    let port = raw
        .port
        .map(|p| check_port("mqtt.port", p, push))
        .filter(|p| *p != 0);
    if host.is_none() && (port.is_some() || raw.username.is_some() || raw.password.is_some()) {
        push(
            "mqtt.host".into(),
            "mqtt.port/username/password are set but mqtt.host is not; set the broker's host, or \
             leave mqtt empty to use the broker Home Assistant's Supervisor provides"
                .into(),
        );
    }
    MqttOptions {
        host,
        port,
        username: raw.username.filter(|u| !u.is_empty()),
        password: raw.password.filter(|p| !p.is_empty()).map(Secret::new),
    }
}

fn parse_ipnet(text: &str) -> Result<IpNet, String> {
    const ALLOWED: &str = "use an IP address or a network like 192.168.1.0/24";
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not an IP address; {ALLOWED}"))?;
    let full = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => full,
        Some(p) => match p.trim().parse::<u8>() {
            Ok(p) if p <= full => p,
            _ => return Err(format!("'{text}' has a bad prefix length; {ALLOWED}")),
        },
    };
    Ok(IpNet { addr, prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validates `yaml` and returns each problem as "key: message".
    fn problems(yaml: &str) -> Vec<String> {
        match Config::from_yaml(yaml, Mode::Standalone) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn check(yaml: &str, key: &str, words: &[&str]) {
        let found = problems(yaml);
        let hit = found.iter().find(|p| p.starts_with(&format!("{key}:")));
        let Some(hit) = hit else {
            panic!("no problem for {key} in {found:?}\n--- yaml:\n{yaml}");
        };
        for w in words {
            assert!(hit.contains(w), "{hit:?} should contain {w:?}");
        }
    }

    #[test]
    fn camera_latency_and_stall_timeout() {
        let config = Config::from_yaml("", Mode::Standalone).unwrap();
        assert_eq!(config.camera_latency, Duration::from_millis(100));
        assert_eq!(config.stall_timeout, Duration::from_secs(5));
        let config =
            Config::from_yaml("camera_latency_ms: 0\nstall_timeout: 12", Mode::Standalone).unwrap();
        assert_eq!(config.camera_latency, Duration::ZERO);
        assert_eq!(config.stall_timeout, Duration::from_secs(12));
        check(
            "camera_latency_ms: 5000",
            "camera_latency_ms",
            &["0 to 2000 milliseconds"],
        );
        check(
            "stall_timeout: 1",
            "stall_timeout",
            &["2 to 60 seconds", "default 5"],
        );
    }

    #[test]
    fn empty_options_are_valid_and_mean_the_demo() {
        let config = Config::from_yaml("", Mode::Standalone).unwrap();
        assert!(config.uses_demo_camera());
        assert_eq!(config.rtsp_port, 8554);
        assert_eq!(config.web_port, 8099);
        assert_eq!(config.api_port, 1984);
        assert!(config.web_allow.is_empty());
        let addon = Config::from_yaml("cameras: []\nmqtt: {}", Mode::Addon).unwrap();
        assert_eq!(addon.web_allow, vec![IpNet::host(INGRESS_GATEWAY)]);
    }

    #[test]
    fn clip_options() {
        let config = Config::from_yaml("", Mode::Standalone).unwrap();
        assert!(config.clips.enabled);
        assert_eq!(config.clips.retention_days, 7);
        assert_eq!(config.clips.max_bytes, 1000 * 1024 * 1024);
        assert_eq!(config.clips_dir(), config.data_dir.join("clips"));
        let config = Config::from_yaml(
            "clips: false\nclip_retention_days: 30\nclip_max_mb: 200\nclips_dir: /srv/clips",
            Mode::Standalone,
        )
        .unwrap();
        assert!(!config.clips.enabled);
        assert_eq!(config.clips.retention_days, 30);
        assert_eq!(config.clips.max_bytes, 200 * 1024 * 1024);
        assert_eq!(config.clips_dir(), std::path::Path::new("/srv/clips"));
        let addon = Config::from_yaml("cameras: []\nmqtt: {}", Mode::Addon).unwrap();
        assert_eq!(addon.clips_dir(), std::path::Path::new("/media/vigil"));

        check(
            "clip_retention_days: 0",
            "clip_retention_days",
            &["1 to 365 days", "default 7"],
        );
        check(
            "clip_max_mb: 10",
            "clip_max_mb",
            &["50 to 1000000 megabytes", "default 1000"],
        );
        check("clips: sometimes", "clips", &["true or false"]);
        let addon_problems = match Config::from_yaml("clips_dir: /media/x", Mode::Addon) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        };
        assert!(
            addon_problems
                .iter()
                .any(|p| p.starts_with("clips_dir:") && p.contains("/media/vigil")),
            "{addon_problems:?}"
        );
    }

    #[test]
    fn camera_names() {
        check(
            "cameras: [{name: '', url: 'rtsp://c/x'}]",
            "cameras[0].name",
            &["needs a name"],
        );
        check(
            "cameras: [{name: 'Baby Room', url: 'rtsp://c/x'}]",
            "cameras[0].name",
            &["'Baby Room'", "a-z", "baby_room"],
        );
        check(
            "cameras: [{name: a, url: 'rtsp://c/x'}, {name: a, url: 'rtsp://d/x'}]",
            "cameras[1].name",
            &["already", "cameras[0]"],
        );
        check(
            "cameras: [{name: x/y, url: 'rtsp://c/x'}]",
            "cameras[0].name",
            &["stream path"],
        );
    }

    #[test]
    fn sub_streams() {
        let config = Config::from_yaml(
            "cameras: [{name: a, url: 'rtsp://u:p@c/main', sub_url: 'rtsp://u:p@c/sub'}, \
             {name: b, url: 'rtsp://d/x', sub_url: ''}]",
            Mode::Standalone,
        )
        .unwrap();
        assert_eq!(
            config.cameras[0].sub_source.as_ref().map(|u| u.expose()),
            Some("rtsp://u:p@c/sub")
        );
        assert_eq!(config.cameras[0].sub_name(), "a_sub");
        assert!(config.cameras[1].sub_source.is_none(), "empty = none");
        assert!(!config.to_redacted_yaml().contains("u:p@"));
        check(
            "cameras: [{name: a, url: 'rtsp://c/x', sub_url: 'ftp://admin:pw123@c/y'}]",
            "cameras[0].sub_url",
            &["ftp://", "rtsp://", "http://", "rtmp://"],
        );
        check(
            "cameras: [{name: a, url: 'rtsp://c/x', sub_url: 'rtsp://c/x'}]",
            "cameras[0].sub_url",
            &["same stream as url"],
        );
        // `nursery_sub` is nursery's sub stream: no camera may take the name.
        check(
            "cameras: [{name: nursery_sub, url: 'rtsp://c/x'}]",
            "cameras[0].name",
            &["ends with _sub", "sub stream"],
        );
    }

    #[test]
    fn unify_audio_is_on_by_default() {
        assert!(Config::from_yaml("", Mode::Standalone).unwrap().unify_audio);
        assert!(
            !Config::from_yaml("unify_audio: false", Mode::Standalone)
                .unwrap()
                .unify_audio
        );
        check("unify_audio: 3", "unify_audio", &["expected true or false"]);
    }

    #[test]
    fn camera_urls() {
        check(
            "cameras: [{name: a, url: 'udp://admin:pw123@cam/x'}]",
            "cameras[0].url",
            &[
                "udp://",
                "does not take",
                "rtsp://",
                "rtsps://",
                "http://",
                "https://",
                "rtmp://",
            ],
        );
        check(
            "cameras: [{name: a, url: 'onvif://cam/x?user=admin&password=pw123'}]",
            "cameras[0].url",
            &["onvif://", "user=***&password=***"],
        );
        for bad in [
            "udp://admin:pw123@cam/x",
            "onvif://cam/x?user=admin&password=pw123",
        ] {
            let text = problems(&format!("cameras: [{{name: a, url: '{bad}'}}]")).concat();
            assert!(!text.contains("pw123"), "{text}");
        }
        // Reolink's own streams: HTTP-FLV and RTMP, login in the query.
        let config = Config::from_yaml(
            "cameras: [{name: a, \
               url: 'http://cam/flv?port=1935&app=bcs&stream=channel0_main.bcs&user=admin&password=pw123', \
               sub_url: 'rtmp://cam/bcs/channel0_sub.bcs?channel=0&stream=1&user=admin&password=pw123'}, \
             {name: b, url: 'https://cam/flv?x=1'}, {name: c, url: 'rtmps://cam/bcs/x'}]",
            Mode::Standalone,
        )
        .unwrap();
        let camera = &config.cameras[0];
        let CameraSource::Url(url) = &camera.source else {
            panic!("not a url")
        };
        assert_eq!(url.protocol(), StreamProtocol::HttpFlv);
        assert_eq!(
            camera.sub_source.as_ref().map(|u| u.protocol()),
            Some(StreamProtocol::Rtmp)
        );
        let yaml = config.to_redacted_yaml();
        assert!(
            !yaml.contains("pw123") && !yaml.contains("user=admin"),
            "{yaml}"
        );
        check(
            "cameras: [{name: a, url: 'rtsp:///x'}]",
            "cameras[0].url",
            &["rtsp://"],
        );
        check("cameras: [{name: a}]", "cameras[0].url", &["needs a url"]);
        check(
            "cameras: [{name: a, url: 'just text'}]",
            "cameras[0].url",
            &["not a valid URL"],
        );
        assert!(problems("cameras: [{name: a, url: 'rtsps://u:p@cam:322/x'}]").is_empty());
    }

    #[test]
    fn ports_thresholds_levels() {
        check("rtsp_port: 70000", "rtsp_port", &["1 to 65535"]);
        check("web_port: 0", "web_port", &["1 to 65535"]);
        check("api_port: 8554", "api_port", &["rtsp_port"]);
        check("lan_port: 1984", "lan_port", &["api_port"]);
        check("lan_port: 0", "lan_port", &["1 to 65535"]);
        check("cry_threshold: 1.5", "cry_threshold", &["0 to 1"]);
        check("cry_threshold: -0.1", "cry_threshold", &["0 to 1"]);
        check(
            "cry_min_level: 5",
            "cry_min_level",
            &["dBFS", "-100", "default -70"],
        );
        check("cry_min_level: -130", "cry_min_level", &["-100"]);
        check("cry_hold: -1", "cry_hold", &["seconds", "0 to 300"]);
        check("cry_hold: 1000", "cry_hold", &["0 to 300"]);
        check("cry_hold: soon", "cry_hold", &["expected a number"]);
        check("log_level: loud", "log_level", &["debug", "info"]);
        check("rtsp_port: '8554x'", "rtsp_port", &["whole number"]);
        check("mqtt: {port: 1883}", "mqtt.host", &["mqtt.host"]);
    }

    #[test]
    fn unknown_keys_suggest_the_closest() {
        check("rtps_port: 8554", "rtps_port", &["unknown", "rtsp_port"]);
        check(
            "cameras: [{name: a, url: 'rtsp://c/x', urll: x}]",
            "cameras[0].urll",
            &["'url'"],
        );
        check("mqtt: {hots: x}", "mqtt.hots", &["'host'"]);
        check("zzzzzzzz: 1", "zzzzzzzz", &["valid keys", "cameras"]);
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let found = problems("cameras:\n  - name: a\n    url: [unclosed\n");
        assert!(found[0].contains("line"), "{found:?}");
        assert!(found[0].contains("column"), "{found:?}");
        let json = parse_text("{\n  \"cameras\": [,]\n}", true).unwrap_err();
        assert!(json.to_string().contains("line 2"), "{json}");
    }

    #[test]
    fn credentials_come_in_pairs() {
        check("rtsp_username: u", "rtsp_password", &["rtsp_username"]);
        check("api_password: p", "api_username", &["api_password"]);
        check("lan_username: u", "lan_password", &["lan_username"]);
        let c = Config::from_yaml("rtsp_username: u\nrtsp_password: pw", Mode::Standalone).unwrap();
        assert!(!c.to_redacted_yaml().contains("pw\n"));
    }

    #[test]
    fn ice_servers() {
        let c = Config::from_yaml(
            "webrtc_ice_servers:\n  - url: stun:stun.example.com\n  - url: turn:t.example.com\n    \
             username: u\n    credential: turnsecret\n",
            Mode::Standalone,
        )
        .unwrap();
        assert_eq!(c.webrtc_ice_servers.len(), 2);
        assert!(!c.to_redacted_yaml().contains("turnsecret"));
        check(
            "webrtc_ice_servers: [{url: 'turn:t.example.com'}]",
            "webrtc_ice_servers[0].url",
            &["username", "credential"],
        );
        check(
            "webrtc_ice_servers: [{url: 'http://x'}]",
            "webrtc_ice_servers[0].url",
            &["stun:host"],
        );
        check(
            "webrtc_ice_servers: [{urls: 'stun:x'}]",
            "webrtc_ice_servers[0].urls",
            &["'url'"],
        );
        assert!(
            Config::from_yaml("", Mode::Addon)
                .unwrap()
                .webrtc_ice_servers
                .is_empty()
        );
    }

    #[test]
    fn web_allow_networks() {
        let c = Config::from_yaml("web_allow: [127.0.0.1, 10.0.0.0/8]", Mode::Addon).unwrap();
        assert!(c.web_allow[0].contains("127.0.0.1".parse().unwrap()));
        assert!(c.web_allow[1].contains("10.2.3.4".parse().unwrap()));
        assert!(!c.web_allow[1].contains("11.2.3.4".parse().unwrap()));
        assert!(c.web_allow[0].contains("::ffff:127.0.0.1".parse().unwrap()));
        check("web_allow: [nope]", "web_allow[0]", &["IP address"]);
    }

    #[test]
    fn redacted_print_hides_every_secret() {
        let c = Config::from_yaml(
            "cameras: [{name: a, url: 'rtsp://admin:camsecret@cam/x'}]\n\
             mqtt: {host: h, username: u, password: mqttsecret}\n\
             api_username: u\napi_password: apisecret",
            Mode::Standalone,
        )
        .unwrap();
        let text = format!("{}\n{:?}", c.to_redacted_yaml(), c);
        for secret in ["camsecret", "mqttsecret", "apisecret"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("rtsp://admin:***@cam/x"), "{text}");
    }
}
