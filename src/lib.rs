//! Vigil: a baby-monitor camera hub for Home Assistant.
//!
//! The crate map (ARCHITECTURE.md has the whole picture):
//!
//! - [`config`]: options (`/data/options.json` or a YAML file) into one validated `Config`.
//! - [`secret`]: `Secret` and URL redaction; the only way a credential is shown.
//! - [`settings`]: per-camera settings changed from Home Assistant, persisted under /data.
//! - [`camera`]: one actor per camera owning its GStreamer pipeline.
//! - [`live`]: live viewers (WebRTC, MSE and `stream.mp4`, snapshots) fed from camera hubs.
//! - [`web`]: the HTTP servers (panel through ingress, the go2rtc-compatible API), access, and
//!   the wire formats.
//! - [`mqtt`]: Home Assistant over MQTT discovery: entities per camera, availability, commands.
//! - [`supervisor`]: the Supervisor's API (the MQTT service's credentials).
//! - [`homeassistant`]: one Generic Camera entry per camera in Home Assistant, via the
//!   Supervisor's proxy to Home Assistant's API.
//! - [`audio`]: cry detection (YAMNet and the detector) and what it reports.
//! - [`clips`]: an MP4 of each cry episode (pre-roll, cry, tail) in the clips folder, with
//!   retention.
//! - [`cry_pictures`]: a JPEG at each cry onset, bounded on disk, for MQTT's image entity.
//! - [`app`]: wiring and the shutdown order.
//! - [`cli`], [`logging`]: the command line and log output.

pub mod app;
pub mod audio;
pub mod camera;
pub mod cli;
pub mod clips;
pub mod config;
pub mod cry_pictures;
pub mod homeassistant;
pub mod live;
pub mod logging;
pub mod mqtt;
pub mod secret;
pub mod settings;
pub mod state_file;
pub mod supervisor;
pub mod web;
