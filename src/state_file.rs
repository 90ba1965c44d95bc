//! The small files Vigil keeps in its data directory between runs (settings changed from Home
//! Assistant, the cry history and pictures, what was announced over MQTT, the camera entries it
//! made): read forgivingly, written so that a crash or a power cut mid-write never leaves half a
//! file.

use std::path::Path;

use serde::de::DeserializeOwned;

/// The text of `path`, or `None` when there is none yet. A file that cannot be read is logged
/// and treated as missing: a damaged state file must never stop the monitor.
pub fn read(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!("cannot read {}: {e}", path.display());
            None
        }
    }
}

/// The JSON value stored in `path`; the default when the file is missing, unreadable or
/// damaged (logged).
pub fn load_json<T: DeserializeOwned + Default>(path: &Path) -> T {
    let Some(text) = read(path) else {
        return T::default();
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::warn!("ignoring {}: {e}", path.display());
        T::default()
    })
}

/// Writes `contents` to `path` (making its directory): to a temporary file beside it first,
/// then renamed over the old one, which is atomic on one file system.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    struct Stored {
        cameras: Vec<String>,
    }

    fn scratch_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("vigil-state-{}", fastrand::u64(..)))
    }

    #[test]
    fn a_written_file_loads_back_and_leaves_no_temporary_file() {
        let path = scratch_dir().join("deeper/state.json");
        write(&path, r#"{"cameras": ["nursery"]}"#).unwrap();
        let stored: Stored = load_json(&path);
        assert_eq!(stored.cameras, ["nursery"]);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_missing_or_damaged_file_gives_the_default() {
        let dir = scratch_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert_eq!(read(&path), None);
        assert_eq!(load_json::<Stored>(&path), Stored::default());
        std::fs::write(&path, "{\"cameras\": [").unwrap();
        assert_eq!(load_json::<Stored>(&path), Stored::default());
    }
}
