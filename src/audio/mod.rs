//! Cry detection: each camera's audio, YAMNet scores, and a detector that turns them into
//! crying / not crying.
//!
//! The types here are what the rest of Vigil reads (MQTT, the panel); they carry no I/O.

pub mod detector;
pub mod offline;
pub mod wav;
pub mod windows;
pub mod yamnet;

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
