//! Where a clip lives: `<camera>/<YYYY-MM-DD>/<HH-MM-SS>.mp4` under the clips folder, in the
//! machine's local time (the add-on's `TZ` comes from the Supervisor), so Home Assistant's Media
//! browser shows a folder per camera and a folder per night.
//!
//! Pure, apart from reading the local time zone. A clip is written as `.<name>.partial` beside
//! its final name (hidden from the Media browser and from `GET /api/clips/…`) and renamed when
//! complete.

use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The suffix of a clip being written.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// A moment in the machine's local time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl LocalTime {
    /// `t` in the local time zone (`TZ`, else the system's); UTC if the C library cannot say.
    pub fn of(t: SystemTime) -> LocalTime {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as libc::time_t);
        // SAFETY: `localtime_r` only reads `secs` and writes the `tm` it is given.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let converted = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
        if !converted {
            // SAFETY: as above, `gmtime_r` only reads `secs` and writes `tm`.
            unsafe { libc::gmtime_r(&secs, &mut tm) };
        }
        LocalTime {
            year: tm.tm_year + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
            second: tm.tm_sec as u32,
        }
    }
}

/// The clip's path relative to the clips folder: `nursery/2026-12-04/03-12-45.mp4`, with `-2`,
/// `-3`… before `.mp4` for the second and later clip of the same second (`attempt` 1, 2…).
pub fn relative_path(camera: &str, at: LocalTime, attempt: u32) -> String {
    let suffix = if attempt <= 1 {
        String::new()
    } else {
        format!("-{attempt}")
    };
    format!(
        "{camera}/{:04}-{:02}-{:02}/{:02}-{:02}-{:02}{suffix}.mp4",
        at.year, at.month, at.day, at.hour, at.minute, at.second
    )
}

/// Where a clip is written until it is complete: `.<name>.partial` in the same folder (the
/// rename then stays on one file system).
pub fn partial_path(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    final_path.with_file_name(format!(".{name}{PARTIAL_SUFFIX}"))
}

/// The file a request for `relative` (as in `GET /api/clips/<relative>`) may read under
/// `root`: only plain names (no `..`, no root, no hidden or partial file) ending in `.mp4`.
pub fn served_file(root: &Path, relative: &str) -> Option<PathBuf> {
    let relative = Path::new(relative);
    if relative.as_os_str().is_empty() || relative.extension()? != "mp4" {
        return None;
    }
    let mut path = root.to_path_buf();
    for component in relative.components() {
        match component {
            Component::Normal(name) if !name.to_string_lossy().starts_with('.') => path.push(name),
            _ => return None,
        }
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIGHT: LocalTime = LocalTime {
        year: 2026,
        month: 12,
        day: 4,
        hour: 3,
        minute: 12,
        second: 5,
    };

    #[test]
    fn a_clip_is_named_by_camera_day_and_time() {
        assert_eq!(
            relative_path("nursery", NIGHT, 1),
            "nursery/2026-12-04/03-12-05.mp4"
        );
        assert_eq!(
            relative_path("nursery", NIGHT, 2),
            "nursery/2026-12-04/03-12-05-2.mp4"
        );
        assert_eq!(
            partial_path(Path::new("/media/vigil/nursery/2026-12-04/03-12-05.mp4")),
            Path::new("/media/vigil/nursery/2026-12-04/.03-12-05.mp4.partial")
        );
    }

    #[test]
    fn local_time_reads_the_time_zone() {
        // 2026-12-04 03:12:05 UTC; the tests run with the machine's zone, so compare with UTC
        // only when the zone is UTC, and check the fields' ranges always.
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_796_353_925);
        let local = LocalTime::of(t);
        assert!((1..=12).contains(&local.month) && (1..=31).contains(&local.day));
        if std::env::var("TZ").is_ok_and(|tz| tz == "UTC") {
            assert_eq!(local, NIGHT);
        }
    }

    #[test]
    fn only_finished_clips_inside_the_folder_are_served() {
        let root = Path::new("/media/vigil");
        let check = |relative: &str, expected: Option<&str>| {
            assert_eq!(
                served_file(root, relative).as_deref(),
                expected.map(Path::new),
                "{relative}"
            );
        };
        check(
            "nursery/2026-12-04/03-12-05.mp4",
            Some("/media/vigil/nursery/2026-12-04/03-12-05.mp4"),
        );
        check("../secrets/x.mp4", None);
        check("nursery/../../etc/x.mp4", None);
        check("/etc/x.mp4", None);
        check("nursery/2026-12-04/.03-12-05.mp4.partial", None);
        check("nursery/2026-12-04/.03-12-05.mp4", None);
        check("nursery/2026-12-04/notes.txt", None);
        check("", None);
    }
}
