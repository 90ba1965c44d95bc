//! Options: read `/data/options.json` (inside the add-on) or a YAML/JSON file (standalone) into
//! one validated [`Config`], before anything starts.
//!
//! Every problem is reported at once, each naming its key (`cameras[1].url`) and what is allowed.
//! Camera URLs and passwords are kept in [`Secret`]s; the [`Config`] prints redacted. This module
//! never opens a socket or starts a pipeline.

mod ice;
mod raw;
mod validate;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use ice::{IceKind, IceServer};
pub use raw::{
    CAMERA_KEYS, DEFAULT_API_PORT, DEFAULT_CAMERA_LATENCY_MS, DEFAULT_CLIP_MAX_MB,
    DEFAULT_CLIP_RETENTION_DAYS, DEFAULT_CRY_HOLD, DEFAULT_CRY_MIN_LEVEL, DEFAULT_CRY_THRESHOLD,
    DEFAULT_RTSP_PORT, DEFAULT_STALL_TIMEOUT, DEFAULT_WEB_PORT, ICE_SERVER_KEYS, LOG_LEVELS,
    MQTT_KEYS, TOP_KEYS,
};

use crate::secret::{Secret, redact_url};

/// Where the add-on's options live inside the container.
pub const ADDON_OPTIONS_PATH: &str = "/data/options.json";

/// Where the add-on keeps state between restarts.
pub const ADDON_DATA_DIR: &str = "/data";

/// Where the add-on writes cry clips: Home Assistant's media folder (mapped read-write), so its
/// Media browser lists them under My media → vigil.
pub const ADDON_CLIPS_DIR: &str = "/media/vigil";

/// The clips folder under the standalone data directory, without `clips_dir`.
pub const STANDALONE_CLIPS_SUBDIR: &str = "clips";

/// The standalone data directory: `$XDG_STATE_HOME/vigil`, else `~/.local/state/vigil`, else
/// `./vigil-data`.
pub fn default_standalone_data_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(state).join("vigil");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(home).join(".local/state/vigil");
    }
    PathBuf::from("vigil-data")
}

/// The only peer that may open the panel inside Home Assistant: the Supervisor's ingress gateway.
pub const INGRESS_GATEWAY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(172, 30, 32, 2));

/// How Vigil was started, which decides a few defaults that the options do not carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Inside Home Assistant: options from the Supervisor, panel only through ingress.
    Addon,
    /// From a config file or with no config at all.
    Standalone,
}

/// Where `api_port` listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiExposure {
    /// Inside Home Assistant: loopback (Home Assistant core runs on the host's network, as this
    /// add-on does) and the Supervisor's network gateway 172.30.32.1 (what other add-ons reach
    /// a host-network add-on on); only peers from there are served. The LAN uses `lan_port`.
    Internal,
    /// Standalone: every interface (Home Assistant may run on another machine).
    Everywhere,
}

/// The Supervisor's internal network (`hassio`), whose gateway is the host itself.
pub const SUPERVISOR_NETWORK: IpNet = IpNet {
    addr: IpAddr::V4(std::net::Ipv4Addr::new(172, 30, 32, 0)),
    prefix: 23,
};

/// The host's address on [`SUPERVISOR_NETWORK`].
pub const SUPERVISOR_GATEWAY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(172, 30, 32, 1));

/// Where the options come from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// The add-on's `/data/options.json`, written by the Supervisor.
    Addon(PathBuf),
    /// A YAML or JSON file given with `--config`.
    File(PathBuf),
    /// No file: every default, and so the demo camera.
    Defaults,
}

impl ConfigSource {
    /// `--config` if given; else the add-on's options file if it exists; else the defaults.
    pub fn discover(explicit: Option<&Path>) -> Self {
        match explicit {
            Some(path) => ConfigSource::File(path.to_path_buf()),
            None if Path::new(ADDON_OPTIONS_PATH).exists() => {
                ConfigSource::Addon(PathBuf::from(ADDON_OPTIONS_PATH))
            }
            None => ConfigSource::Defaults,
        }
    }

    pub fn mode(&self) -> Mode {
        match self {
            ConfigSource::Addon(_) => Mode::Addon,
            _ => Mode::Standalone,
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Addon(p) => write!(f, "add-on options {}", p.display()),
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::Defaults => f.write_str("built-in defaults"),
        }
    }
}

/// The validated options.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    #[serde(skip)]
    pub mode: Mode,
    /// Where state that survives a restart is kept: `/data` in the add-on. Not an option; set
    /// with `--data-dir` standalone.
    #[serde(skip)]
    pub data_dir: PathBuf,
    pub cameras: Vec<CameraConfig>,
    pub cry_threshold: f32,
    /// The volume gate in dBFS: quieter windows never count as crying.
    pub cry_min_level: f32,
    /// Seconds without a cry before crying ends.
    pub cry_hold: f64,
    /// The YAMNet model file; `None` = the image's, else `models/` of a source checkout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yamnet_model: Option<PathBuf>,
    pub clips: ClipOptions,
    pub rtsp_port: u16,
    /// Credentials a client must give to play the restream; `None` = open.
    pub rtsp_auth: Option<Credentials>,
    /// How long each camera's jitter buffer may hold packets (`camera_latency_ms`).
    #[serde(rename = "camera_latency_ms", serialize_with = "as_millis")]
    pub camera_latency: Duration,
    /// No frame for this long restarts a camera's connection (`stall_timeout`, in seconds).
    #[serde(serialize_with = "as_seconds")]
    pub stall_timeout: Duration,
    /// Every camera's audio as AAC on the restream (Opus over WebRTC), whatever it sends.
    pub unify_audio: bool,
    pub web_port: u16,
    /// Peers that may open the panel on `web_port`; empty = anyone.
    pub web_allow: Vec<IpNet>,
    pub api_port: u16,
    /// Credentials for the go2rtc-compatible API (HTTP Basic); `None` = open.
    pub api_auth: Option<Credentials>,
    /// The LAN port for players (VLC, IP Cam Viewer): the same API on every interface; `None` =
    /// off. In the add-on `api_port` is for Home Assistant only (see [`ApiExposure`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lan_port: Option<u16>,
    /// Credentials for `lan_port` (HTTP Basic); `None` = open.
    pub lan_auth: Option<Credentials>,
    /// Create, keep and remove one Generic Camera entry per camera in Home Assistant.
    pub homeassistant_cameras: bool,
    /// STUN/TURN servers offered to every WebRTC viewer; empty = none (no external STUN).
    pub webrtc_ice_servers: Vec<IceServer>,
    pub mqtt: MqttOptions,
    pub log_level: LogLevel,
}

impl Config {
    /// Who may reach `api_port`: in the add-on only Home Assistant and the add-ons beside it.
    pub fn api_exposure(&self) -> ApiExposure {
        match self.mode {
            Mode::Addon => ApiExposure::Internal,
            Mode::Standalone => ApiExposure::Everywhere,
        }
    }

    /// Reads and validates the options from `source`.
    pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
        let value = match source {
            ConfigSource::Defaults => serde_json::Value::Object(Default::default()),
            ConfigSource::Addon(path) | ConfigSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::single("", format!("cannot read {}: {e}", path.display()))
                })?;
                validate::parse_text(&text, is_json(path))?
            }
        };
        validate::validate(value, source.mode())
    }

    /// Parses options from text (YAML, which also reads JSON), for tests and tools.
    pub fn from_yaml(text: &str, mode: Mode) -> Result<Config, ConfigError> {
        validate::validate(validate::parse_text(text, false)?, mode)
    }

    /// The options as understood, secrets redacted, as YAML (what `vigil check-config` prints).
    pub fn to_redacted_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_else(|e| format!("# cannot print options: {e}\n"))
    }

    /// Where cry clips go: `/media/vigil` in the add-on; standalone `clips_dir`, else `clips`
    /// under the data directory (which `--data-dir` may change after loading).
    pub fn clips_dir(&self) -> PathBuf {
        match (self.mode, &self.clips.dir) {
            (Mode::Addon, _) => PathBuf::from(ADDON_CLIPS_DIR),
            (Mode::Standalone, Some(dir)) => dir.clone(),
            (Mode::Standalone, None) => self.data_dir.join(STANDALONE_CLIPS_SUBDIR),
        }
    }

    /// True when no camera is configured and the built-in demo camera runs instead.
    pub fn uses_demo_camera(&self) -> bool {
        self.cameras.is_empty()
    }

    /// The cameras to run: those configured, or the demo camera when there are none.
    pub fn cameras_to_run(&self) -> Vec<CameraConfig> {
        if self.uses_demo_camera() {
            vec![CameraConfig {
                name: DEMO_CAMERA_NAME.to_string(),
                source: CameraSource::Demo,
                sub_source: None,
                detection: true,
            }]
        } else {
            self.cameras.clone()
        }
    }
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// The demo camera's name, and so its restream path (`rtsp://<host>:8554/demo`).
pub const DEMO_CAMERA_NAME: &str = "demo";

/// The cry clips' options.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClipOptions {
    /// A clip of every cry episode (`clips`).
    #[serde(rename = "clips")]
    pub enabled: bool,
    /// Clips older than this many days are deleted (`clip_retention_days`).
    #[serde(rename = "clip_retention_days")]
    pub retention_days: u32,
    /// All clips together stay under this many bytes, the oldest deleted first (`clip_max_mb`).
    #[serde(rename = "clip_max_mb", serialize_with = "as_megabytes")]
    pub max_bytes: u64,
    /// Standalone `clips_dir`; see [`Config::clips_dir`].
    #[serde(rename = "clips_dir", skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

/// A megabyte as `clip_max_mb` counts it (MiB: what file managers show).
pub const MEGABYTE: u64 = 1024 * 1024;

fn as_megabytes<S: serde::Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(bytes / MEGABYTE)
}

/// One camera from the options.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CameraConfig {
    /// Lowercase letters, digits and `_`: the restream path and the entity id.
    pub name: String,
    #[serde(rename = "url")]
    pub source: CameraSource,
    /// The camera's second, lighter stream (`sub_url`), restreamed as `<name>_sub`.
    #[serde(rename = "sub_url", skip_serializing_if = "Option::is_none")]
    pub sub_source: Option<CameraUrl>,
    pub detection: bool,
}

/// The suffix that names a camera's sub stream (`nursery_sub`), so no camera may end with it.
pub const SUB_STREAM_SUFFIX: &str = "_sub";

impl CameraConfig {
    /// The sub stream's own name: `<camera>_sub`.
    pub fn sub_name(&self) -> String {
        sub_stream_name(&self.name)
    }
}

/// The name of `camera`'s sub stream.
pub fn sub_stream_name(camera: &str) -> String {
    format!("{camera}{SUB_STREAM_SUFFIX}")
}

/// Where a camera's stream comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraSource {
    /// A real camera's URL: RTSP, HTTP-FLV or RTMP (see [`StreamProtocol`]).
    Url(CameraUrl),
    /// The built-in test pattern, when no camera is configured.
    Demo,
}

impl fmt::Display for CameraSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CameraSource::Url(url) => url.fmt(f),
            CameraSource::Demo => f.write_str("built-in demo"),
        }
    }
}

impl serde::Serialize for CameraSource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// How Vigil pulls a camera's stream, chosen by its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamProtocol {
    /// `rtsp://`, `rtsps://`: RTSP over TCP, the camera's tracks as RTP.
    Rtsp,
    /// `http://`, `https://`: an FLV stream over HTTP (Reolink's `/flv?…`).
    HttpFlv,
    /// `rtmp://`, `rtmps://`: FLV over RTMP (Reolink's `rtmp://IP/bcs/…`).
    Rtmp,
}

/// The schemes a camera's `url` and `sub_url` may have, as shown in errors.
pub const CAMERA_URL_SCHEMES: &str =
    "rtsp://, rtsps://, http:// or https:// (FLV), rtmp:// or rtmps://";

impl StreamProtocol {
    /// The protocol for a URL scheme (lowercase), if Vigil takes it.
    pub fn of_scheme(scheme: &str) -> Option<Self> {
        Some(match scheme {
            "rtsp" | "rtsps" => StreamProtocol::Rtsp,
            "http" | "https" => StreamProtocol::HttpFlv,
            "rtmp" | "rtmps" => StreamProtocol::Rtmp,
            _ => return None,
        })
    }

    /// The protocol of a URL (its credentials shown or not), by its scheme; RTSP when the
    /// scheme is none Vigil takes (validation has refused those already).
    pub fn of_url(url: &str) -> Self {
        let scheme = url.split("://").next().unwrap_or_default();
        Self::of_scheme(&scheme.to_ascii_lowercase()).unwrap_or(StreamProtocol::Rtsp)
    }

    /// Its name for people: `RTSP`, `HTTP-FLV`, `RTMP`.
    pub fn label(self) -> &'static str {
        match self {
            StreamProtocol::Rtsp => "RTSP",
            StreamProtocol::HttpFlv => "HTTP-FLV",
            StreamProtocol::Rtmp => "RTMP",
        }
    }
}

/// A camera's URL (RTSP, HTTP-FLV or RTMP), which may carry its password, in the user info or in
/// the query string. Prints redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct CameraUrl(Secret);

impl CameraUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(Secret::new(url))
    }

    /// How the stream is pulled (validated URLs have one of [`CAMERA_URL_SCHEMES`]; anything
    /// else is tried as RTSP and fails there with its own error).
    pub fn protocol(&self) -> StreamProtocol {
        StreamProtocol::of_url(self.0.expose())
    }

    /// The URL with its credentials, for the camera's ingest only.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    pub fn redacted(&self) -> String {
        redact_url(self.0.expose())
    }
}

impl fmt::Debug for CameraUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for CameraUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl serde::Serialize for CameraUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// A user name and password pair.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// The `mqtt` options. Empty means: ask the Supervisor.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MqttOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

/// An IP address or network (`192.168.1.0/24`) allowed to open the panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn host(addr: IpAddr) -> Self {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, prefix }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address on a dual-stack socket.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl serde::Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The `log_level` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    pub fn as_filter(&self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One problem in the options: the key it is about and what is wrong or allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path, such as `cameras[1].url`; empty for the file as a whole.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Everything wrong with the options, each problem on a line of its own.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub fn single(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                key: key.into(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "invalid options ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}
