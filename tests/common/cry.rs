//! The labelled cry clips (`tests/fixtures/audio`) as the fake camera plays them: which clip, and
//! when in it the cry becomes audible, to time what Vigil does after a cry's onset.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A clear cry (docs/detection.md: peak score 0.99, found at the defaults).
pub const CLIP: &str = "cry_03_burping.wav";

pub fn clip() -> PathBuf {
    super::fixtures::audio(CLIP)
}

/// Where the cry becomes audible in `path`: the start of the first 50 ms block whose RMS level
/// is within 20 dB of the clip's loudest block (the cry itself, not the room before it).
pub fn audible_offset(path: &Path) -> Duration {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    let samples: Vec<f32> = reader
        .samples::<i16>()
        .step_by(spec.channels as usize)
        .map(|s| s.unwrap() as f32 / 32768.0)
        .collect();
    let block = spec.sample_rate as usize / 20;
    let levels: Vec<f32> = samples
        .chunks(block)
        .map(|b| (b.iter().map(|s| s * s).sum::<f32>() / b.len() as f32).sqrt())
        .collect();
    let loudest = levels.iter().cloned().fold(0.0, f32::max);
    let first = levels.iter().position(|&l| l >= loudest / 10.0).unwrap();
    Duration::from_millis(first as u64 * 50)
}

pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
