//! What each camera's state topics say: crying and online at once, the cry score and the sound
//! level through [`Throttle`]s, and the switch and number from the settings store (with the
//! mapping of the sensitivity number, 0–100 %, to the cry threshold, 0–1), the "last 12 h"
//! totals, and the cry event entity's payloads.
//!
//! Reads the camera's watch channels (always the latest value, never a queue) and writes the
//! [`Outbox`]; no I/O.

use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::CameraFeed;
use super::discovery::{CRY_ENDED, CRY_STARTED, Entity, NO_VALUE, OFF, ON, state_topic};
use super::outbox::Outbox;
use super::rate::Throttle;
use crate::audio::history::CryTotals;
use crate::audio::{CryChange, CryReading};
use crate::cry_pictures::LatestPicture;
use crate::settings::Settings;

/// The quietest level reported, in dBFS: below this is silence (and a 16-bit microphone's
/// noise floor is about -96 dBFS), so `-inf` is never sent.
pub const LEVEL_FLOOR_DBFS: f32 = -100.0;

/// How often the cry score and sound level may change in Home Assistant.
#[derive(Debug, Clone)]
pub struct Rates {
    /// At most one score and one level message per camera in this time.
    pub interval: Duration,
    /// A score change smaller than this (percentage points) is not sent.
    pub score_dead_band: f32,
    /// A level change smaller than this (dB) is not sent.
    pub level_dead_band: f32,
}

impl Default for Rates {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            score_dead_band: 5.0,
            level_dead_band: 3.0,
        }
    }
}

/// One camera's detector and connection states, on their way to the broker.
pub(super) struct CameraStates {
    pub name: String,
    online: watch::Receiver<bool>,
    cry: watch::Receiver<CryReading>,
    last_cry: LatestPicture,
    /// When the picture last written was taken, so it is encoded once per cry.
    last_cry_written: Option<SystemTime>,
    score: Throttle,
    level: Throttle,
    /// The crying state last written, to send score and level at once when it flips.
    crying: Option<bool>,
}

impl CameraStates {
    pub fn new(feed: &CameraFeed, rates: &Rates) -> Self {
        Self {
            name: feed.name.clone(),
            online: feed.online.clone(),
            cry: feed.cry.clone(),
            last_cry: feed.last_cry.clone(),
            last_cry_written: None,
            score: Throttle::new(rates.interval, rates.score_dead_band),
            level: Throttle::new(rates.interval, rates.level_dead_band),
            crying: None,
        }
    }

    /// Writes the latest readings into `outbox`.
    pub fn update(&mut self, now: Instant, outbox: &mut Outbox) {
        self.write_last_cry(outbox);
        let online = *self.online.borrow();
        let reading = *self.cry.borrow();
        outbox.set(&state_topic(&self.name, Entity::Online), on_off(online));
        let flipped = self.crying != Some(reading.crying);
        self.crying = Some(reading.crying);
        outbox.set(
            &state_topic(&self.name, Entity::Crying),
            on_off(reading.crying),
        );
        if reading.at == SystemTime::UNIX_EPOCH {
            // No reading yet: Home Assistant shows "unknown", not a stale value of a past run.
            outbox.set(&state_topic(&self.name, Entity::CryScore), NO_VALUE);
            outbox.set(&state_topic(&self.name, Entity::SoundLevel), NO_VALUE);
            return;
        }
        let score = score_percent(reading.score);
        let level = level_dbfs(reading.level_dbfs);
        let (score, level) = if flipped {
            (self.score.force(score, now), self.level.force(level, now))
        } else {
            (self.score.offer(score, now), self.level.offer(level, now))
        };
        self.write_measurements(score, level, outbox);
    }

    /// The last cry's picture, base64 (the image entity's `image_encoding: b64`).
    fn write_last_cry(&mut self, outbox: &mut Outbox) {
        use base64::Engine;
        let picture = self.last_cry.borrow();
        let Some(picture) = picture.as_ref() else {
            return;
        };
        if self.last_cry_written == Some(picture.at) {
            return;
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(&picture.jpeg);
        outbox.set(&state_topic(&self.name, Entity::LastCry), encoded);
        self.last_cry_written = Some(picture.at);
    }

    /// Writes the score and level changes whose interval is up.
    pub fn update_due(&mut self, now: Instant, outbox: &mut Outbox) {
        let score = self.score.due(now);
        let level = self.level.due(now);
        self.write_measurements(score, level, outbox);
    }

    /// When [`CameraStates::update_due`] has something to write.
    pub fn deadline(&self) -> Option<Instant> {
        [self.score.deadline(), self.level.deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    fn write_measurements(&self, score: Option<f32>, level: Option<f32>, outbox: &mut Outbox) {
        if let Some(score) = score {
            outbox.set(
                &state_topic(&self.name, Entity::CryScore),
                number_payload(score),
            );
        }
        if let Some(level) = level {
            outbox.set(
                &state_topic(&self.name, Entity::SoundLevel),
                number_payload(level),
            );
        }
    }
}

/// The window of the "cries" and "crying time" sensors.
pub const TOTALS_WINDOW: Duration = Duration::from_secs(12 * 60 * 60);

/// Writes `camera`'s "last 12 h" sensors; `None` (no detection) shows them as unknown.
pub(super) fn write_totals(camera: &str, totals: Option<CryTotals>, outbox: &mut Outbox) {
    let (count, minutes) = match totals {
        Some(t) => (
            t.episodes.to_string(),
            number_payload(t.crying_ms as f32 / 60_000.0),
        ),
        None => (NO_VALUE.to_string(), NO_VALUE.to_string()),
    };
    outbox.set(&state_topic(camera, Entity::CriesLast12h), count);
    outbox.set(&state_topic(camera, Entity::CryingTimeLast12h), minutes);
}

/// The cry event entity's message for `change`: `event_type` and, as attributes, the
/// episode's `duration` (whole seconds, 0 at its start), `peak_score` (%, so far) and `clip`
/// (its first clip, relative to the clips folder, or null while none is listed).
pub fn cry_event_payload(change: &CryChange, clip: Option<&str>) -> String {
    let (event_type, duration, peak) = match *change {
        CryChange::Started { score, .. } => (CRY_STARTED, 0, score),
        CryChange::Ended {
            started_at,
            ended_at,
            peak_score,
        } => {
            let lasted = ended_at.duration_since(started_at).unwrap_or_default();
            (CRY_ENDED, lasted.as_secs_f64().round() as u64, peak_score)
        }
    };
    serde_json::json!({
        "event_type": event_type,
        "duration": duration,
        "peak_score": score_percent(peak) as u32,
        "clip": clip,
    })
    .to_string()
}

/// Writes the switch and number states of `camera` from the settings store.
pub(super) fn write_settings(camera: &str, settings: &Settings, outbox: &mut Outbox) {
    let Some(current) = settings.camera(camera) else {
        return;
    };
    outbox.set(
        &state_topic(camera, Entity::Detection),
        on_off(current.detection),
    );
    outbox.set(
        &state_topic(camera, Entity::Sensitivity),
        number_payload(sensitivity_from_threshold(current.cry_threshold)),
    );
}

/// The cry sensitivity shown in Home Assistant (0–100 %) for a cry threshold (0–1): the lower
/// the threshold, the more easily a sound counts as a cry. Sensitivity 50 % is threshold 0.5.
pub fn sensitivity_from_threshold(threshold: f32) -> f32 {
    (((1.0 - threshold) * 100.0).clamp(0.0, 100.0) * 10.0).round() / 10.0
}

/// The inverse of [`sensitivity_from_threshold`]; `None` outside 0–100.
pub fn threshold_from_sensitivity(sensitivity: f32) -> Option<f32> {
    (0.0..=100.0)
        .contains(&sensitivity)
        .then(|| ((1.0 - sensitivity / 100.0) * 1000.0).round() / 1000.0)
}

/// A number as a state payload: no trailing `.0`, at most one decimal.
pub fn number_payload(value: f32) -> String {
    // `+ 0.0` turns -0 into 0.
    let rounded = (value * 10.0).round() / 10.0 + 0.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded:.1}")
    }
}

fn on_off(on: bool) -> &'static str {
    if on { ON } else { OFF }
}

/// A 0–1 score as a whole percentage.
fn score_percent(score: f32) -> f32 {
    if score.is_nan() {
        return 0.0;
    }
    (score.clamp(0.0, 1.0) * 100.0).round()
}

/// A level in dBFS to a tenth of a dB, never below [`LEVEL_FLOOR_DBFS`] nor above 0.
fn level_dbfs(level: f32) -> f32 {
    if level.is_nan() {
        return LEVEL_FLOOR_DBFS;
    }
    (level.clamp(LEVEL_FLOOR_DBFS, 0.0) * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Feeds {
        online: watch::Sender<bool>,
        cry: watch::Sender<CryReading>,
        states: CameraStates,
        outbox: Outbox,
    }

    fn feeds() -> Feeds {
        let (online, online_rx) = watch::channel(false);
        let (cry, cry_rx) = watch::channel(CryReading::default());
        let feed = CameraFeed {
            name: "nursery".into(),
            online: online_rx,
            cry: cry_rx,
            last_cry: watch::channel(None).1,
        };
        Feeds {
            online,
            cry,
            states: CameraStates::new(&feed, &Rates::default()),
            outbox: Outbox::new(),
        }
    }

    fn reading(crying: bool, score: f32, level: f32) -> CryReading {
        CryReading {
            crying,
            score,
            level_dbfs: level,
            at: SystemTime::now(),
        }
    }

    impl Feeds {
        fn get(&self, entity: Entity) -> &str {
            self.outbox
                .get(&state_topic("nursery", entity))
                .unwrap_or("-")
        }
    }

    #[test]
    fn no_reading_yet_is_unknown_not_zero() {
        let mut f = feeds();
        f.states.update(Instant::now(), &mut f.outbox);
        assert_eq!(f.get(Entity::Crying), "OFF");
        assert_eq!(f.get(Entity::Online), "OFF");
        assert_eq!(f.get(Entity::CryScore), "None");
        assert_eq!(f.get(Entity::SoundLevel), "None");
    }

    #[test]
    fn crying_goes_at_once_with_its_score_and_level() {
        let mut f = feeds();
        let t0 = Instant::now();
        f.online.send_replace(true);
        f.cry.send_replace(reading(false, 0.02, f32::NEG_INFINITY));
        f.states.update(t0, &mut f.outbox);
        assert_eq!(f.get(Entity::SoundLevel), "-100");
        assert_eq!(f.get(Entity::Online), "ON");
        // A louder sound 1 s later waits for the interval …
        f.cry.send_replace(reading(false, 0.3, -30.0));
        f.states.update(t0 + Duration::from_secs(1), &mut f.outbox);
        assert_eq!(f.get(Entity::CryScore), "2");
        // … but the cry's onset does not.
        f.cry.send_replace(reading(true, 0.91, -20.04));
        f.states.update(t0 + Duration::from_secs(2), &mut f.outbox);
        assert_eq!(f.get(Entity::Crying), "ON");
        assert_eq!(f.get(Entity::CryScore), "91");
        assert_eq!(f.get(Entity::SoundLevel), "-20");
        // A later change comes out when its interval is up.
        f.cry.send_replace(reading(true, 0.5, -20.0));
        f.states.update(t0 + Duration::from_secs(3), &mut f.outbox);
        assert_eq!(f.get(Entity::CryScore), "91");
        let due = f.states.deadline().unwrap();
        assert_eq!(due, t0 + Duration::from_secs(7));
        f.states.update_due(due, &mut f.outbox);
        assert_eq!(f.get(Entity::CryScore), "50");
    }

    #[test]
    fn odd_values_are_tamed() {
        assert_eq!(score_percent(f32::NAN), 0.0);
        assert_eq!(score_percent(1.7), 100.0);
        assert_eq!(level_dbfs(f32::NAN), LEVEL_FLOOR_DBFS);
        assert_eq!(level_dbfs(3.0), 0.0);
        assert_eq!(level_dbfs(-37.46), -37.5);
    }

    #[test]
    fn sensitivity_is_the_threshold_turned_around() {
        assert_eq!(sensitivity_from_threshold(0.5), 50.0);
        assert_eq!(sensitivity_from_threshold(0.55), 45.0);
        assert_eq!(sensitivity_from_threshold(0.0), 100.0);
        assert_eq!(threshold_from_sensitivity(30.0), Some(0.7));
        assert_eq!(threshold_from_sensitivity(100.0), Some(0.0));
        assert_eq!(threshold_from_sensitivity(101.0), None);
        assert_eq!(threshold_from_sensitivity(-1.0), None);
        assert_eq!(threshold_from_sensitivity(f32::NAN), None);
    }

    #[test]
    fn cry_events_carry_the_episode() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let started: serde_json::Value = serde_json::from_str(&cry_event_payload(
            &CryChange::Started {
                at: t0,
                score: 0.912,
            },
            None,
        ))
        .unwrap();
        assert_eq!(
            started,
            serde_json::json!({"event_type": "cry_started", "duration": 0, "peak_score": 91, "clip": null})
        );
        let ended: serde_json::Value = serde_json::from_str(&cry_event_payload(
            &CryChange::Ended {
                started_at: t0,
                ended_at: t0 + Duration::from_millis(65_600),
                peak_score: 0.99,
            },
            Some("nursery/2023-11-14/22-13-20.mp4"),
        ))
        .unwrap();
        assert_eq!(
            ended,
            serde_json::json!({"event_type": "cry_ended", "duration": 66, "peak_score": 99, "clip": "nursery/2023-11-14/22-13-20.mp4"})
        );
    }

    #[test]
    fn totals_are_a_count_and_minutes() {
        let mut outbox = Outbox::new();
        write_totals("nursery", None, &mut outbox);
        assert_eq!(outbox.get("vigil/nursery/cries_12h"), Some("None"));
        assert_eq!(outbox.get("vigil/nursery/crying_time_12h"), Some("None"));
        let totals = CryTotals {
            episodes: 3,
            crying_ms: 95_000,
        };
        write_totals("nursery", Some(totals), &mut outbox);
        assert_eq!(outbox.get("vigil/nursery/cries_12h"), Some("3"));
        assert_eq!(outbox.get("vigil/nursery/crying_time_12h"), Some("1.6"));
    }

    #[test]
    fn numbers_print_short() {
        assert_eq!(number_payload(45.0), "45");
        assert_eq!(number_payload(-37.46), "-37.5");
        assert_eq!(number_payload(0.04), "0");
    }
}
