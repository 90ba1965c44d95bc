//! How long clips stay: none older than `clip_retention_days`, all together under
//! `clip_max_mb` (the oldest go first), and no new clip while the clips' disk has less than
//! [`MIN_FREE_BYTES`] free, so clips never fill it.
//!
//! The rules are pure ([`to_delete`], [`room_for_a_clip`]); [`scan`], [`sweep`] and
//! [`remove_partials`] apply them to the folder and are called on a blocking thread. Only
//! finished clips (`*.mp4`, not hidden) are counted or deleted; a clip being written is a
//! hidden `.partial` file and left alone, except by [`remove_partials`] at start.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::paths::PARTIAL_SUFFIX;

/// Below this much free space on the clips' disk no clip is started (500 MiB).
pub const MIN_FREE_BYTES: u64 = 500 * 1024 * 1024;

/// One finished clip on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipFile {
    pub path: PathBuf,
    pub bytes: u64,
    /// When it was finished (its modification time).
    pub modified: SystemTime,
}

/// What the options allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub max_age: Duration,
    pub max_bytes: u64,
}

impl Rules {
    pub fn new(retention_days: u32, max_bytes: u64) -> Self {
        Self {
            max_age: Duration::from_secs(u64::from(retention_days) * 24 * 3600),
            max_bytes,
        }
    }
}

/// The clips to delete, oldest first: every clip older than the retention, then the oldest of
/// the rest until the others fit in `max_bytes`.
pub fn to_delete(clips: &[ClipFile], now: SystemTime, rules: Rules) -> Vec<PathBuf> {
    let mut by_age: Vec<&ClipFile> = clips.iter().collect();
    by_age.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.path.cmp(&b.path)));
    let mut total: u64 = by_age.iter().map(|c| c.bytes).sum();
    let mut deleted = Vec::new();
    for clip in by_age {
        let too_old = now
            .duration_since(clip.modified)
            .is_ok_and(|age| age > rules.max_age);
        if too_old || total > rules.max_bytes {
            total -= clip.bytes;
            deleted.push(clip.path.clone());
        }
    }
    deleted
}

/// Whether a new clip may start with `free_bytes` free on the clips' disk.
pub fn room_for_a_clip(free_bytes: u64) -> bool {
    free_bytes >= MIN_FREE_BYTES
}

/// Free bytes (for an unprivileged writer) on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `statvfs` reads the NUL-terminated path and writes only the struct it is given.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Every finished clip under `root` (`<camera>/<day>/<time>.mp4`).
pub fn scan(root: &Path) -> Vec<ClipFile> {
    let mut clips = Vec::new();
    for day in subdirectories(root).iter().flat_map(|c| subdirectories(c)) {
        let Ok(entries) = std::fs::read_dir(&day) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".mp4") {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_file() {
                clips.push(ClipFile {
                    path,
                    bytes: meta.len(),
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
    }
    clips
}

/// Deletes what [`to_delete`] says, and day folders left empty; returns the clips deleted.
pub fn sweep(root: &Path, now: SystemTime, rules: Rules) -> Vec<PathBuf> {
    let mut deleted = Vec::new();
    for path in to_delete(&scan(root), now, rules) {
        match std::fs::remove_file(&path) {
            Ok(()) => deleted.push(path),
            Err(e) => tracing::warn!("cannot delete the old clip {}: {e}", path.display()),
        }
    }
    for camera in subdirectories(root) {
        for day in subdirectories(&camera) {
            // Fails (and is meant to) unless the folder is empty.
            let _ = std::fs::remove_dir(day);
        }
    }
    deleted
}

/// Deletes the clips a stopped run left half written (`.partial`): without the index mp4mux
/// writes at the end, they do not play. Returns how many.
pub fn remove_partials(root: &Path) -> usize {
    let mut removed = 0;
    for day in subdirectories(root).iter().flat_map(|c| subdirectories(c)) {
        let Ok(entries) = std::fs::read_dir(&day) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.')
                && name.ends_with(PARTIAL_SUFFIX)
                && std::fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);
    const MB: u64 = 1024 * 1024;

    fn clip(name: &str, days_old: f64, mb: u64, now: SystemTime) -> ClipFile {
        ClipFile {
            path: PathBuf::from(name),
            bytes: mb * MB,
            modified: now - DAY.mul_f64(days_old),
        }
    }

    #[test]
    fn the_oldest_go_first() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_353_925);
        let rules = Rules::new(7, 100 * MB);
        let check = |clips: &[ClipFile], expected: &[&str]| {
            let deleted = to_delete(clips, now, rules);
            let expected: Vec<PathBuf> = expected.iter().map(PathBuf::from).collect();
            assert_eq!(deleted, expected, "{clips:?}");
        };
        // Within both limits: nothing goes.
        check(&[clip("a", 1.0, 10, now), clip("b", 6.9, 10, now)], &[]);
        // Older than the retention.
        check(
            &[clip("new", 0.1, 10, now), clip("old", 7.5, 10, now)],
            &["old"],
        );
        // Over the size: the oldest go until the rest fit, whatever order they are listed in.
        check(
            &[
                clip("c", 1.0, 40, now),
                clip("a", 3.0, 40, now),
                clip("b", 2.0, 40, now),
            ],
            &["a"],
        );
        check(
            &[
                clip("c", 1.0, 60, now),
                clip("a", 3.0, 30, now),
                clip("b", 2.0, 30, now),
                clip("d", 0.5, 30, now),
            ],
            &["a", "b"],
        );
        // Both: the old one, and then still too large.
        check(
            &[
                clip("old", 8.0, 1, now),
                clip("b", 2.0, 80, now),
                clip("c", 1.0, 80, now),
            ],
            &["old", "b"],
        );
    }

    #[test]
    fn no_clip_below_the_free_space_floor() {
        assert!(!room_for_a_clip(0));
        assert!(!room_for_a_clip(MIN_FREE_BYTES - 1));
        assert!(room_for_a_clip(MIN_FREE_BYTES));
        assert!(room_for_a_clip(u64::MAX));
        let free = free_bytes(&std::env::temp_dir()).unwrap();
        assert!(free > 0);
        assert!(free_bytes(Path::new("/no/such/folder")).is_err());
    }

    #[test]
    fn the_sweep_deletes_old_clips_and_empty_days_and_the_partials_at_start() {
        let root = std::env::temp_dir().join(format!("vigil-retention-{}", fastrand::u64(..)));
        let old_day = root.join("nursery/2026-11-20");
        let today = root.join("nursery/2026-12-04");
        std::fs::create_dir_all(&old_day).unwrap();
        std::fs::create_dir_all(&today).unwrap();
        let old = old_day.join("01-00-00.mp4");
        let new = today.join("03-12-05.mp4");
        let partial = today.join(".03-14-00.mp4.partial");
        for path in [&old, &new, &partial] {
            std::fs::write(path, b"not really an mp4").unwrap();
        }
        let ten_days_ago = SystemTime::now() - 10 * DAY;
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(ten_days_ago)
            .unwrap();
        assert_eq!(scan(&root).len(), 2, "the partial is not a clip yet");
        let deleted = sweep(&root, SystemTime::now(), Rules::new(7, 1000 * MB));
        assert_eq!(deleted, vec![old]);
        assert!(!old_day.exists(), "the empty day folder goes too");
        assert!(new.exists() && partial.exists());
        assert_eq!(remove_partials(&root), 1);
        assert!(!partial.exists() && new.exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
