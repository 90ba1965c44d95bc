//! Cry detection: each camera's audio, YAMNet scores, and a detector that turns them into
//! crying / not crying.
//!
//! - [`service`]: [`Detection`], the running service (one inference thread, a task per camera;
//!   readings, events, history). What the app, MQTT and the panel use.
//! - [`yamnet`]: ONNX Runtime and the model (sync, no notion of time).
//! - [`detector`]: the pure cry detector (thresholds, gate, onset, hold).
//! - [`windows`]: PCM chunks into 0.975 s windows every 0.24 s, gaps handled.
//! - [`history`]: the bounded 24 h history and its file.
//! - [`wav`], [`offline`]: `vigil detect FILE.wav`.
//!
//! The types below are what the rest of Vigil reads; they carry no I/O. This module never
//! touches a camera or GStreamer's camera pipelines (the camera's audio branch sends
//! [`PcmChunk`]s).

pub mod detector;
pub mod history;
pub mod offline;
pub mod service;
pub mod wav;
pub mod windows;
pub mod yamnet;

pub use service::{CryChange, CryEvent, Detection, StartError};

use std::time::{Duration, SystemTime};

/// The sample rate of the audio the detector hears (YAMNet's).
pub const DETECTOR_SAMPLE_RATE: u32 = 16_000;

/// A run of a camera's decoded audio as the detector hears it: mono, 16 kHz, f32 in [-1, 1].
///
/// The camera's audio branch sends these (in chunks of any length) on a bounded channel; a gap in
/// `pts` means samples were lost (a camera outage, or the detector fell behind and chunks were
/// dropped).
#[derive(Debug, Clone, PartialEq)]
pub struct PcmChunk {
    /// Stream time of the first sample; grows monotonically for one camera, across reconnects.
    pub pts: Duration,
    pub samples: Vec<f32>,
}

/// What the detector says about one camera now.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CryReading {
    /// True from a cry's onset until the hold after it ends.
    pub crying: bool,
    /// The latest window's cry score, 0–1.
    pub score: f32,
    /// The latest window's sound level in dBFS (0 = full scale; silence is very negative).
    pub level_dbfs: f32,
    /// When this reading was made.
    #[serde(with = "unix_millis")]
    pub at: SystemTime,
}

impl Default for CryReading {
    fn default() -> Self {
        Self {
            crying: false,
            score: 0.0,
            level_dbfs: f32::NEG_INFINITY,
            at: SystemTime::UNIX_EPOCH,
        }
    }
}

/// Serializes a `SystemTime` as milliseconds since the Unix epoch.
pub mod unix_millis {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        s.serialize_u64(ms)
    }
}
