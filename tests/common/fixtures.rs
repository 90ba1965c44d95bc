//! Where the tests' fixtures are: `tests/fixtures/` in the repository, nothing outside it. The
//! benchmarks include this file on its own (`#[path]`), so it uses nothing else from `common`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `tests/fixtures/audio`: the 20 labelled clips with `labels.csv` (sources and licences in its
/// README.md).
pub fn audio_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio")
}

/// The clip `file` (e.g. `cry_09_tired.wav`) of [`audio_dir`]; panics if it is not there.
pub fn audio(file: &str) -> PathBuf {
    let path = audio_dir().join(file);
    assert!(path.is_file(), "no fixture clip {}", path.display());
    path
}
