//! The last 24 hours of each camera's cry score, sound level and cry episodes, for the panel's
//! timeline; kept bounded in memory and saved under the data directory so that a restart does
//! not lose the night.
//!
//! Windows (every 0.24 s) are folded into 5-second buckets (the highest score and level in
//! each), at most [`MAX_BUCKETS`] per camera (about 0.3 MiB), and at most [`MAX_EPISODES`]
//! episodes. File I/O happens only in [`History::load`] and [`History::save`].

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The file under the data directory.
pub const HISTORY_FILE: &str = "history.json";
/// How long history is kept.
pub const KEEP: Duration = Duration::from_secs(24 * 60 * 60);
/// The width of one bucket.
pub const BUCKET: Duration = Duration::from_secs(5);
/// Buckets per camera: 24 h of 5 s.
pub const MAX_BUCKETS: usize = (KEEP.as_secs() / BUCKET.as_secs()) as usize;
/// Episodes per camera (a night of constant crying and settling stays far below this).
pub const MAX_EPISODES: usize = 500;

/// The file format's version; a file of another version is ignored.
const FORMAT: u32 = 1;

/// Five seconds of one camera: the highest score and level in them, and whether it cried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bucket {
    /// Unix time of the bucket's start, in milliseconds (a multiple of 5000).
    pub start_ms: u64,
    pub score: f32,
    pub level_dbfs: f32,
    pub crying: bool,
}

/// One cry episode; `ended_ms` is `None` while it goes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub peak_score: f32,
    /// The episode's clips, relative to the clips folder (`nursery/2026-12-04/03-12-45.mp4`),
    /// in order; a clip is listed from the moment it is opened, under its final name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clips: Vec<String>,
}

/// How much a camera cried in a window of time (the "last 12 h" sensors).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CryTotals {
    /// Episodes that overlap the window (one that began before it still counts).
    pub episodes: u32,
    /// Crying inside the window, in milliseconds (an episode still going on counts up to now).
    pub crying_ms: u64,
}

/// The totals of `episodes` over the window from `since_ms` to `now_ms`.
pub fn totals<'a>(
    episodes: impl IntoIterator<Item = &'a EpisodeRecord>,
    since_ms: u64,
    now_ms: u64,
) -> CryTotals {
    episodes
        .into_iter()
        .filter_map(|e| {
            let end = e.ended_ms.unwrap_or(now_ms).min(now_ms);
            let start = e.started_ms.max(since_ms);
            (e.ended_ms.unwrap_or(now_ms) >= since_ms && e.started_ms <= now_ms)
                .then(|| end.saturating_sub(start))
        })
        .fold(CryTotals::default(), |sum, crying_ms| CryTotals {
            episodes: sum.episodes + 1,
            crying_ms: sum.crying_ms + crying_ms,
        })
}

/// One camera's history, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CameraHistory {
    /// Seconds per bucket.
    pub bucket_seconds: u64,
    pub buckets: Vec<Bucket>,
    pub episodes: Vec<EpisodeRecord>,
}

#[derive(Debug, Clone, Default)]
struct Timeline {
    buckets: VecDeque<Bucket>,
    episodes: VecDeque<EpisodeRecord>,
}

/// Every camera's history.
#[derive(Debug, Clone, Default)]
pub struct History {
    cameras: BTreeMap<String, Timeline>,
}

/// The file: buckets as `[start_ms, score, level, crying]` to keep it small.
#[derive(Serialize, Deserialize)]
struct Stored {
    format: u32,
    cameras: BTreeMap<String, StoredCamera>,
}

#[derive(Serialize, Deserialize)]
struct StoredCamera {
    buckets: Vec<(u64, f32, f32, u8)>,
    episodes: Vec<EpisodeRecord>,
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn keep_ms() -> u64 {
    KEEP.as_millis() as u64
}

impl History {
    /// Starts a history for `camera` if it has none.
    pub fn add_camera(&mut self, camera: &str) {
        self.cameras.entry(camera.to_string()).or_default();
    }

    /// Folds one window into its bucket.
    pub fn record(&mut self, camera: &str, at: SystemTime, score: f32, level: f32, crying: bool) {
        let timeline = self.cameras.entry(camera.to_string()).or_default();
        let width = BUCKET.as_millis() as u64;
        let start_ms = unix_ms(at) / width * width;
        match timeline.buckets.back_mut() {
            // The same bucket, or the clock went back (NTP at boot): fold into the last one.
            Some(last) if start_ms <= last.start_ms => {
                last.score = last.score.max(score);
                last.level_dbfs = last.level_dbfs.max(level);
                last.crying |= crying;
            }
            _ => timeline.buckets.push_back(Bucket {
                start_ms,
                score,
                level_dbfs: level,
                crying,
            }),
        }
        timeline.prune(start_ms);
    }

    /// A cry began.
    pub fn episode_started(&mut self, camera: &str, at: SystemTime, score: f32) {
        let timeline = self.cameras.entry(camera.to_string()).or_default();
        timeline.episodes.push_back(EpisodeRecord {
            started_ms: unix_ms(at),
            ended_ms: None,
            peak_score: score,
            clips: Vec::new(),
        });
        timeline.prune(unix_ms(at));
    }

    /// A cry ended: closes the open episode (or records a whole one if none is open).
    pub fn episode_ended(
        &mut self,
        camera: &str,
        started: SystemTime,
        ended: SystemTime,
        peak_score: f32,
    ) {
        let timeline = self.cameras.entry(camera.to_string()).or_default();
        match timeline.episodes.back_mut() {
            Some(open) if open.ended_ms.is_none() => {
                open.ended_ms = Some(unix_ms(ended).max(open.started_ms));
                open.peak_score = open.peak_score.max(peak_score);
            }
            _ => timeline.episodes.push_back(EpisodeRecord {
                started_ms: unix_ms(started),
                ended_ms: Some(unix_ms(ended)),
                peak_score,
                clips: Vec::new(),
            }),
        }
    }

    /// Lists `clip` under `camera`'s episode that started at `episode_started_ms`; false if
    /// that episode is not (or no longer) in the history.
    pub fn add_clip(&mut self, camera: &str, episode_started_ms: u64, clip: String) -> bool {
        let Some(timeline) = self.cameras.get_mut(camera) else {
            return false;
        };
        match timeline
            .episodes
            .iter_mut()
            .rev()
            .find(|e| e.started_ms == episode_started_ms)
        {
            Some(episode) => {
                episode.clips.push(clip);
                true
            }
            None => false,
        }
    }

    /// `camera`'s buckets and episodes from `since` on, or `None` for an unknown camera.
    pub fn snapshot(&self, camera: &str, since: SystemTime) -> Option<CameraHistory> {
        let timeline = self.cameras.get(camera)?;
        let since = unix_ms(since);
        let width = BUCKET.as_millis() as u64;
        Some(CameraHistory {
            bucket_seconds: BUCKET.as_secs(),
            buckets: timeline
                .buckets
                .iter()
                .filter(|b| b.start_ms + width > since)
                .copied()
                .collect(),
            episodes: timeline
                .episodes
                .iter()
                .filter(|e| e.ended_ms.is_none_or(|end| end >= since))
                .cloned()
                .collect(),
        })
    }

    /// `camera`'s episodes going on or ended from `since` on, oldest first; `None` for an
    /// unknown camera.
    pub fn episodes(&self, camera: &str, since: SystemTime) -> Option<Vec<EpisodeRecord>> {
        let timeline = self.cameras.get(camera)?;
        let since = unix_ms(since);
        Some(
            timeline
                .episodes
                .iter()
                .filter(|e| e.ended_ms.is_none_or(|end| end >= since))
                .cloned()
                .collect(),
        )
    }

    /// `camera`'s episode that started at `started_ms`, if it is still in the history.
    pub fn episode(&self, camera: &str, started_ms: u64) -> Option<EpisodeRecord> {
        let timeline = self.cameras.get(camera)?;
        timeline
            .episodes
            .iter()
            .rev()
            .find(|e| e.started_ms == started_ms)
            .cloned()
    }

    /// How much `camera` cried from `since` to `now`; `None` for an unknown camera.
    pub fn totals(&self, camera: &str, since: SystemTime, now: SystemTime) -> Option<CryTotals> {
        let timeline = self.cameras.get(camera)?;
        Some(totals(&timeline.episodes, unix_ms(since), unix_ms(now)))
    }

    /// The history as the file stores it.
    pub fn to_json(&self) -> String {
        let round = |x: f32, scale: f32| (x * scale).round() / scale;
        let stored = Stored {
            format: FORMAT,
            cameras: self
                .cameras
                .iter()
                .map(|(name, t)| {
                    let buckets = t
                        .buckets
                        .iter()
                        .map(|b| {
                            (
                                b.start_ms,
                                round(b.score, 100.0),
                                round(b.level_dbfs, 10.0),
                                u8::from(b.crying),
                            )
                        })
                        .collect();
                    let episodes = t.episodes.iter().cloned().collect();
                    (name.clone(), StoredCamera { buckets, episodes })
                })
                .collect(),
        };
        serde_json::to_string(&stored).unwrap_or_else(|_| String::from("{}"))
    }

    /// Reads a saved history, keeping only `cameras` and what is newer than 24 h before `now`.
    /// An episode left open by a crash is closed at its camera's last bucket.
    pub fn from_json(text: &str, now: SystemTime, cameras: &[&str]) -> Result<History, String> {
        let stored: Stored = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if stored.format != FORMAT {
            return Err(format!("format {} (expected {FORMAT})", stored.format));
        }
        let oldest = unix_ms(now).saturating_sub(keep_ms());
        let mut history = History::default();
        for (name, camera) in stored.cameras {
            if !cameras.contains(&name.as_str()) {
                continue;
            }
            let mut buckets: Vec<Bucket> = camera
                .buckets
                .into_iter()
                .filter(|b| b.0 >= oldest)
                .map(|(start_ms, score, level_dbfs, crying)| Bucket {
                    start_ms,
                    score,
                    level_dbfs,
                    crying: crying != 0,
                })
                .collect();
            buckets.sort_by_key(|b| b.start_ms);
            let last_heard = buckets.last().map(|b| b.start_ms);
            let mut timeline = Timeline {
                buckets: buckets.into(),
                episodes: camera.episodes.into_iter().collect(),
            };
            for e in timeline.episodes.iter_mut() {
                if e.ended_ms.is_none() {
                    e.ended_ms = Some(last_heard.unwrap_or(e.started_ms).max(e.started_ms));
                }
            }
            timeline.prune(unix_ms(now));
            history.cameras.insert(name, timeline);
        }
        Ok(history)
    }

    /// Loads `path`; a missing, unreadable or damaged file gives an empty history (logged).
    pub fn load(path: &Path, now: SystemTime, cameras: &[&str]) -> History {
        let Some(text) = crate::state_file::read(path) else {
            return History::default();
        };
        Self::from_json(&text, now, cameras).unwrap_or_else(|e| {
            tracing::warn!("ignoring the cry history in {}: {e}", path.display());
            History::default()
        })
    }

    /// Writes `json` (from [`History::to_json`]) to `path`, never leaving half a file.
    pub fn save(json: &str, path: &Path) -> std::io::Result<()> {
        crate::state_file::write(path, json)
    }
}

impl Timeline {
    /// Drops what is older than 24 h before `newest_ms`, and anything over the caps.
    fn prune(&mut self, newest_ms: u64) {
        let oldest = newest_ms.saturating_sub(keep_ms());
        while self.buckets.front().is_some_and(|b| b.start_ms < oldest)
            || self.buckets.len() > MAX_BUCKETS
        {
            self.buckets.pop_front();
        }
        while self
            .episodes
            .front()
            .is_some_and(|e| e.ended_ms.is_some_and(|end| end < oldest))
            || self.episodes.len() > MAX_EPISODES
        {
            self.episodes.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn ms(seconds: u64) -> u64 {
        unix_ms(at(seconds))
    }

    #[test]
    fn windows_fold_into_five_second_buckets() {
        let mut h = History::default();
        h.record("a", at(0), 0.1, -50.0, false);
        h.record("a", at(2), 0.7, -60.0, true);
        h.record("a", at(6), 0.2, -40.0, false);
        // The clock stepped back: folded into the newest bucket, never out of order.
        h.record("a", at(1), 0.3, -30.0, false);
        let snap = h.snapshot("a", at(0)).unwrap();
        assert_eq!(snap.bucket_seconds, 5);
        assert_eq!(
            snap.buckets,
            vec![
                Bucket {
                    start_ms: ms(0),
                    score: 0.7,
                    level_dbfs: -50.0,
                    crying: true
                },
                Bucket {
                    start_ms: ms(5),
                    score: 0.3,
                    level_dbfs: -30.0,
                    crying: false
                },
            ]
        );
        assert_eq!(h.snapshot("a", at(7)).unwrap().buckets.len(), 1);
        assert_eq!(h.snapshot("zzz", at(0)), None);
    }

    #[test]
    fn a_day_and_a_night_stay_within_the_bound() {
        let mut h = History::default();
        // 30 hours of windows every 0.48 s, and an episode every 10 minutes.
        let windows = 30 * 3600 * 100 / 48;
        for i in 0..windows {
            let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + i * 480);
            h.record("a", t, 0.1, -50.0, false);
            if i % 1250 == 0 {
                h.episode_started("a", t, 0.9);
                h.episode_ended("a", t, t + Duration::from_secs(30), 0.9);
            }
        }
        let snap = h.snapshot("a", UNIX_EPOCH).unwrap();
        assert!(snap.buckets.len() <= MAX_BUCKETS, "{}", snap.buckets.len());
        assert!(snap.buckets.len() >= MAX_BUCKETS - 1);
        let span = snap.buckets.last().unwrap().start_ms - snap.buckets[0].start_ms;
        assert!(span <= keep_ms());
        // 24 h of one episode per 10 minutes.
        assert!(
            (143..=145).contains(&snap.episodes.len()),
            "{}",
            snap.episodes.len()
        );
        assert!(h.to_json().len() < 1_000_000, "{} bytes", h.to_json().len());
    }

    #[test]
    fn episodes_open_and_close() {
        let mut h = History::default();
        h.episode_started("a", at(10), 0.6);
        assert_eq!(h.snapshot("a", at(0)).unwrap().episodes[0].ended_ms, None);
        h.episode_ended("a", at(10), at(40), 0.9);
        assert!(h.add_clip("a", ms(10), "a/1970-01-01/00-00-05.mp4".into()));
        assert!(!h.add_clip("a", ms(11), "a/elsewhere.mp4".into()));
        let e = h.snapshot("a", at(0)).unwrap().episodes[0].clone();
        assert_eq!(
            e,
            EpisodeRecord {
                started_ms: ms(10),
                ended_ms: Some(ms(40)),
                peak_score: 0.9,
                clips: vec!["a/1970-01-01/00-00-05.mp4".into()],
            }
        );
        // Asking from after its end leaves it out.
        assert!(h.snapshot("a", at(41)).unwrap().episodes.is_empty());
        assert_eq!(h.episodes("a", at(0)).unwrap(), vec![e]);
        assert!(h.episodes("a", at(41)).unwrap().is_empty());
        assert_eq!(h.episodes("zzz", at(0)), None);
    }

    fn episode(started: u64, ended: Option<u64>) -> EpisodeRecord {
        EpisodeRecord {
            started_ms: ms(started),
            ended_ms: ended.map(ms),
            peak_score: 0.9,
            clips: Vec::new(),
        }
    }

    fn check_totals(episodes: &[EpisodeRecord], since: u64, now: u64, expected: (u32, u64)) {
        let got = totals(episodes, ms(since), ms(now));
        assert_eq!(
            (got.episodes, got.crying_ms),
            (expected.0, expected.1 * 1000),
            "{episodes:?} from {since} to {now}"
        );
    }

    #[test]
    fn totals_count_what_lies_in_the_window() {
        let twelve_h = 12 * 3600;
        let now = 20 * 3600;
        let since = now - twelve_h;
        check_totals(&[], since, now, (0, 0));
        // Inside: counted whole.
        check_totals(
            &[episode(since + 100, Some(since + 160))],
            since,
            now,
            (1, 60),
        );
        // Ended before the window: not counted.
        check_totals(&[episode(since - 100, Some(since - 1))], since, now, (0, 0));
        // Across the window's start: counted, only its part inside.
        check_totals(
            &[episode(since - 30, Some(since + 45))],
            since,
            now,
            (1, 45),
        );
        // Still going on: counts up to now.
        check_totals(&[episode(now - 20, None)], since, now, (1, 20));
        // Several add up.
        check_totals(
            &[
                episode(since - 10, Some(since + 10)),
                episode(since + 600, Some(since + 630)),
                episode(now - 5, None),
            ],
            since,
            now,
            (3, 45),
        );
        // An episode stamped after "now" (the clock stepped back) adds nothing.
        check_totals(&[episode(now + 50, Some(now + 60))], since, now, (0, 0));

        let mut h = History::default();
        h.episode_started("a", at(since + 100), 0.8);
        h.episode_ended("a", at(since + 100), at(since + 130), 0.95);
        h.episode_started("a", at(since + 200), 0.7);
        let got = h.totals("a", at(since), at(since + 210)).unwrap();
        assert_eq!(
            got,
            CryTotals {
                episodes: 2,
                crying_ms: 40_000
            }
        );
        assert_eq!(h.totals("zzz", at(since), at(now)), None);
        assert_eq!(h.episode("a", ms(since + 100)).unwrap().peak_score, 0.95);
        assert_eq!(h.episode("a", ms(since + 101)), None);
    }

    #[test]
    fn saved_history_survives_a_restart() {
        let mut h = History::default();
        h.record("a", at(0), 0.123_456, -50.06, false);
        h.record("a", at(100), 0.9, -20.0, true);
        h.episode_started("a", at(100), 0.9);
        h.record("gone", at(0), 0.5, -10.0, false);
        let dir = std::env::temp_dir().join(format!("vigil-history-{}", fastrand::u64(..)));
        let path = dir.join(HISTORY_FILE);
        History::save(&h.to_json(), &path).unwrap();

        // Restarted a minute later; the camera "gone" was removed from the options.
        let again = History::load(&path, at(160), &["a"]);
        let snap = again.snapshot("a", at(0)).unwrap();
        assert_eq!(snap.buckets.len(), 2);
        assert_eq!(snap.buckets[0].score, 0.12);
        assert_eq!(snap.buckets[0].level_dbfs, -50.1);
        // The episode open at the crash is closed at the last bucket heard.
        assert_eq!(snap.episodes[0].ended_ms, Some(ms(100)));
        assert_eq!(again.snapshot("gone", at(0)), None);

        // A day later everything has expired.
        let later = History::load(&path, at(100 + 25 * 3600), &["a"]);
        assert_eq!(
            later.snapshot("a", at(0)).unwrap(),
            CameraHistory {
                bucket_seconds: 5,
                ..CameraHistory::default()
            }
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_damaged_file_is_ignored() {
        let dir = std::env::temp_dir().join(format!("vigil-history-{}", fastrand::u64(..)));
        let path = dir.join(HISTORY_FILE);
        History::save("{\"format\": 1, \"cameras\": [", &path).unwrap();
        let h = History::load(&path, at(0), &["a"]);
        assert_eq!(h.snapshot("a", at(0)), None);
        assert!(History::from_json("{\"format\": 9, \"cameras\": {}}", at(0), &["a"]).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
