//! Cry detection: each camera's audio, YAMNet scores, and a detector that turns them into
//! crying / not crying.
//!
//! The types here are what the rest of Vigil reads (MQTT, the panel); they carry no I/O.

use std::time::SystemTime;

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
