//! The labelled clips in tests/fixtures/audio and helpers to make test recordings.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use vigil::audio::wav;
use vigil::audio::yamnet::{MemoryOptions, ModelPaths, Yamnet};

pub struct Clip {
    pub name: String,
    pub path: PathBuf,
    pub is_cry: bool,
}

/// The 20 clips, in file order, labelled from `labels.csv`.
pub fn clips() -> Vec<Clip> {
    let dir = crate::common::fixtures::audio_dir();
    let labels = std::fs::read_to_string(dir.join("labels.csv"))
        .unwrap_or_else(|e| panic!("cannot read {}/labels.csv: {e}", dir.display()));
    let clips: Vec<Clip> = labels
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split(',');
            let file = fields.next()?;
            let is_cry = fields.next()? == "1";
            Some(Clip {
                name: file.trim_end_matches(".wav").to_string(),
                path: dir.join(file),
                is_cry,
            })
        })
        .collect();
    assert_eq!(clips.len(), 20, "expected 20 labelled clips");
    clips
}

pub fn clip(name: &str) -> Clip {
    clips()
        .into_iter()
        .find(|c| c.name.starts_with(name))
        .unwrap_or_else(|| panic!("no clip {name}"))
}

/// A clip's audio as 16 kHz mono f32.
pub fn samples(path: &Path) -> Vec<f32> {
    let mut all = Vec::new();
    wav::decode(path, |chunk| all.extend_from_slice(chunk)).expect("readable clip");
    all
}

/// The model from the repository's models/ folder.
pub fn model() -> Yamnet {
    Yamnet::load(&ModelPaths::default(), MemoryOptions::VIGIL).expect("YAMNet loads")
}

/// Writes interleaved `samples` as a 16-bit WAV.
pub fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        writer
            .write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .unwrap();
    }
    writer.finalize().unwrap();
}
