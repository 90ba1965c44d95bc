//! How often a measured value (cry score, sound level) is sent, so Home Assistant's recorder is
//! not flooded: a new value goes out only when it moved by at least a dead band since the last
//! one sent, and at most once per interval; a change held back by the interval is sent when the
//! interval is up, so the last word is never lost. Pure logic: the caller supplies the clock.

use std::time::{Duration, Instant};

/// The rate limit of one value.
#[derive(Debug, Clone)]
pub struct Throttle {
    interval: Duration,
    dead_band: f32,
    /// The last value handed out, and when.
    sent: Option<(f32, Instant)>,
    /// A change that waits for the interval to end.
    pending: Option<f32>,
}

impl Throttle {
    pub fn new(interval: Duration, dead_band: f32) -> Self {
        Self {
            interval,
            dead_band,
            sent: None,
            pending: None,
        }
    }

    /// A new measurement; returns the value to send now, if any.
    pub fn offer(&mut self, value: f32, now: Instant) -> Option<f32> {
        let Some((last, at)) = self.sent else {
            return self.send(value, now);
        };
        if (value - last).abs() < self.dead_band {
            // Back near what Home Assistant shows: a held-back change is no longer news.
            self.pending = None;
            return None;
        }
        if now.saturating_duration_since(at) >= self.interval {
            self.send(value, now)
        } else {
            self.pending = Some(value);
            None
        }
    }

    /// Sends `value` now whatever the interval (at a cry's onset or end), unless it is what
    /// was sent last.
    pub fn force(&mut self, value: f32, now: Instant) -> Option<f32> {
        if self.sent.is_some_and(|(last, _)| last == value) {
            self.pending = None;
            return None;
        }
        self.send(value, now)
    }

    /// The held-back change, once its interval is up.
    pub fn due(&mut self, now: Instant) -> Option<f32> {
        let value = self.pending?;
        if now >= self.deadline()? {
            self.send(value, now)
        } else {
            None
        }
    }

    /// When [`Throttle::due`] will have something, if anything waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending?;
        self.sent.map(|(_, at)| at + self.interval)
    }

    fn send(&mut self, value: f32, now: Instant) -> Option<f32> {
        self.sent = Some((value, now));
        self.pending = None;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `(seconds, value)` readings and checks which values went out at which times; a
    /// reading of `None` only advances the clock (a timer tick).
    fn check(readings: &[(f32, Option<f32>)], expected: &[(f32, f32)]) {
        let start = Instant::now();
        let at = |s: f32| start + Duration::from_secs_f32(s);
        let mut t = Throttle::new(Duration::from_secs(5), 5.0);
        let mut sent = Vec::new();
        for &(s, value) in readings {
            if let Some(v) = t.due(at(s)) {
                sent.push((s, v));
            }
            if let Some(value) = value
                && let Some(v) = t.offer(value, at(s))
            {
                sent.push((s, v));
            }
        }
        assert_eq!(sent, expected, "readings {readings:?}");
    }

    #[test]
    fn the_first_value_goes_at_once() {
        check(&[(0.0, Some(3.0))], &[(0.0, 3.0)]);
    }

    #[test]
    fn small_moves_are_not_news() {
        check(
            &[(0.0, Some(3.0)), (6.0, Some(5.0)), (12.0, Some(7.9))],
            &[(0.0, 3.0)],
        );
    }

    #[test]
    fn big_moves_wait_for_the_interval_and_the_latest_wins() {
        check(
            &[
                (0.0, Some(3.0)),
                (1.0, Some(40.0)),
                (2.0, Some(60.0)),
                (4.9, None),
                (5.0, None),
            ],
            &[(0.0, 3.0), (5.0, 60.0)],
        );
    }

    #[test]
    fn a_held_back_change_is_dropped_when_the_value_comes_back() {
        check(
            &[
                (0.0, Some(3.0)),
                (1.0, Some(40.0)),
                (2.0, Some(4.0)),
                (6.0, None),
            ],
            &[(0.0, 3.0)],
        );
    }

    #[test]
    fn after_the_interval_a_big_move_goes_at_once() {
        check(
            &[
                (0.0, Some(3.0)),
                (7.0, Some(90.0)),
                (8.0, Some(20.0)),
                (12.0, None),
            ],
            &[(0.0, 3.0), (7.0, 90.0), (12.0, 20.0)],
        );
    }

    #[test]
    fn force_skips_the_interval_but_not_a_repeat() {
        let now = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(5), 5.0);
        assert_eq!(t.offer(3.0, now), Some(3.0));
        assert_eq!(t.offer(80.0, now), None);
        assert!(t.deadline().is_some());
        assert_eq!(t.force(80.0, now), Some(80.0));
        assert_eq!(t.deadline(), None);
        assert_eq!(t.force(80.0, now), None);
    }
}
