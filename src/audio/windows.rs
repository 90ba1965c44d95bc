//! Slides YAMNet windows over a stream of PCM chunks: a ring buffer of the last 0.975 s, a
//! window every 0.24 s of new audio, and gaps in `pts` handled on the way.
//!
//! Pure: the caller hands chunks in and gets windows (and gaps) out, on a clock of its own that
//! only moves forward. Used by the detection service and by `vigil detect`, so both cut the
//! audio the same way.

use std::collections::VecDeque;
use std::time::Duration;

use super::yamnet::{HOP_SAMPLES, WINDOW_SAMPLES};
use super::{DETECTOR_SAMPLE_RATE, PcmChunk};

/// A hole up to this long (lost chunks) is filled with silence so the windows keep their pace;
/// a longer one (an outage) restarts the windows after it.
pub const MAX_FILLED_GAP: Duration = Duration::from_millis(250);
/// Timestamps may wobble by this much without counting as a gap.
const PTS_TOLERANCE: Duration = Duration::from_millis(20);

/// What came out of a chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum Cut {
    /// A full window; `end` is the stream time just after its last sample.
    Window { end: Duration, samples: Vec<f32> },
    /// Audio was missing from `from` to `to` (stream time); windows restart after it.
    Gap { from: Duration, to: Duration },
}

#[derive(Debug, Clone)]
pub struct Windower {
    ring: VecDeque<f32>,
    /// Samples added since the last window (or since the start).
    fresh: usize,
    /// Whether the first window since the (re)start has been cut.
    primed: bool,
    /// The stream time just after the last sample taken (our own clock).
    clock: Duration,
    /// The `pts` we expect the next chunk to have.
    expected_pts: Option<Duration>,
}

impl Default for Windower {
    fn default() -> Self {
        Self::new()
    }
}

impl Windower {
    pub fn new() -> Self {
        Self {
            ring: VecDeque::with_capacity(WINDOW_SAMPLES),
            fresh: 0,
            primed: false,
            clock: Duration::ZERO,
            expected_pts: None,
        }
    }

    /// The stream time just after the last sample taken.
    pub fn clock(&self) -> Duration {
        self.clock
    }

    /// Takes one chunk and hands each window and gap it completes to `out`, in order.
    pub fn push(&mut self, chunk: &PcmChunk, mut out: impl FnMut(Cut)) {
        match self.expected_pts {
            None => self.clock = chunk.pts,
            Some(expected) if chunk.pts > expected + PTS_TOLERANCE => {
                let missing = chunk.pts - expected;
                if missing <= MAX_FILLED_GAP {
                    let silence = vec![0.0; samples_in(missing)];
                    self.take(&silence, &mut out);
                } else {
                    let from = self.clock;
                    self.clock += missing;
                    self.restart();
                    out(Cut::Gap {
                        from,
                        to: self.clock,
                    });
                }
            }
            Some(expected) if chunk.pts + PTS_TOLERANCE < expected => {
                // Time went backwards (a source that restarted its clock): our clock goes on,
                // but no window spans the jump.
                let at = self.clock;
                self.restart();
                out(Cut::Gap { from: at, to: at });
            }
            Some(_) => {}
        }
        self.expected_pts = Some(chunk.pts + duration_of(chunk.samples.len()));
        self.take(&chunk.samples, &mut out);
    }

    /// At the end of a file: the samples since the last window, padded with silence into one
    /// last window on the same 0.24 s grid (as YAMNet does for a clip's tail), if there are any.
    pub fn finish(&mut self) -> Option<Cut> {
        if self.fresh == 0 {
            return None;
        }
        // The next window starts one hop after the last one, or where the audio started.
        let start = if self.primed {
            HOP_SAMPLES - self.fresh
        } else {
            0
        };
        let mut samples: Vec<f32> = self.ring.iter().skip(start).copied().collect();
        let padding = WINDOW_SAMPLES - samples.len();
        samples.resize(WINDOW_SAMPLES, 0.0);
        self.fresh = 0;
        Some(Cut::Window {
            end: self.clock + duration_of(padding),
            samples,
        })
    }

    fn take(&mut self, samples: &[f32], out: &mut impl FnMut(Cut)) {
        for &sample in samples {
            if self.ring.len() == WINDOW_SAMPLES {
                self.ring.pop_front();
            }
            self.ring.push_back(sample);
            self.fresh += 1;
            self.clock += SAMPLE;
            let due = if self.primed {
                self.fresh == HOP_SAMPLES
            } else {
                self.ring.len() == WINDOW_SAMPLES
            };
            if due {
                self.primed = true;
                self.fresh = 0;
                out(Cut::Window {
                    end: self.clock,
                    samples: self.ring.iter().copied().collect(),
                });
            }
        }
    }

    /// The audio stopped for a while (no chunk came): the next window starts afresh, while
    /// the clock and the expected `pts` stay, so the next chunk's gap is still measured.
    pub fn interrupt(&mut self) {
        self.restart();
    }

    fn restart(&mut self) {
        self.ring.clear();
        self.fresh = 0;
        self.primed = false;
    }
}

/// One sample at 16 kHz: 62.5 µs.
const SAMPLE: Duration = Duration::from_nanos(1_000_000_000 / DETECTOR_SAMPLE_RATE as u64);

fn samples_in(d: Duration) -> usize {
    (d.as_secs_f64() * f64::from(DETECTOR_SAMPLE_RATE)).round() as usize
}

fn duration_of(samples: usize) -> Duration {
    Duration::from_nanos(samples as u64 * 1_000_000_000 / u64::from(DETECTOR_SAMPLE_RATE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(pts_ms: u64, samples: usize, value: f32) -> PcmChunk {
        PcmChunk {
            pts: Duration::from_millis(pts_ms),
            samples: vec![value; samples],
        }
    }

    /// Pushes `chunks` and describes what came out: `W<end ms>` per window, `G<from>-<to>` per
    /// gap, then `F<end ms>` for the padded tail window (if any).
    fn check(chunks: &[PcmChunk], expected: &str) {
        let mut w = Windower::new();
        let mut got = Vec::new();
        let mut describe = |cut: Cut| match cut {
            Cut::Window { end, samples } => {
                assert_eq!(samples.len(), WINDOW_SAMPLES);
                got.push(format!("W{}", end.as_millis()));
            }
            Cut::Gap { from, to } => got.push(format!("G{}-{}", from.as_millis(), to.as_millis())),
        };
        for c in chunks {
            w.push(c, &mut describe);
        }
        if let Some(Cut::Window { end, .. }) = w.finish() {
            got.push(format!("F{}", end.as_millis()));
        }
        assert_eq!(got.join(" "), expected);
    }

    /// One second of audio in 100 ms chunks from `start_ms`.
    fn second_from(start_ms: u64) -> Vec<PcmChunk> {
        (0..10)
            .map(|i| chunk(start_ms + i * 100, 1600, 0.1))
            .collect()
    }

    #[test]
    fn windows_every_hop_after_the_first_full_one() {
        // 2 s: windows end at 0.975, 1.215, … 1.935; the 65 ms left are padded into one more.
        let mut chunks = second_from(0);
        chunks.extend(second_from(1000));
        check(&chunks, "W975 W1215 W1455 W1695 W1935 F2175");
        // Exactly one window: nothing left for a tail.
        check(&[chunk(0, WINDOW_SAMPLES, 0.1)], "W975");
        // Shorter than a window: one padded window.
        check(&[chunk(0, 8000, 0.1)], "F975");
        check(&[], "");
    }

    #[test]
    fn the_clock_starts_at_the_first_pts() {
        check(&second_from(60_000), "W60975 F61215");
    }

    #[test]
    fn small_holes_are_filled_and_keep_the_pace() {
        // 100 ms missing at 0.5 s: filled with silence, so windows stay on the grid.
        let mut chunks = second_from(0);
        chunks.remove(5);
        check(&chunks, "W975 F1215");
        let mut w = Windower::new();
        let mut windows = Vec::new();
        for c in &chunks {
            w.push(c, |cut| windows.push(cut));
        }
        let Some(Cut::Window { samples, .. }) = windows.first() else {
            panic!("no window");
        };
        let silent = samples.iter().filter(|s| **s == 0.0).count();
        assert_eq!(silent, 1600);
    }

    #[test]
    fn an_outage_restarts_the_windows_after_it() {
        // 1 s, then nothing until 11 s, then 1 s: the gap is reported and no window spans it.
        let mut chunks = second_from(0);
        chunks.extend(second_from(11_000));
        check(&chunks, "W975 G1000-11000 W11975 F12215");
    }

    #[test]
    fn time_going_backwards_keeps_our_clock_moving() {
        let mut chunks = second_from(50_000);
        chunks.extend(second_from(0));
        check(&chunks, "W50975 G51000-51000 W51975 F52215");
    }

    #[test]
    fn jitter_within_the_tolerance_is_no_gap() {
        let chunks: Vec<PcmChunk> = (0..20)
            .map(|i| chunk(i * 100 + if i % 2 == 0 { 0 } else { 5 }, 1600, 0.1))
            .collect();
        check(&chunks, "W975 W1215 W1455 W1695 W1935 F2175");
    }
}
