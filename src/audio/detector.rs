//! The cry detector: turns each window's YAMNet scores and sound level into crying / not crying,
//! with one episode per cry.
//!
//! Pure logic on stream time (`Duration`s from the audio's own clock): no I/O, no wall clock, no
//! threads. docs/detection.md explains the rules and how the defaults were measured.

use std::collections::VecDeque;
use std::time::Duration;

use super::yamnet::Scores;
use crate::config::{self, Config};

/// The YAMNet classes whose maximum is the cry score: "Crying, sobbing" and "Baby cry, infant
/// cry". Others were measured and left out (docs/detection.md).
pub const CRY_CLASSES: [usize; 2] = [19, 20];

/// The off threshold is this fraction of the on threshold (hysteresis).
pub const OFF_RATIO: f32 = 0.6;
/// A cry starts when [`ONSET_MIN`] of the last [`ONSET_WINDOWS`] windows reach the off
/// threshold and one of them reaches the on threshold.
pub const ONSET_WINDOWS: usize = 3;
pub const ONSET_MIN: usize = 2;

/// The level reported for digital silence (a log of zero would be -inf).
pub const SILENCE_DBFS: f32 = -120.0;

/// What the detector is tuned with. Changing it between windows takes effect at the next one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorSettings {
    /// On threshold, 0–1 (`cry_threshold`).
    pub cry_threshold: f32,
    /// Volume gate in dBFS (`cry_min_level`).
    pub min_level_dbfs: f32,
    /// How long without a cry window ends an episode (`cry_hold`).
    pub hold: Duration,
}

impl Default for DetectorSettings {
    /// The options' defaults (src/config/raw.rs).
    fn default() -> Self {
        Self {
            cry_threshold: config::DEFAULT_CRY_THRESHOLD as f32,
            min_level_dbfs: config::DEFAULT_CRY_MIN_LEVEL as f32,
            hold: Duration::from_secs_f64(config::DEFAULT_CRY_HOLD),
        }
    }
}

impl DetectorSettings {
    /// The options' values; `cry_threshold` may then be replaced per camera (crate::settings).
    pub fn from_config(config: &Config) -> Self {
        Self {
            cry_threshold: config.cry_threshold,
            min_level_dbfs: config.cry_min_level,
            hold: Duration::from_secs_f64(config.cry_hold),
        }
    }

    pub fn off_threshold(&self) -> f32 {
        self.cry_threshold * OFF_RATIO
    }
}

/// The cry score of one window: the highest of the [`CRY_CLASSES`].
pub fn cry_score(scores: &Scores) -> f32 {
    CRY_CLASSES
        .iter()
        .map(|&c| scores.get(c))
        .fold(0.0, f32::max)
}

/// The RMS level of `samples` in dBFS (0 = a full-scale square wave), at least [`SILENCE_DBFS`].
pub fn level_dbfs(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return SILENCE_DBFS;
    }
    let mean_square =
        samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len() as f64;
    let db = 10.0 * mean_square.log10();
    if db.is_finite() {
        (db as f32).max(SILENCE_DBFS)
    } else {
        SILENCE_DBFS
    }
}

/// One scored window, as the detector sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Stream time of the window's last sample.
    pub end: Duration,
    /// The cry score, 0–1.
    pub score: f32,
    pub level_dbfs: f32,
}

/// One cry, from its first cry window to its last (the hold is not included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Episode {
    pub started: Duration,
    pub ended: Duration,
    pub peak_score: f32,
}

/// A change of state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// Crying began at `at` (the end of the first window of the onset).
    Started { at: Duration, score: f32 },
    /// Crying ended: the hold passed, the audio stopped, or detection was turned off.
    Ended(Episode),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Quiet,
    Crying {
        started: Duration,
        last_cry: Duration,
        peak: f32,
    },
}

/// The detector of one camera.
#[derive(Debug, Clone)]
pub struct CryDetector {
    /// The last [`ONSET_WINDOWS`] windows: end time and gated score.
    recent: VecDeque<(Duration, f32)>,
    state: State,
}

impl Default for CryDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl CryDetector {
    pub fn new() -> Self {
        Self {
            recent: VecDeque::with_capacity(ONSET_WINDOWS),
            state: State::Quiet,
        }
    }

    pub fn crying(&self) -> bool {
        matches!(self.state, State::Crying { .. })
    }

    /// The score that counts: the window's score, or 0 when it is quieter than the gate.
    pub fn gated_score(window: &Window, settings: &DetectorSettings) -> f32 {
        if window.level_dbfs >= settings.min_level_dbfs {
            window.score
        } else {
            0.0
        }
    }

    /// Takes the next window (in stream order) and says what changed.
    pub fn observe(&mut self, window: Window, settings: &DetectorSettings) -> Option<Transition> {
        let score = Self::gated_score(&window, settings);
        let off = settings.off_threshold();
        if self.recent.len() == ONSET_WINDOWS {
            self.recent.pop_front();
        }
        self.recent.push_back((window.end, score));

        match &mut self.state {
            State::Crying { last_cry, peak, .. } => {
                if score >= off {
                    *last_cry = window.end;
                    *peak = peak.max(score);
                    None
                } else if window.end.saturating_sub(*last_cry) >= settings.hold {
                    self.end()
                } else {
                    None
                }
            }
            State::Quiet => {
                let supporting = self.recent.iter().filter(|(_, s)| *s >= off);
                let count = supporting.clone().count();
                let strongest = supporting.clone().map(|(_, s)| *s).fold(0.0, f32::max);
                if count < ONSET_MIN || strongest < settings.cry_threshold {
                    return None;
                }
                let started = supporting.map(|(end, _)| *end).next()?;
                self.state = State::Crying {
                    started,
                    last_cry: window.end,
                    peak: strongest,
                };
                Some(Transition::Started {
                    at: started,
                    score: strongest,
                })
            }
        }
    }

    /// The audio was interrupted until stream time `now` (a camera outage, dropped chunks):
    /// windows before it no longer count towards an onset, and an episode whose hold has
    /// passed by `now` ends.
    pub fn gap(&mut self, now: Duration, settings: &DetectorSettings) -> Option<Transition> {
        self.recent.clear();
        match self.state {
            State::Crying { last_cry, .. } if now.saturating_sub(last_cry) >= settings.hold => {
                self.end()
            }
            _ => None,
        }
    }

    /// Ends any episode now: the audio stopped, or detection was turned off.
    pub fn stop(&mut self) -> Option<Transition> {
        self.recent.clear();
        self.end()
    }

    fn end(&mut self) -> Option<Transition> {
        match std::mem::replace(&mut self.state, State::Quiet) {
            State::Crying {
                started,
                last_cry,
                peak,
            } => Some(Transition::Ended(Episode {
                started,
                ended: last_cry,
                peak_score: peak,
            })),
            State::Quiet => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOP_MS: u64 = 480;

    /// Feeds windows `(score, level)` at 0.48 s steps (the first ends at 0.975 s) and returns
    /// the states and transitions as text: `.` quiet, `#` crying, `S@t` started at t ms,
    /// `E@a-b` ended (episode a–b ms).
    fn run(windows: &[(f32, f32)], settings: DetectorSettings) -> String {
        let mut detector = CryDetector::new();
        let mut out = String::new();
        for (i, &(score, level_dbfs)) in windows.iter().enumerate() {
            let end = Duration::from_millis(975 + HOP_MS * i as u64);
            let transition = detector.observe(
                Window {
                    end,
                    score,
                    level_dbfs,
                },
                &settings,
            );
            out.push_str(&describe(transition));
            out.push(if detector.crying() { '#' } else { '.' });
        }
        out
    }

    fn describe(transition: Option<Transition>) -> String {
        match transition {
            None => String::new(),
            Some(Transition::Started { at, .. }) => format!("S@{}", at.as_millis()),
            Some(Transition::Ended(e)) => {
                format!("E@{}-{}", e.started.as_millis(), e.ended.as_millis())
            }
        }
    }

    fn check(windows: &[(f32, f32)], settings: DetectorSettings, expected: &str) {
        let got = run(windows, settings);
        assert_eq!(got, expected, "windows {windows:?}");
    }

    fn loud(scores: &[f32]) -> Vec<(f32, f32)> {
        scores.iter().map(|&s| (s, -30.0)).collect()
    }

    fn short_hold() -> DetectorSettings {
        DetectorSettings {
            hold: Duration::from_millis(1000),
            ..DetectorSettings::default()
        }
    }

    #[test]
    fn one_strong_window_alone_does_not_start_a_cry() {
        check(&loud(&[0.0, 0.9, 0.0, 0.0]), short_hold(), "....");
    }

    #[test]
    fn two_of_three_start_a_cry_at_the_first_of_them() {
        // 0.9 then 0.35 (above the off threshold 0.3): on at the second, dated to the first.
        check(&loud(&[0.0, 0.9, 0.35]), short_hold(), "..S@1455#");
        // Not consecutive: 0.9, quiet, 0.4 is still 2 of the last 3.
        check(&loud(&[0.9, 0.0, 0.4]), short_hold(), "..S@975#");
        // Two windows above the off threshold but none above the on threshold.
        check(&loud(&[0.45, 0.45, 0.45]), short_hold(), "...");
    }

    #[test]
    fn hysteresis_keeps_crying_above_the_off_threshold() {
        // After the onset, 0.35 windows (< on 0.5, ≥ off 0.3) keep it on beyond the hold.
        check(
            &loud(&[0.9, 0.9, 0.35, 0.35, 0.35, 0.35, 0.35]),
            short_hold(),
            ".S@975######",
        );
    }

    #[test]
    fn hold_bridges_pauses_and_then_ends_one_episode() {
        // A cry, a 0.96 s pause (2 windows < hold 1 s), the cry again, then quiet until the
        // hold has passed: one episode from the first window to the last cry window.
        let windows = loud(&[0.9, 0.9, 0.0, 0.0, 0.8, 0.0, 0.0, 0.0]);
        check(&windows, short_hold(), ".S@975######E@975-2895.");
    }

    #[test]
    fn volume_gate_silences_quiet_windows() {
        let quiet = [(0.9, -80.0), (0.9, -80.0), (0.9, -80.0)];
        check(&quiet, short_hold(), "...");
        let at_gate = [(0.9, -70.0), (0.9, -70.0)];
        check(&at_gate, short_hold(), ".S@975#");
        let lower_gate = DetectorSettings {
            min_level_dbfs: -90.0,
            ..short_hold()
        };
        check(&quiet, lower_gate, ".S@975##");
    }

    #[test]
    fn the_threshold_moves_both_thresholds() {
        let strict = DetectorSettings {
            cry_threshold: 0.8,
            ..short_hold()
        };
        // Off threshold 0.48: 0.45 does not support the onset any more.
        check(&loud(&[0.9, 0.45, 0.45]), strict, "...");
        check(&loud(&[0.9, 0.5]), strict, ".S@975#");
    }

    #[test]
    fn a_gap_clears_the_onset_and_ends_an_old_episode() {
        let settings = short_hold();
        let mut d = CryDetector::new();
        let w = |ms: u64, score: f32| Window {
            end: Duration::from_millis(ms),
            score,
            level_dbfs: -30.0,
        };
        assert_eq!(d.observe(w(975, 0.9), &settings), None);
        // Outage: the window before it does not count towards an onset after it.
        assert_eq!(d.gap(Duration::from_millis(5000), &settings), None);
        assert_eq!(d.observe(w(5975, 0.9), &settings), None);
        assert!(matches!(
            d.observe(w(6455, 0.9), &settings),
            Some(Transition::Started { .. })
        ));
        // A gap shorter than the hold keeps the episode; a longer one ends it.
        assert_eq!(d.gap(Duration::from_millis(7000), &settings), None);
        assert!(d.crying());
        let ended = d.gap(Duration::from_millis(9000), &settings);
        assert_eq!(
            ended,
            Some(Transition::Ended(Episode {
                started: Duration::from_millis(5975),
                ended: Duration::from_millis(6455),
                peak_score: 0.9,
            }))
        );
    }

    #[test]
    fn stop_ends_an_episode_once() {
        let mut d = CryDetector::new();
        let settings = short_hold();
        for ms in [975, 1455] {
            d.observe(
                Window {
                    end: Duration::from_millis(ms),
                    score: 0.7,
                    level_dbfs: -20.0,
                },
                &settings,
            );
        }
        assert!(matches!(d.stop(), Some(Transition::Ended(e)) if e.peak_score == 0.7));
        assert_eq!(d.stop(), None);
    }

    #[test]
    fn levels_in_dbfs() {
        assert_eq!(level_dbfs(&[]), SILENCE_DBFS);
        assert_eq!(level_dbfs(&[0.0; 100]), SILENCE_DBFS);
        assert!((level_dbfs(&[1.0, -1.0]) - 0.0).abs() < 1e-6);
        assert!((level_dbfs(&[0.1; 10]) + 20.0).abs() < 1e-4);
        let sine: Vec<f32> = (0..16000).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
        assert!((level_dbfs(&sine) + 9.03).abs() < 0.05);
    }

    #[test]
    fn the_cry_score_is_the_highest_cry_class() {
        let mut scores = vec![0.0; 521];
        scores[0] = 0.99; // speech is not crying
        scores[19] = 0.4;
        scores[20] = 0.6;
        assert_eq!(cry_score(&Scores(scores)), 0.6);
    }
}
