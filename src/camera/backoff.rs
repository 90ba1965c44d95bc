//! When to try a camera again: pure logic, no clock of its own and no I/O.
//!
//! After a camera that was streaming goes away (a reboot, a network blip) the first retries are
//! fast, so the stream is back about a second after the camera is; after [`FAST_WINDOW`] of
//! failures the delay grows to [`MAX_DELAY`]. A failure that retrying soon cannot fix (a wrong
//! password, a wrong path) starts slow, unless the camera has streamed before: then a 404 or a
//! garbled answer is a camera still booting (its RTSP server up before its encoder), retried
//! fast too. A wrong password always starts slow: cameras lock out a client that keeps trying.
//! Every delay has jitter, so cameras behind one switch do not retry in lockstep. A session counts as healthy (and so ends an outage) only after it ran
//! [`HEALTHY_AFTER`]: a camera that accepts and drops at once keeps backing off.

use std::time::{Duration, Instant};

use super::failure::FailureKind;

/// How long after an outage begins retries stay fast.
// 20 s rather than 10: an outage of about 10 s (a camera's reboot) must still end with a fast retry.
pub const FAST_WINDOW: Duration = Duration::from_secs(20);
/// The retry delay during the fast window: a refused connection costs next to nothing, and the
/// stream is back within about this long plus the camera's first keyframe.
const FAST_DELAY: Duration = Duration::from_millis(500);
/// The first delay once the fast window has passed; each next one is [`GROWTH`] times longer.
const SLOW_START: Duration = Duration::from_secs(1);
/// A failure that needs a change starts this many steps into the slow schedule (2.25 s).
const NEEDS_A_CHANGE_STEP: u32 = 2;
const GROWTH: f64 = 1.5;
/// The longest delay between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Delays vary by this fraction either way (the fast ones by half of it).
const JITTER: f64 = 0.2;
/// A session that streamed this long ends the outage: the next failure starts fast again.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// The retry schedule of one camera.
#[derive(Debug, Default)]
pub struct Backoff {
    /// When the current run of failures began.
    outage_since: Option<Instant>,
    /// Attempts made after the fast window, which set the next delay.
    slow_attempts: u32,
    /// When the current session started streaming, if it did.
    online_since: Option<Instant>,
    /// The camera has streamed with these options.
    streamed: bool,
}

impl Backoff {
    pub fn new() -> Self {
        Self::default()
    }

    /// The session began streaming at `now`.
    pub fn on_online(&mut self, now: Instant) {
        self.online_since = Some(now);
        self.streamed = true;
    }

    /// A session or attempt failed at `now` with `kind`: how long to wait before the next one.
    /// `unit` is a random number in `[0, 1)` that picks the jitter.
    pub fn next_delay(&mut self, kind: FailureKind, now: Instant, unit: f64) -> Duration {
        let healthy = self
            .online_since
            .take()
            .is_some_and(|since| now.duration_since(since) >= HEALTHY_AFTER);
        if healthy || self.outage_since.is_none() {
            self.outage_since = Some(now);
            self.slow_attempts = 0;
        }
        let elapsed = self.outage_since.map_or(Duration::ZERO, |t| now - t);
        let needs_a_change = match kind {
            FailureKind::Unauthorized => true,
            _ => kind.needs_a_change() && !self.streamed,
        };
        if !needs_a_change && elapsed < FAST_WINDOW {
            return jittered(FAST_DELAY, JITTER / 2.0, unit);
        }
        if needs_a_change {
            self.slow_attempts = self.slow_attempts.max(NEEDS_A_CHANGE_STEP);
        }
        let grown = SLOW_START.as_secs_f64() * GROWTH.powi(self.slow_attempts as i32);
        self.slow_attempts = self.slow_attempts.saturating_add(1);
        let delay = Duration::from_secs_f64(grown.min(MAX_DELAY.as_secs_f64()));
        jittered(delay, JITTER, unit).min(MAX_DELAY)
    }
}

/// `delay` varied by up to `fraction` either way, `unit` (in `[0, 1)`) choosing where.
fn jittered(delay: Duration, fraction: f64, unit: f64) -> Duration {
    let factor = 1.0 + fraction * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
    delay.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails `kind` repeatedly, each retry made right when the delay asks; returns
    /// (time since the first failure, delay) pairs.
    fn schedule(kind: FailureKind, start: Instant, n: usize, unit: f64) -> Vec<(f64, f64)> {
        let mut backoff = Backoff::new();
        let mut now = start;
        (0..n)
            .map(|_| {
                let delay = backoff.next_delay(kind, now, unit);
                let at = (now - start).as_secs_f64();
                now += delay;
                (at, delay.as_secs_f64())
            })
            .collect()
    }

    #[test]
    fn retries_are_fast_for_the_fast_window_then_grow_to_thirty() {
        let fast = FAST_WINDOW.as_secs_f64();
        let steps = schedule(FailureKind::Unreachable, Instant::now(), 50, 0.5);
        for (at, delay) in &steps {
            if *at < fast {
                assert!((0.45..=0.55).contains(delay), "at {at}: {delay}");
            } else {
                assert!(*delay >= 1.0 && *delay <= 30.0, "at {at}: {delay}");
            }
        }
        let slow: Vec<f64> = steps.iter().filter(|s| s.0 >= fast).map(|s| s.1).collect();
        assert!(slow.windows(2).all(|w| w[1] >= w[0]), "{slow:?}");
        assert_eq!(slow.last(), Some(&30.0));
        // The first slow retry still comes soon: a camera back after 10 s is not left waiting.
        assert!(slow[0] <= 1.0, "{slow:?}");
    }

    #[test]
    fn a_wrong_password_retries_slowly_from_the_start() {
        let steps = schedule(FailureKind::Unauthorized, Instant::now(), 12, 0.5);
        assert!(steps[0].1 >= 2.0, "{steps:?}");
        assert_eq!(steps.last().map(|s| s.1), Some(30.0));
    }

    #[test]
    fn a_bad_stream_is_retried_slowly_until_the_camera_has_streamed() {
        let mut backoff = Backoff::new();
        let mut now = Instant::now();
        assert!(backoff.next_delay(FailureKind::BadStream, now, 0.5) >= Duration::from_secs(2));
        backoff.on_online(now);
        now += HEALTHY_AFTER;
        // Streamed once: garbage or a 404 is a camera still booting, retried fast...
        for kind in [
            FailureKind::BadStream,
            FailureKind::NotFound,
            FailureKind::NoVideo,
        ] {
            now += Duration::from_millis(500);
            assert!(backoff.next_delay(kind, now, 0.5) <= FAST_DELAY, "{kind:?}");
        }
        // ...but not a wrong password.
        now += Duration::from_millis(500);
        assert!(backoff.next_delay(FailureKind::Unauthorized, now, 0.5) >= Duration::from_secs(2));
    }

    #[test]
    fn a_healthy_session_starts_the_next_outage_fast() {
        let mut backoff = Backoff::new();
        let mut now = Instant::now();
        for _ in 0..30 {
            now += backoff.next_delay(FailureKind::Unreachable, now, 0.5);
        }
        backoff.on_online(now);
        now += HEALTHY_AFTER;
        assert_eq!(backoff.next_delay(FailureKind::Ended, now, 0.5), FAST_DELAY);
    }

    #[test]
    fn a_camera_that_drops_at_once_keeps_backing_off() {
        let start = Instant::now();
        let mut backoff = Backoff::new();
        let mut now = start;
        let mut last = Duration::ZERO;
        for _ in 0..30 {
            last = backoff.next_delay(FailureKind::Ended, now, 0.5);
            now += last;
            backoff.on_online(now);
            now += Duration::from_secs(1); // streams for a second, then drops
        }
        assert_eq!(last, MAX_DELAY);
    }

    #[test]
    fn jitter_stays_within_bounds_and_under_the_cap() {
        for unit in [0.0, 0.25, 0.5, 0.999] {
            let steps = schedule(FailureKind::Unreachable, Instant::now(), 40, unit);
            for (_, delay) in steps {
                assert!((0.45..=30.0).contains(&delay), "{delay}");
            }
            let d = jittered(Duration::from_secs(10), JITTER, unit).as_secs_f64();
            assert!((8.0..=12.0).contains(&d), "{d}");
        }
    }
}
