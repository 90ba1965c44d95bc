//! `vigil detect FILE.wav`: the live detector run over a recording, window by window, and the
//! report it prints (a table, or JSON).
//!
//! The same windows ([`Windower`]), scores and [`CryDetector`] as the cameras use, with the
//! file's own time instead of the camera's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::detector::{CryDetector, DetectorSettings, Episode, Transition, Window, cry_score};
use super::wav::{self, WavError, WavInfo};
use super::windows::{Cut, Windower};
use super::yamnet::{Yamnet, YamnetError, class_name};
use super::{PcmChunk, detector};

/// How many of the best classes each window lists.
const TOP_CLASSES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error(transparent)]
    Wav(#[from] WavError),
    #[error(transparent)]
    Model(#[from] YamnetError),
}

/// One window of the file.
#[derive(Debug, Clone, Serialize)]
pub struct WindowReport {
    /// Seconds from the start of the file to the end of the window.
    pub end_s: f64,
    pub level_dbfs: f32,
    /// The cry score (max of "Crying, sobbing" and "Baby cry, infant cry").
    pub score: f32,
    /// False when the window is quieter than `cry_min_level`, so its score does not count.
    pub loud_enough: bool,
    /// The detector's state after this window.
    pub crying: bool,
    /// The best classes, best first.
    pub top: Vec<ClassScore>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassScore {
    pub class: &'static str,
    pub score: f32,
}

/// One cry found in the file.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EpisodeReport {
    pub start_s: f64,
    pub end_s: f64,
    pub peak_score: f32,
}

impl From<Episode> for EpisodeReport {
    fn from(e: Episode) -> Self {
        Self {
            start_s: e.started.as_secs_f64(),
            end_s: e.ended.as_secs_f64(),
            peak_score: e.peak_score,
        }
    }
}

/// The settings the file was analysed with, as the report shows them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SettingsReport {
    pub cry_threshold: f32,
    pub off_threshold: f32,
    pub cry_min_level: f32,
    pub cry_hold_s: f64,
    pub onset: &'static str,
}

impl From<DetectorSettings> for SettingsReport {
    fn from(s: DetectorSettings) -> Self {
        Self {
            cry_threshold: s.cry_threshold,
            off_threshold: s.off_threshold(),
            cry_min_level: s.min_level_dbfs,
            cry_hold_s: s.hold.as_secs_f64(),
            onset: ONSET,
        }
    }
}

const ONSET: &str = "2 of 3 windows";
const _: () = assert!(detector::ONSET_MIN == 2 && detector::ONSET_WINDOWS == 3);

/// What `vigil detect` found in one file.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub file: PathBuf,
    pub wav: WavInfo,
    pub settings: SettingsReport,
    pub windows: Vec<WindowReport>,
    pub episodes: Vec<EpisodeReport>,
}

/// Runs the detector over the WAV file at `path`.
pub fn analyze(
    path: &Path,
    settings: DetectorSettings,
    yamnet: &mut Yamnet,
) -> Result<Analysis, AnalyzeError> {
    let mut windower = Windower::new();
    let mut detector = CryDetector::new();
    let mut windows = Vec::new();
    let mut episodes = Vec::new();
    let mut failure: Option<YamnetError> = None;
    let mut read = 0usize;

    let mut on_cut = |cut: Cut| {
        let Cut::Window { end, samples } = cut else {
            return; // a file has no gaps
        };
        if failure.is_some() {
            return;
        }
        let scores = match yamnet.score(&samples) {
            Ok(scores) => scores,
            Err(e) => {
                failure = Some(e);
                return;
            }
        };
        let window = Window {
            end,
            score: cry_score(&scores),
            level_dbfs: detector::level_dbfs(&samples),
        };
        match detector.observe(window, &settings) {
            Some(Transition::Ended(e)) => episodes.push(EpisodeReport::from(e)),
            Some(Transition::Started { .. }) | None => {}
        }
        windows.push(WindowReport {
            end_s: end.as_secs_f64(),
            level_dbfs: window.level_dbfs,
            score: window.score,
            loud_enough: window.level_dbfs >= settings.min_level_dbfs,
            crying: detector.crying(),
            top: scores
                .top(TOP_CLASSES)
                .into_iter()
                .map(|(i, score)| ClassScore {
                    class: class_name(i),
                    score,
                })
                .collect(),
        });
    };

    let info = wav::decode(path, |samples| {
        let chunk = PcmChunk {
            pts: samples_to_time(read),
            samples: samples.to_vec(),
        };
        read += samples.len();
        windower.push(&chunk, &mut on_cut);
    })?;
    if let Some(tail) = windower.finish() {
        on_cut(tail);
    }
    if let Some(e) = failure {
        return Err(e.into());
    }
    if let Some(Transition::Ended(e)) = detector.stop() {
        episodes.push(EpisodeReport::from(e));
    }
    Ok(Analysis {
        file: path.to_path_buf(),
        wav: info,
        settings: settings.into(),
        windows,
        episodes,
    })
}

fn samples_to_time(samples: usize) -> Duration {
    Duration::from_nanos(samples as u64 * 1_000_000_000 / u64::from(super::DETECTOR_SAMPLE_RATE))
}

impl Analysis {
    /// True when at least one cry was found.
    pub fn found_crying(&self) -> bool {
        !self.episodes.is_empty()
    }

    /// The highest cry score of any window loud enough to count.
    pub fn peak_score(&self) -> f32 {
        self.windows
            .iter()
            .filter(|w| w.loud_enough)
            .map(|w| w.score)
            .fold(0.0, f32::max)
    }

    /// The report as a readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let w = &self.wav;
        let s = &self.settings;
        let _ = writeln!(
            out,
            "{}: {} Hz, {} channel{}, {}-bit, {:.2} s",
            self.file.display(),
            w.sample_rate,
            w.channels,
            if w.channels == 1 { "" } else { "s" },
            w.bits_per_sample,
            w.duration.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "settings: cry_threshold {:.2} (stays on above {:.2}), cry_min_level {:.0} dBFS, \
             cry_hold {:.0} s, onset {}\n",
            s.cry_threshold, s.off_threshold, s.cry_min_level, s.cry_hold_s, s.onset
        );
        let _ = writeln!(
            out,
            "{:>8}  {:>10}  {:>5}  {:<7}  best classes",
            "time", "level", "cry", "state"
        );
        for win in &self.windows {
            let level = if win.loud_enough {
                format!("{:.1} dBFS", win.level_dbfs)
            } else {
                format!("{:.1} quiet", win.level_dbfs)
            };
            let top: Vec<String> = win
                .top
                .iter()
                .map(|c| format!("{} {:.2}", c.class, c.score))
                .collect();
            let _ = writeln!(
                out,
                "{:>7.2}s  {:>10}  {:>5.2}  {:<7}  {}",
                win.end_s,
                level,
                win.score,
                if win.crying { "CRYING" } else { "-" },
                top.join(", ")
            );
        }
        let _ = writeln!(out);
        if self.episodes.is_empty() {
            let _ = writeln!(
                out,
                "no crying found (highest cry score {:.2}, threshold {:.2})",
                self.peak_score(),
                s.cry_threshold
            );
        } else {
            let _ = writeln!(out, "{} crying episode(s):", self.episodes.len());
            for (i, e) in self.episodes.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  {}. {:.2} s – {:.2} s, peak score {:.2}",
                    i + 1,
                    e.start_s,
                    e.end_s,
                    e.peak_score
                );
            }
        }
        out
    }
}
