//! Per-camera settings that Home Assistant can change at run time (detection on/off, cry
//! threshold), persisted under the data directory so they survive restarts.
//!
//! A value set from HA wins over the option until the option itself is changed in the form:
//! each override remembers the option value it replaced, and is dropped at start when that
//! option value has changed since. This module does file I/O only in `load` and the setters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Config;

/// The file under the data directory.
pub const SETTINGS_FILE: &str = "settings.json";

/// The effective settings of one camera.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraSettings {
    pub detection: bool,
    pub cry_threshold: f32,
}

/// One overridden value and the option value it replaced.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Override<T> {
    value: T,
    option: T,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct CameraOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detection: Option<Override<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cry_threshold: Option<Override<f32>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    cameras: BTreeMap<String, CameraOverrides>,
}

struct Inner {
    /// The options' values, per camera.
    options: BTreeMap<String, CameraSettings>,
    stored: Stored,
}

/// The shared settings store. Cheap to clone.
#[derive(Clone)]
pub struct Settings {
    inner: Arc<Mutex<Inner>>,
    path: Option<PathBuf>,
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("path", &self.path)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("no camera named '{0}'")]
    UnknownCamera(String),
    #[error("cry threshold {0} is out of range; use 0 to 1")]
    OutOfRange(f32),
    #[error("cannot save {path}: {source}")]
    Save {
        path: String,
        source: std::io::Error,
    },
}

impl Settings {
    /// Loads the overrides kept under `data_dir` for the cameras in `config`, dropping those of
    /// removed cameras and those whose option has changed since they were set.
    pub fn load(config: &Config, data_dir: &Path) -> Self {
        let path = data_dir.join(SETTINGS_FILE);
        let stored: Stored = crate::state_file::load_json(&path);
        let settings = Self::with_stored(config, stored, Some(path));
        if let Err(e) = settings.save() {
            tracing::warn!("{e}");
        }
        settings
    }

    /// Settings that are never written to disk (for `vigil detect` and tests).
    pub fn in_memory(config: &Config) -> Self {
        Self::with_stored(config, Stored::default(), None)
    }

    fn with_stored(config: &Config, mut stored: Stored, path: Option<PathBuf>) -> Self {
        let options: BTreeMap<String, CameraSettings> = config
            .cameras_to_run()
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    CameraSettings {
                        detection: c.detection,
                        cry_threshold: config.cry_threshold,
                    },
                )
            })
            .collect();
        stored.cameras.retain(|name, _| options.contains_key(name));
        for (name, overrides) in stored.cameras.iter_mut() {
            let option = options[name];
            if overrides
                .detection
                .is_some_and(|o| o.option != option.detection)
            {
                tracing::info!(camera = %name, "detection option changed in the form; it wins over the value set from Home Assistant");
                overrides.detection = None;
            }
            if overrides
                .cry_threshold
                .is_some_and(|o| (o.option - option.cry_threshold).abs() > f32::EPSILON)
            {
                tracing::info!(camera = %name, "cry_threshold option changed in the form; it wins over the value set from Home Assistant");
                overrides.cry_threshold = None;
            }
        }
        stored
            .cameras
            .retain(|_, o| *o != CameraOverrides::default());
        Self {
            inner: Arc::new(Mutex::new(Inner { options, stored })),
            path,
            changed: watch::channel(0).0,
        }
    }

    /// The effective settings of `camera`, or `None` if there is no such camera.
    pub fn camera(&self, camera: &str) -> Option<CameraSettings> {
        let inner = self.inner.lock().unwrap();
        let option = *inner.options.get(camera)?;
        let overrides = inner.stored.cameras.get(camera);
        Some(CameraSettings {
            detection: overrides
                .and_then(|o| o.detection)
                .map_or(option.detection, |o| o.value),
            cry_threshold: overrides
                .and_then(|o| o.cry_threshold)
                .map_or(option.cry_threshold, |o| o.value),
        })
    }

    /// Turns detection on or off for `camera`, and saves it.
    pub fn set_detection(&self, camera: &str, on: bool) -> Result<(), SettingsError> {
        self.update(camera, |option, o| {
            o.detection = Some(Override {
                value: on,
                option: option.detection,
            })
        })
    }

    /// Sets the cry threshold (0–1) of `camera`, and saves it.
    pub fn set_cry_threshold(&self, camera: &str, threshold: f32) -> Result<(), SettingsError> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(SettingsError::OutOfRange(threshold));
        }
        self.update(camera, |option, o| {
            o.cry_threshold = Some(Override {
                value: threshold,
                option: option.cry_threshold,
            })
        })
    }

    /// A receiver that changes whenever a setting does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn update(
        &self,
        camera: &str,
        change: impl FnOnce(CameraSettings, &mut CameraOverrides),
    ) -> Result<(), SettingsError> {
        {
            let mut inner = self.inner.lock().unwrap();
            let option = *inner
                .options
                .get(camera)
                .ok_or_else(|| SettingsError::UnknownCamera(camera.to_string()))?;
            change(
                option,
                inner.stored.cameras.entry(camera.to_string()).or_default(),
            );
        }
        self.changed.send_modify(|n| *n += 1);
        self.save()
    }

    fn save(&self) -> Result<(), SettingsError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = {
            let inner = self.inner.lock().unwrap();
            serde_json::to_string_pretty(&inner.stored).expect("settings serialize")
        };
        crate::state_file::write(path, text).map_err(|source| SettingsError::Save {
            path: path.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, Mode::Standalone).unwrap()
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("vigil-settings-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const TWO: &str = "cry_threshold: 0.5\ncameras:\n  - {name: a, url: 'rtsp://a/x'}\n  - {name: b, url: 'rtsp://b/x', detection: false}\n";

    #[test]
    fn options_are_the_defaults() {
        let s = Settings::in_memory(&config(TWO));
        assert_eq!(
            s.camera("a"),
            Some(CameraSettings {
                detection: true,
                cry_threshold: 0.5
            })
        );
        assert!(!s.camera("b").unwrap().detection);
        assert_eq!(s.camera("zzz"), None);
    }

    #[test]
    fn overrides_survive_a_restart() {
        let d = dir();
        let s = Settings::load(&config(TWO), &d);
        s.set_detection("a", false).unwrap();
        s.set_cry_threshold("a", 0.3).unwrap();
        let again = Settings::load(&config(TWO), &d);
        assert_eq!(
            again.camera("a"),
            Some(CameraSettings {
                detection: false,
                cry_threshold: 0.3
            })
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_changed_option_wins_over_the_override() {
        let d = dir();
        let s = Settings::load(&config(TWO), &d);
        s.set_cry_threshold("a", 0.3).unwrap();
        s.set_detection("a", false).unwrap();
        let changed = TWO.replace("cry_threshold: 0.5", "cry_threshold: 0.7");
        let again = Settings::load(&config(&changed), &d);
        // The threshold option changed: the form wins. Detection's option did not: HA's wins.
        assert_eq!(
            again.camera("a"),
            Some(CameraSettings {
                detection: false,
                cry_threshold: 0.7
            })
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn bad_values_and_cameras_are_refused() {
        let s = Settings::in_memory(&config(TWO));
        assert!(matches!(
            s.set_cry_threshold("a", 1.5),
            Err(SettingsError::OutOfRange(_))
        ));
        assert!(matches!(
            s.set_detection("nope", true),
            Err(SettingsError::UnknownCamera(_))
        ));
    }

    #[test]
    fn a_change_is_announced() {
        let s = Settings::in_memory(&config(TWO));
        let mut rx = s.subscribe();
        s.set_detection("a", false).unwrap();
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
    }
}
