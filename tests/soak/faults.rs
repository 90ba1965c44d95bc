//! The soak's cameras and what is done to them: each is a fake camera with a player connected
//! to its restream for the whole run, and every fault ends with the time from the camera being
//! back to the first new frame at that player.

use std::time::{Duration, Instant};

use super::common::fake_camera::FakeCamera;
use super::common::rtsp_client::{ClientOptions, RtspClient};
use super::record::{GARBAGE, Record};

/// How long a stream may take to come back before it counts as not back at all.
const GIVE_UP: Duration = Duration::from_secs(30);
/// How long a camera streams between two faults: longer than the backoff's `HEALTHY_AFTER`
/// (10 s), so each fault starts a fresh outage, as a camera's reboot at night does. (Faults
/// closer together are one long outage to the backoff, retried ever more slowly by design.)
const HEALTHY_BETWEEN_FAULTS: Duration = Duration::from_secs(11);

pub struct SoakCamera {
    pub name: &'static str,
    audio: &'static str,
    /// 960×540 after an odd number of reboots, else 640×360.
    wide: bool,
    pub camera: FakeCamera,
    restream: String,
    /// Connected to the restream from start to end (replaced only if Vigil closes it).
    pub resident: RtspClient,
    /// Resident players so far.
    players: u32,
    /// When the camera last came back (or the soak took it over).
    back_since: Instant,
}

/// The fake camera's options at a size.
fn camera_args(audio: &str, wide: bool) -> Vec<String> {
    let (width, height) = size(wide);
    ["--audio", audio, "--gop", "15"]
        .iter()
        .map(|a| a.to_string())
        .chain([
            "--width".into(),
            width.to_string(),
            "--height".into(),
            height.to_string(),
        ])
        .collect()
}

fn size(wide: bool) -> (u32, u32) {
    if wide { (960, 540) } else { (640, 360) }
}

/// Starts a camera sending `audio` (before Vigil, which is given its URL).
pub fn start_camera(audio: &str) -> FakeCamera {
    let args = camera_args(audio, false);
    FakeCamera::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

impl SoakCamera {
    /// Takes over `camera` (from [`start_camera`]) and connects the resident player to its
    /// restream once Vigil serves it.
    pub fn new(
        name: &'static str,
        audio: &'static str,
        camera: FakeCamera,
        restream: String,
    ) -> Self {
        let resident = player(&restream);
        resident.wait("first frames", Duration::from_secs(30), |c| {
            c.decoded().len() > 5
        });
        Self {
            name,
            audio,
            wide: false,
            camera,
            restream,
            resident,
            players: 1,
            back_since: Instant::now(),
        }
    }

    pub fn size(&self) -> (u32, u32) {
        size(self.wide)
    }

    fn serve(&mut self) {
        let args = camera_args(self.audio, self.wide);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.camera.restart_with(&args);
    }

    /// Takes the camera `down` (or nothing, when it is down already), lets frames in flight
    /// arrive, brings it `up`, and records how soon a new frame reached the resident player
    /// after the camera was back.
    fn recover(
        &mut self,
        record: &mut Record,
        kind: &'static str,
        down: impl FnOnce(&mut Self),
        up: impl FnOnce(&mut Self),
    ) {
        record.fault(kind);
        down(self);
        std::thread::sleep(Duration::from_millis(300));
        let before = self.resident.au_count();
        up(self);
        let back = Instant::now();
        let deadline = back + GIVE_UP;
        let (mut before, mut reconnected) = (before, false);
        while self.resident.au_count() <= before && Instant::now() < deadline {
            // A player whose connection Vigil closed (the camera's tracks changed) reconnects,
            // as a real one does; the time to its first frame still counts. One left open
            // waits, as a real one does.
            if self.resident.closed() && !reconnected {
                record.log(&format!(
                    "{}: closed by Vigil {} ms after the camera; the player reconnects (error: {:?})",
                    self.name,
                    back.elapsed().as_millis(),
                    self.resident.error()
                ));
                record.reconnected_players += 1;
                self.reconnect_player();
                (before, reconnected) = (0, true);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = self
            .resident
            .aus()
            .get(before)
            .map(|au| au.at.saturating_duration_since(back));
        record.recovered(kind, self.name, took);
        self.back_since = Instant::now();
        if took.is_none() {
            self.reconnect_player();
        }
    }

    /// Waits until the camera has streamed [`HEALTHY_BETWEEN_FAULTS`] since it came back.
    fn settle(&self) {
        std::thread::sleep(HEALTHY_BETWEEN_FAULTS.saturating_sub(self.back_since.elapsed()));
    }

    fn reconnect_player(&mut self) {
        self.resident = player(&self.restream);
        self.players += 1;
    }

    /// The camera loses power; [`SoakCamera::power_on`] ends the outage.
    pub fn power_off(&mut self) {
        self.settle();
        self.camera.stop();
    }

    pub fn power_on(&mut self, record: &mut Record) {
        self.recover(record, "stopped 10 s", |_| {}, Self::serve);
    }

    /// Frozen (SIGSTOP) for `long`: the socket stays open, nothing comes.
    pub fn stall(&mut self, record: &mut Record, long: Duration) {
        self.settle();
        self.recover(
            record,
            "stalled (SIGSTOP)",
            |cam| {
                cam.camera.pause();
                std::thread::sleep(long);
            },
            |cam| cam.camera.resume(),
        );
    }

    /// Reboots at the other resolution (new SPS/PPS); then a new player must see the new size
    /// and the resident one must decode on.
    pub fn reboot_resized(&mut self, record: &mut Record) {
        self.settle();
        self.wide = !self.wide;
        let (decoded, players) = (self.resident.decoded().len(), self.players);
        self.recover(
            record,
            "rebooted at a new resolution",
            |cam| cam.camera.stop(),
            Self::serve,
        );
        let (width, _) = self.size();
        let fresh = RtspClient::start(&self.restream, ClientOptions::default());
        let deadline = Instant::now() + Duration::from_secs(20);
        while fresh.video_caps().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let seen = fresh
            .video_caps()
            .and_then(|caps| caps.structure(0)?.get::<i32>("width").ok());
        if seen != Some(width as i32) {
            record.fail(format!(
                "{}: a new player after the reboot sees width {seen:?}, the camera sends {width}",
                self.name
            ));
        }
        // A player that connected again decodes from its own start.
        let decoded = if self.players == players { decoded } else { 0 };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.resident.decoded().len() < decoded + 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.resident.decoded().len() < decoded + 10 {
            record.fail(format!(
                "{}: the connected player decodes nothing after the camera changed resolution",
                self.name
            ));
        }
    }

    /// Replaced by a server that answers with random bytes for `long`, then the camera again.
    pub fn garbage(&mut self, record: &mut Record, long: Duration) {
        self.settle();
        self.recover(
            record,
            GARBAGE,
            |cam| {
                cam.camera.restart_with(&["--garbage"]);
                std::thread::sleep(long);
            },
            Self::serve,
        );
    }

    /// The longest time between two frames at the resident player since `since`.
    pub fn longest_gap_since(&self, since: Instant) -> Duration {
        let times: Vec<Instant> = self
            .resident
            .aus()
            .iter()
            .map(|au| au.at)
            .filter(|at| *at >= since)
            .collect();
        let mut longest = times
            .first()
            .map_or(since.elapsed(), |first| first.duration_since(since));
        for pair in times.windows(2) {
            longest = longest.max(pair[1] - pair[0]);
        }
        longest.max(times.last().map_or(Duration::ZERO, Instant::elapsed))
    }
}

/// A player that decodes, so that "frames" means pictures.
fn player(url: &str) -> RtspClient {
    RtspClient::start(
        url,
        ClientOptions {
            decode: true,
            ..ClientOptions::default()
        },
    )
}
