//! The picture with the alert: at each cry onset, a JPEG of the camera's picture at that
//! moment (its last keyframe, decoded by [`crate::live::snapshot`]), kept under the data
//! directory (`cry-pictures/<camera>/<unix ms>.jpg`, the newest [`KEPT_PER_CAMERA`] per
//! camera) and handed to MQTT as each camera's latest, for the "<camera> last cry" image
//! entity that the notification blueprint attaches.
//!
//! Owns that directory. Reads cry events and snapshots; never blocks a camera or the
//! detector (a picture that cannot be taken is logged and skipped).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::audio::{CryChange, CryEvent};
use crate::camera::Cameras;
use crate::live::Live;
use crate::live::snapshot::SnapshotSize;

/// Pictures kept per camera; older ones are deleted.
pub const KEPT_PER_CAMERA: usize = 20;

/// The largest picture handed to MQTT (its base64 must fit in one MQTT packet); a larger one is
/// taken again at [`SMALLER_WIDTH`].
pub const MAX_PICTURE_BYTES: usize = 4 * 1024 * 1024;
const SMALLER_WIDTH: u32 = 1280;

/// The directory under the data directory.
pub const PICTURES_DIR: &str = "cry-pictures";

/// One cry's picture.
#[derive(Debug, Clone, PartialEq)]
pub struct CryPicture {
    pub jpeg: Bytes,
    /// When the cry started.
    pub at: SystemTime,
}

/// Each camera's latest cry picture, `None` before the first.
pub type LatestPicture = watch::Receiver<Option<CryPicture>>;

/// The pictures of every camera: the latest as watch channels, loaded from disk at start.
pub struct CryPictures {
    dir: PathBuf,
    latest: Vec<(String, watch::Sender<Option<CryPicture>>)>,
}

impl CryPictures {
    /// The store for `cameras` under `data_dir`, each with the newest picture a past run kept.
    pub fn new(data_dir: &Path, cameras: &[String]) -> Self {
        let dir = data_dir.join(PICTURES_DIR);
        let latest = cameras
            .iter()
            .map(|camera| {
                let newest = newest_on_disk(&dir.join(camera));
                (camera.clone(), watch::channel(newest).0)
            })
            .collect();
        Self { dir, latest }
    }

    /// Where the pictures are: `<dir>/<camera>/<unix ms of the cry's onset>.jpg`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `camera`'s latest picture.
    pub fn latest(&self, camera: &str) -> LatestPicture {
        match self.latest.iter().find(|(name, _)| name == camera) {
            Some((_, tx)) => tx.subscribe(),
            None => watch::channel(None).1,
        }
    }

    /// Takes a picture at every cry onset in `events` until `shutdown`.
    pub async fn run(
        self,
        mut events: broadcast::Receiver<CryEvent>,
        cameras: Cameras,
        live: Live,
        shutdown: CancellationToken,
    ) {
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => event,
            };
            let event = match event {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!("{n} cry events missed by the cry pictures");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let CryChange::Started { at, .. } = event.change else {
                continue;
            };
            let Some(camera) = cameras.get(&event.camera) else {
                continue;
            };
            let snapshots = live.snapshots();
            let mut taken = snapshots.take(camera, SnapshotSize::default()).await;
            if taken
                .as_ref()
                .is_ok_and(|s| s.jpeg.len() > MAX_PICTURE_BYTES)
            {
                let smaller = SnapshotSize {
                    width: Some(SMALLER_WIDTH),
                    height: None,
                };
                taken = snapshots.take(camera, smaller).await;
            }
            match taken {
                Ok(snapshot) if snapshot.jpeg.len() <= MAX_PICTURE_BYTES => {
                    self.keep(&event.camera, snapshot.jpeg, at).await
                }
                Ok(snapshot) => tracing::warn!(
                    camera = %event.camera,
                    "no picture of this cry: {} bytes even at {SMALLER_WIDTH} pixels wide",
                    snapshot.jpeg.len()
                ),
                Err(e) => tracing::warn!(camera = %event.camera, "no picture of this cry: {e}"),
            }
        }
    }

    /// Hands the picture on at once, then writes it and removes the oldest beyond the bound.
    async fn keep(&self, camera: &str, jpeg: Bytes, at: SystemTime) {
        if let Some((_, tx)) = self.latest.iter().find(|(name, _)| name == camera) {
            tx.send_replace(Some(CryPicture {
                jpeg: jpeg.clone(),
                at,
            }));
        }
        let dir = self.dir.join(camera);
        let name = format!("{}.jpg", unix_millis(at));
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            crate::state_file::write(&dir.join(&name), &jpeg)?;
            for old in pictures_on_disk(&dir)
                .into_iter()
                .rev()
                .skip(KEPT_PER_CAMERA)
            {
                std::fs::remove_file(old)?;
            }
            Ok(())
        })
        .await;
        match written {
            Ok(Ok(())) => tracing::info!(camera, "picture of the cry kept"),
            Ok(Err(e)) => tracing::warn!(camera, "cannot keep the picture of the cry: {e}"),
            Err(e) => tracing::warn!(camera, "cannot keep the picture of the cry: {e}"),
        }
    }
}

/// The picture of `camera`'s cry that began at `started_ms` (an episode's `started_ms`), under
/// the pictures directory `dir`.
pub fn picture_path(dir: &Path, camera: &str, started_ms: u64) -> PathBuf {
    dir.join(camera).join(format!("{started_ms}.jpg"))
}

/// The onsets (unix ms) of `camera`'s kept pictures under the pictures directory `dir`.
pub fn kept_onsets(dir: &Path, camera: &str) -> Vec<u64> {
    pictures_on_disk(&dir.join(camera))
        .iter()
        .filter_map(|p| p.file_stem()?.to_str()?.parse().ok())
        .collect()
}

fn unix_millis(at: SystemTime) -> u128 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
}

/// The pictures in `dir`, oldest first (names are unix milliseconds).
fn pictures_on_disk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut pictures: Vec<(u128, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let millis = path
                .file_name()?
                .to_str()?
                .strip_suffix(".jpg")?
                .parse()
                .ok()?;
            Some((millis, path))
        })
        .collect();
    pictures.sort();
    pictures.into_iter().map(|(_, path)| path).collect()
}

fn newest_on_disk(dir: &Path) -> Option<CryPicture> {
    let path = pictures_on_disk(dir).pop()?;
    let millis: u64 = path.file_stem()?.to_str()?.parse().ok()?;
    let jpeg = std::fs::read(&path).ok()?;
    Some(CryPicture {
        jpeg: Bytes::from(jpeg),
        at: SystemTime::UNIX_EPOCH + Duration::from_millis(millis),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_are_bounded_and_the_newest_is_loaded() {
        let dir = std::env::temp_dir().join(format!("vigil-cry-pictures-{}", fastrand::u64(..)));
        let store = CryPictures::new(&dir, &["nursery".to_string()]);
        let latest = store.latest("nursery");
        assert!(latest.borrow().is_none());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        runtime.block_on(async {
            for i in 0..KEPT_PER_CAMERA as u64 + 5 {
                let jpeg = Bytes::from(vec![0xFF, 0xD8, i as u8]);
                store
                    .keep("nursery", jpeg, start + Duration::from_secs(i))
                    .await;
            }
        });
        let kept = pictures_on_disk(&dir.join(PICTURES_DIR).join("nursery"));
        assert_eq!(kept.len(), KEPT_PER_CAMERA);
        // The panel finds each cry's picture by its onset.
        let onsets = kept_onsets(store.dir(), "nursery");
        assert_eq!(onsets.len(), KEPT_PER_CAMERA);
        let newest_ms = onsets[KEPT_PER_CAMERA - 1];
        assert_eq!(
            newest_ms,
            1_700_000_000_000 + (KEPT_PER_CAMERA as u64 + 4) * 1000
        );
        assert!(picture_path(store.dir(), "nursery", newest_ms).is_file());
        let newest = start + Duration::from_secs(KEPT_PER_CAMERA as u64 + 4);
        assert_eq!(latest.borrow().as_ref().map(|p| p.at), Some(newest));
        // A restart shows the last cry's picture again.
        let again = CryPictures::new(&dir, &["nursery".to_string()]);
        let loaded = again.latest("nursery").borrow().clone().unwrap();
        assert_eq!(loaded.at, newest);
        assert_eq!(loaded.jpeg[2], (KEPT_PER_CAMERA + 4) as u8);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
