//! The fan-out at the heart of a camera: frames from the ingest pipeline go to every consumer
//! (RTSP clients, WebRTC and MSE viewers, snapshots) without a copy, and a new consumer starts
//! from the cached keyframe so its first frame is there at once.
//!
//! The hub owns the GOP cache and a monotonic timeline that survives reconnects; it never
//! blocks the camera: a consumer whose queue is full skips to the next keyframe, and one that
//! stays behind is dropped. It knows nothing of RTSP, WebRTC or MP4, and does no I/O.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

/// Which track a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    Video,
    Audio,
}

/// One access unit as the camera sent it: an H.264/H.265 AU in byte-stream form (SPS/PPS or
/// VPS/SPS/PPS in front of every keyframe) or one encoded audio frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub track: Track,
    /// Shared with every consumer; never written to (make a copy to change metadata).
    pub buffer: gst::Buffer,
    /// Position on the camera's timeline: monotonic per track, across reconnects.
    pub pts: Duration,
    /// A video keyframe (for audio: always true, every frame decodes on its own).
    pub keyframe: bool,
    /// True for frames replayed from the GOP cache to a new consumer, false for live ones.
    pub cached: bool,
}

/// The formats of a camera's tracks in the current ingest session.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// `video/x-h264` or `video/x-h265`, `stream-format=byte-stream, alignment=au`, with width,
    /// height, framerate, profile and level as the parser found them.
    pub video: Option<gst::Caps>,
    /// The camera's audio as it sends it (`audio/mpeg` AAC, `audio/x-alaw`, `audio/x-mulaw`,
    /// `audio/x-opus`), or `None` for a camera without audio.
    pub audio: Option<gst::Caps>,
}

/// What a consumer receives, in order.
#[derive(Debug, Clone)]
pub enum MediaEvent {
    /// The formats changed (first event of every subscription, and after a camera came back
    /// with other parameters): rebuild what depends on them.
    Info(Arc<StreamInfo>),
    Frame(Frame),
}

/// Who consumes; counted in the camera's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsumerKind {
    Rtsp,
    WebRtc,
    Mse,
    Mp4,
    Snapshot,
    /// A shared per-camera transcoder (Opus audio for WebRTC), not a viewer itself.
    Transcoder,
    /// The camera's cry-clip recorder (its pre-roll buffer), not a viewer either.
    Recorder,
}

/// Limits that keep one camera's memory and one slow consumer in check.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Frames a consumer may have queued beyond the cached GOP before it starts skipping.
    pub queue_frames: usize,
    /// How long a consumer may keep skipping (not keeping up) before it is dropped.
    pub slow_consumer_timeout: Duration,
    /// A GOP longer than this many frames is not cached (new consumers wait for a keyframe).
    pub max_gop_frames: usize,
    /// A GOP larger than this many bytes is not cached either.
    pub max_gop_bytes: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            queue_frames: 256,
            slow_consumer_timeout: Duration::from_secs(5),
            max_gop_frames: 600,
            max_gop_bytes: 24 * 1024 * 1024,
        }
    }
}

/// The fan-out of one camera. Shared behind an `Arc`; all methods take `&self`.
pub struct Hub {
    inner: Mutex<Inner>,
    limits: HubLimits,
    started: Instant,
}

struct Inner {
    info: Option<Arc<StreamInfo>>,
    gop: Gop,
    consumers: Vec<Slot>,
    next_id: u64,
    timeline: Timeline,
}

struct Slot {
    id: u64,
    kind: ConsumerKind,
    tx: Outlet,
    /// Set when the queue was full: frames are skipped until the next keyframe.
    skipping_since: Option<Instant>,
    dropped_frames: u64,
    /// What was handed over, for the API.
    delivered_frames: u64,
    delivered_bytes: u64,
    started: SystemTime,
    /// Who consumes (such as `rtsp+tcp 192.168.1.30:50123`), as the consumer said.
    peer: Option<Arc<str>>,
}

/// Where a consumer's events go: a channel its task reads, or a [`DirectConsumer`] called on
/// the camera's thread.
enum Outlet {
    Channel(mpsc::Sender<MediaEvent>),
    Direct(Box<dyn DirectConsumer>),
}

/// What a [`DirectConsumer`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    Taken,
    /// It is behind: the hub skips to the next keyframe, and drops it if that goes on.
    Full,
    /// It has ended: the hub drops it.
    Gone,
}

/// A consumer the hub hands events to on the camera's own thread, under the hub's lock,
/// instead of through a channel and a task: one thread hop fewer per frame (a viewer's
/// appsrc). It must return at once and never call back into the hub.
pub trait DirectConsumer: Send {
    fn offer(&mut self, event: &MediaEvent) -> Offered;
    /// Room for more (a skipping consumer gets a grace period while it drains).
    fn has_room(&self) -> bool;
}

impl Outlet {
    fn is_closed(&self) -> bool {
        match self {
            Outlet::Channel(tx) => tx.is_closed(),
            Outlet::Direct(_) => false,
        }
    }

    fn has_room(&self, limits: HubLimits) -> bool {
        match self {
            Outlet::Channel(tx) => tx.capacity() > limits.queue_frames / 2,
            Outlet::Direct(consumer) => consumer.has_room(),
        }
    }

    fn offer(&mut self, event: &MediaEvent) -> Offered {
        match self {
            Outlet::Channel(tx) => match tx.try_send(event.clone()) {
                Ok(()) => Offered::Taken,
                Err(mpsc::error::TrySendError::Full(_)) => Offered::Full,
                Err(mpsc::error::TrySendError::Closed(_)) => Offered::Gone,
            },
            Outlet::Direct(consumer) => consumer.offer(event),
        }
    }
}

/// One consumer as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerInfo {
    pub kind: ConsumerKind,
    /// Who consumes, if the consumer said (see [`Subscription::set_peer`]).
    pub peer: Option<String>,
    pub since: SystemTime,
    /// Frames and bytes handed to it, and frames it missed for being behind.
    pub frames: u64,
    pub bytes: u64,
    pub dropped_frames: u64,
}

/// The cached group of pictures: the last keyframe and the video frames after it.
#[derive(Default)]
struct Gop {
    frames: Vec<Frame>,
    bytes: usize,
    /// The GOP outgrew the limits: nothing cached until the next keyframe.
    overflowed: bool,
    last_keyframe: Option<Frame>,
}

/// Maps each ingest session's own timestamps onto the camera's monotonic timeline.
#[derive(Default)]
struct Timeline {
    /// Added to a session's timestamps; set by the session's first frame.
    offset: Option<i128>,
    last_video: Option<Duration>,
    last_audio: Option<Duration>,
}

impl Hub {
    pub fn new(limits: HubLimits) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                info: None,
                gop: Gop::default(),
                consumers: Vec::new(),
                next_id: 0,
                timeline: Timeline::default(),
            }),
            limits,
            started: Instant::now(),
        })
    }

    /// A new ingest session begins (camera connected or reconnected): its timestamps start
    /// afresh, the cached GOP belongs to the old session and is dropped.
    pub fn begin_session(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.timeline.offset = None;
        inner.gop = Gop {
            last_keyframe: inner.gop.last_keyframe.take(),
            ..Gop::default()
        };
    }

    /// The session's formats. Consumers are told only when they differ from the last ones.
    pub fn set_info(&self, info: StreamInfo) {
        let mut inner = self.inner.lock().unwrap();
        if inner.info.as_deref() == Some(&info) {
            return;
        }
        let same_video = inner
            .info
            .as_ref()
            .is_some_and(|old| old.video == info.video);
        let info = Arc::new(info);
        inner.info = Some(info.clone());
        // With other video, the cached GOP starts again at the next keyframe; with the same
        // (only the audio came or went) it still starts every new consumer at once.
        if !same_video {
            inner.gop = Gop::default();
        }
        let event = MediaEvent::Info(info);
        let limits = self.limits;
        inner
            .consumers
            .retain_mut(|slot| deliver(slot, &event, true, limits));
    }

    /// The current formats, if a session has negotiated them.
    pub fn info(&self) -> Option<Arc<StreamInfo>> {
        self.inner.lock().unwrap().info.clone()
    }

    /// Takes one frame from the ingest pipeline, with the session's own timestamp, and hands it
    /// to every consumer. Called on a GStreamer streaming thread: never blocks.
    pub fn push(&self, track: Track, buffer: gst::Buffer, session_pts: Duration, keyframe: bool) {
        let now = self.started.elapsed();
        let mut inner = self.inner.lock().unwrap();
        let pts = inner.timeline.map(track, session_pts, now);
        let keyframe = keyframe || track == Track::Audio;
        let frame = Frame {
            track,
            buffer,
            pts,
            keyframe,
            cached: false,
        };
        if track == Track::Video {
            inner.gop.add(&frame, &self.limits);
        }
        let event = MediaEvent::Frame(frame);
        let limits = self.limits;
        inner
            .consumers
            .retain_mut(|slot| deliver(slot, &event, keyframe, limits));
    }

    /// Starts a consumer: it receives the formats, then the cached GOP (frames marked `cached`),
    /// then live frames. Dropping the subscription ends it.
    pub fn subscribe(self: &Arc<Self>, kind: ConsumerKind) -> Subscription {
        let mut inner = self.inner.lock().unwrap();
        let cached: Vec<Frame> = if inner.gop.overflowed {
            Vec::new()
        } else {
            inner.gop.frames.clone()
        };
        let (tx, rx) = mpsc::channel(cached.len() + 1 + self.limits.queue_frames);
        if let Some(info) = &inner.info {
            let _ = tx.try_send(MediaEvent::Info(info.clone()));
        }
        let waiting_for_keyframe = cached.is_empty();
        let cached_frames = cached.len() as u64;
        let cached_bytes: u64 = cached.iter().map(|f| f.buffer.size() as u64).sum();
        for mut frame in cached {
            frame.cached = true;
            let _ = tx.try_send(MediaEvent::Frame(frame));
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.consumers.push(Slot {
            id,
            kind,
            tx: Outlet::Channel(tx),
            // With nothing cached, live frames before the next keyframe are of no use.
            skipping_since: waiting_for_keyframe.then(Instant::now),
            dropped_frames: 0,
            delivered_frames: cached_frames,
            delivered_bytes: cached_bytes,
            started: SystemTime::now(),
            peer: None,
        });
        Subscription {
            rx,
            id,
            hub: Arc::downgrade(self),
        }
    }

    /// Starts a consumer called on the camera's thread: like [`Hub::subscribe`] (the formats,
    /// then the cached GOP, then live frames), handed over before this returns for what is
    /// cached. Dropping the returned [`DirectSubscription`] ends it.
    pub fn subscribe_direct(
        self: &Arc<Self>,
        kind: ConsumerKind,
        mut consumer: Box<dyn DirectConsumer>,
    ) -> DirectSubscription {
        let mut inner = self.inner.lock().unwrap();
        let mut delivered_frames = 0;
        let mut delivered_bytes = 0;
        if let Some(info) = &inner.info {
            consumer.offer(&MediaEvent::Info(info.clone()));
        }
        let cached = if inner.gop.overflowed {
            &[][..]
        } else {
            &inner.gop.frames[..]
        };
        for frame in cached {
            let mut frame = frame.clone();
            frame.cached = true;
            delivered_bytes += frame.buffer.size() as u64;
            delivered_frames += 1;
            consumer.offer(&MediaEvent::Frame(frame));
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.consumers.push(Slot {
            id,
            kind,
            tx: Outlet::Direct(consumer),
            skipping_since: (delivered_frames == 0).then(Instant::now),
            dropped_frames: 0,
            delivered_frames,
            delivered_bytes,
            started: SystemTime::now(),
            peer: None,
        });
        DirectSubscription {
            id,
            hub: Arc::downgrade(self),
        }
    }

    /// The last keyframe seen (with its formats), for snapshots: it decodes on its own.
    pub fn last_keyframe(&self) -> Option<(Arc<StreamInfo>, Frame)> {
        let inner = self.inner.lock().unwrap();
        Some((inner.info.clone()?, inner.gop.last_keyframe.clone()?))
    }

    /// How many consumers of `kind` are connected.
    pub fn consumer_count(&self, kind: ConsumerKind) -> usize {
        let inner = self.inner.lock().unwrap();
        inner.consumers.iter().filter(|s| s.kind == kind).count()
    }

    /// Every consumer's kind, for the camera's status.
    pub fn consumers(&self) -> Vec<ConsumerKind> {
        let inner = self.inner.lock().unwrap();
        inner.consumers.iter().map(|s| s.kind).collect()
    }

    /// Every consumer with what it received so far.
    pub fn consumer_infos(&self) -> Vec<ConsumerInfo> {
        let inner = self.inner.lock().unwrap();
        inner
            .consumers
            .iter()
            .map(|s| ConsumerInfo {
                kind: s.kind,
                peer: s.peer.as_deref().map(str::to_string),
                since: s.started,
                frames: s.delivered_frames,
                bytes: s.delivered_bytes,
                dropped_frames: s.dropped_frames,
            })
            .collect()
    }

    fn set_peer(&self, id: u64, peer: Arc<str>) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(slot) = inner.consumers.iter_mut().find(|s| s.id == id) {
            slot.peer = Some(peer);
        }
    }

    fn unsubscribe(&self, id: u64) {
        let mut inner = self.inner.lock().unwrap();
        inner.consumers.retain(|s| s.id != id);
    }
}

/// Hands `event` to one consumer; returns false when the consumer must be dropped (gone, or
/// too slow for too long).
fn deliver(slot: &mut Slot, event: &MediaEvent, keyframe: bool, limits: HubLimits) -> bool {
    if slot.tx.is_closed() {
        return false;
    }
    let is_info = matches!(event, MediaEvent::Info(_));
    if let Some(since) = slot.skipping_since {
        let video_keyframe =
            matches!(event, MediaEvent::Frame(f) if f.track == Track::Video && keyframe);
        if !(video_keyframe || is_info) {
            slot.dropped_frames += 1;
            return since.elapsed() < limits.slow_consumer_timeout || slot.tx.has_room(limits);
        }
    }
    match slot.tx.offer(event) {
        Offered::Taken => {
            if let MediaEvent::Frame(frame) = event {
                slot.skipping_since = None;
                slot.delivered_frames += 1;
                slot.delivered_bytes += frame.buffer.size() as u64;
            }
            true
        }
        Offered::Full => {
            slot.dropped_frames += 1;
            let since = *slot.skipping_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= limits.slow_consumer_timeout {
                tracing::debug!(
                    kind = ?slot.kind,
                    dropped = slot.dropped_frames,
                    "consumer too slow for {:?}: dropped",
                    limits.slow_consumer_timeout
                );
                return false;
            }
            true
        }
        Offered::Gone => false,
    }
}

impl Gop {
    fn add(&mut self, frame: &Frame, limits: &HubLimits) {
        if frame.keyframe {
            self.frames.clear();
            self.bytes = 0;
            self.overflowed = false;
            self.last_keyframe = Some(frame.clone());
        } else if self.frames.is_empty() || self.overflowed {
            // No keyframe yet in this session, or the GOP is too long to cache.
            return;
        }
        self.bytes += frame.buffer.size();
        self.frames.push(frame.clone());
        if self.frames.len() > limits.max_gop_frames || self.bytes > limits.max_gop_bytes {
            self.frames.clear();
            self.bytes = 0;
            self.overflowed = true;
        }
    }
}

impl Timeline {
    /// The camera-timeline position of a frame with session timestamp `pts`, arriving at `now`
    /// (time since the hub started). A new session is placed at the current wall time, so an
    /// outage shows as a gap; each track stays strictly monotonic.
    fn map(&mut self, track: Track, pts: Duration, now: Duration) -> Duration {
        let offset = *self
            .offset
            .get_or_insert_with(|| now.as_nanos() as i128 - pts.as_nanos() as i128);
        let mapped = (pts.as_nanos() as i128 + offset).max(0);
        let mut mapped = Duration::from_nanos(u64::try_from(mapped).unwrap_or(u64::MAX));
        let last = match track {
            Track::Video => &mut self.last_video,
            Track::Audio => &mut self.last_audio,
        };
        if let Some(last) = *last
            && mapped <= last
        {
            mapped = last + Duration::from_micros(1);
        }
        *last = Some(mapped);
        mapped
    }
}

/// A consumer's end of the hub. Dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::Receiver<MediaEvent>,
    id: u64,
    hub: Weak<Hub>,
}

impl Subscription {
    /// The next event; `None` when the consumer was dropped for being too slow, or the camera
    /// is gone.
    pub async fn recv(&mut self) -> Option<MediaEvent> {
        self.rx.recv().await
    }

    /// The next event, blocking the thread (for GStreamer callbacks; never on the runtime).
    pub fn blocking_recv(&mut self) -> Option<MediaEvent> {
        self.rx.blocking_recv()
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Result<MediaEvent, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }
}

impl Subscription {
    /// Says who consumes (such as `rtsp+tcp 192.168.1.30:50123`), for the API; no secrets.
    pub fn set_peer(&self, peer: impl Into<String>) {
        if let Some(hub) = self.hub.upgrade() {
            hub.set_peer(self.id, peer.into().into());
        }
    }
}

/// A [`DirectConsumer`]'s registration. Dropping it ends the consumer (the hub drops it).
pub struct DirectSubscription {
    id: u64,
    hub: Weak<Hub>,
}

impl Drop for DirectSubscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.unsubscribe(self.id);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.unsubscribe(self.id);
        }
    }
}

/// Re-times one consumer's frames so that it is live: the cached GOP is squeezed into a few
/// milliseconds (a player decodes through it at once and shows the newest picture), and live
/// frames keep the camera's spacing after it. Each consumer owns one.
#[derive(Debug, Default)]
pub struct ConsumerClock {
    /// Output time of the newest frame so far.
    last_out: Option<Duration>,
    /// Camera-timeline `pts` that maps to `anchor_out` for live frames.
    anchor: Option<(Duration, Duration)>,
    last_per_track: [Option<Duration>; 2],
}

/// The spacing of cached frames in a consumer's output.
pub const CACHED_FRAME_SPACING: Duration = Duration::from_millis(1);

impl ConsumerClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// The output timestamp (starting at zero) for `frame`.
    pub fn map(&mut self, frame: &Frame) -> Duration {
        let out = if frame.cached {
            let out = self
                .last_out
                .map_or(Duration::ZERO, |t| t + CACHED_FRAME_SPACING);
            // The newest cached frame so far anchors the live frames after it.
            self.anchor = Some((frame.pts, out));
            out
        } else {
            let (anchor_pts, anchor_out) = *self.anchor.get_or_insert((
                frame.pts,
                self.last_out
                    .map_or(Duration::ZERO, |t| t + CACHED_FRAME_SPACING),
            ));
            (anchor_out + frame.pts).saturating_sub(anchor_pts)
        };
        let index = match frame.track {
            Track::Video => 0,
            Track::Audio => 1,
        };
        let out = match self.last_per_track[index] {
            Some(last) if out <= last => last + Duration::from_micros(1),
            _ => out,
        };
        self.last_per_track[index] = Some(out);
        self.last_out = Some(self.last_out.map_or(out, |l| l.max(out)));
        out
    }

    /// Forgets the anchor: after an `Info` change the next frames start a new run.
    pub fn reset(&mut self) {
        self.anchor = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Arc<Hub> {
        let _ = gst::init();
        Hub::new(HubLimits {
            queue_frames: 8,
            slow_consumer_timeout: Duration::from_millis(200),
            max_gop_frames: 50,
            max_gop_bytes: 1 << 20,
        })
    }

    fn info() -> StreamInfo {
        StreamInfo {
            video: Some(gst::Caps::builder("video/x-h264").build()),
            audio: None,
        }
    }

    fn push_video(hub: &Hub, ms: u64, keyframe: bool) {
        hub.push(
            Track::Video,
            gst::Buffer::from_slice(vec![0u8; 100]),
            Duration::from_millis(ms),
            keyframe,
        );
    }

    fn frames(sub: &mut Subscription) -> Vec<(bool, bool)> {
        let mut out = Vec::new();
        while let Ok(ev) = sub.try_recv() {
            if let MediaEvent::Frame(f) = ev {
                out.push((f.keyframe, f.cached));
            }
        }
        out
    }

    #[test]
    fn a_new_consumer_starts_at_the_cached_keyframe() {
        let hub = hub();
        hub.set_info(info());
        push_video(&hub, 0, false); // before any keyframe: not cached
        push_video(&hub, 33, true);
        push_video(&hub, 66, false);
        push_video(&hub, 100, false);
        let mut sub = hub.subscribe(ConsumerKind::Rtsp);
        assert!(matches!(sub.try_recv(), Ok(MediaEvent::Info(_))));
        assert_eq!(
            frames(&mut sub),
            vec![(true, true), (false, true), (false, true)]
        );
        push_video(&hub, 133, false);
        assert_eq!(frames(&mut sub), vec![(false, false)]);
    }

    #[test]
    fn without_a_cache_the_consumer_waits_for_a_keyframe() {
        let hub = hub();
        hub.set_info(info());
        let mut sub = hub.subscribe(ConsumerKind::Mse);
        push_video(&hub, 0, false);
        push_video(&hub, 33, false);
        assert_eq!(frames(&mut sub), vec![]);
        push_video(&hub, 66, true);
        push_video(&hub, 100, false);
        assert_eq!(frames(&mut sub), vec![(true, false), (false, false)]);
    }

    #[test]
    fn a_full_consumer_skips_to_the_next_keyframe_and_a_stuck_one_is_dropped() {
        let hub = hub();
        hub.set_info(info());
        push_video(&hub, 0, true);
        let mut slow = hub.subscribe(ConsumerKind::Rtsp);
        let mut fast = hub.subscribe(ConsumerKind::Rtsp);
        for i in 1..30 {
            push_video(&hub, i * 33, false);
            let _ = frames(&mut fast);
        }
        // The slow one got what fit, then skipped; a keyframe lets it in again.
        let got = frames(&mut slow);
        assert!(got.len() < 29, "{}", got.len());
        push_video(&hub, 1000, true);
        assert_eq!(frames(&mut slow), vec![(true, false)]);
        assert_eq!(hub.consumer_count(ConsumerKind::Rtsp), 2);
        // Now stop reading for longer than the timeout: dropped, the other unaffected.
        for i in 0..20 {
            push_video(&hub, 1033 + i * 33, false);
            let _ = frames(&mut fast);
        }
        std::thread::sleep(Duration::from_millis(250));
        for i in 0..5 {
            push_video(&hub, 2000 + i * 33, false);
            let _ = frames(&mut fast);
        }
        assert_eq!(hub.consumer_count(ConsumerKind::Rtsp), 1);
        let mut rest = 0;
        while slow.try_recv().is_ok() {
            rest += 1;
        }
        assert!(rest > 0);
        drop(fast);
        assert_eq!(hub.consumer_count(ConsumerKind::Rtsp), 0);
    }

    #[test]
    fn a_reconnect_keeps_the_timeline_monotonic() {
        let hub = hub();
        hub.set_info(info());
        let mut sub = hub.subscribe(ConsumerKind::Rtsp);
        push_video(&hub, 5000, true);
        push_video(&hub, 5033, false);
        hub.begin_session();
        push_video(&hub, 0, true); // the new session's clock starts at zero
        let mut pts = Vec::new();
        while let Ok(ev) = sub.try_recv() {
            if let MediaEvent::Frame(f) = ev {
                pts.push(f.pts);
            }
        }
        assert_eq!(pts.len(), 3);
        assert!(pts[0] < pts[1] && pts[1] < pts[2], "{pts:?}");
        assert_eq!(pts[1] - pts[0], Duration::from_millis(33));
    }

    #[test]
    fn changed_formats_reach_consumers_and_a_new_picture_clears_the_cache() {
        let hub = hub();
        hub.set_info(info());
        push_video(&hub, 0, true);
        let mut sub = hub.subscribe(ConsumerKind::Rtsp);
        let _ = frames(&mut sub);
        hub.set_info(info()); // same: no event
        assert!(sub.try_recv().is_err());
        // Only the audio changes (it came or went): the cached GOP still starts a consumer.
        let mut other = info();
        other.audio = Some(gst::Caps::builder("audio/x-alaw").build());
        hub.set_info(other.clone());
        assert!(matches!(sub.try_recv(), Ok(MediaEvent::Info(i)) if i.audio.is_some()));
        let mut late = hub.subscribe(ConsumerKind::Rtsp);
        assert_eq!(frames(&mut late), vec![(true, true)]);
        // Another picture: nothing cached until its first keyframe.
        other.video = Some(gst::Caps::builder("video/x-h265").build());
        hub.set_info(other);
        let mut later = hub.subscribe(ConsumerKind::Rtsp);
        assert_eq!(frames(&mut later), vec![]);
    }

    #[test]
    fn consumer_infos_count_what_each_consumer_got() {
        let hub = hub();
        hub.set_info(info());
        push_video(&hub, 0, true);
        let sub = hub.subscribe(ConsumerKind::Rtsp);
        sub.set_peer("rtsp+tcp 127.0.0.1:5000");
        push_video(&hub, 33, false);
        let infos = hub.consumer_infos();
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].kind, ConsumerKind::Rtsp);
        assert_eq!(infos[0].peer.as_deref(), Some("rtsp+tcp 127.0.0.1:5000"));
        // The cached keyframe, then the live frame.
        assert_eq!((infos[0].frames, infos[0].bytes), (2, 200));
        drop(sub);
        assert!(hub.consumer_infos().is_empty());
    }

    /// A direct consumer that records what it is offered and answers as `answer` says.
    struct Recorder {
        got: Arc<Mutex<Vec<(bool, bool)>>>,
        answer: Arc<Mutex<Offered>>,
    }

    impl DirectConsumer for Recorder {
        fn offer(&mut self, event: &MediaEvent) -> Offered {
            let answer = *self.answer.lock().unwrap();
            if let (MediaEvent::Frame(f), Offered::Taken) = (event, answer) {
                self.got.lock().unwrap().push((f.keyframe, f.cached));
            }
            answer
        }

        fn has_room(&self) -> bool {
            *self.answer.lock().unwrap() == Offered::Taken
        }
    }

    #[test]
    fn a_direct_consumer_gets_the_cache_at_once_and_is_dropped_when_stuck_or_gone() {
        let hub = hub();
        hub.set_info(info());
        push_video(&hub, 0, true);
        push_video(&hub, 33, false);
        let got = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new(Offered::Taken));
        let registration = hub.subscribe_direct(
            ConsumerKind::WebRtc,
            Box::new(Recorder {
                got: got.clone(),
                answer: answer.clone(),
            }),
        );
        assert_eq!(*got.lock().unwrap(), vec![(true, true), (false, true)]);
        push_video(&hub, 66, false);
        assert_eq!(got.lock().unwrap().last(), Some(&(false, false)));
        assert_eq!(hub.consumer_infos()[0].frames, 3);

        // Behind: skipped to the next keyframe, then dropped once that lasts too long.
        *answer.lock().unwrap() = Offered::Full;
        push_video(&hub, 100, false);
        std::thread::sleep(Duration::from_millis(250));
        push_video(&hub, 133, true);
        assert_eq!(hub.consumer_count(ConsumerKind::WebRtc), 0);
        drop(registration);

        // Gone: dropped at the next event; a registration dropped first unsubscribes.
        let gone = hub.subscribe_direct(
            ConsumerKind::WebRtc,
            Box::new(Recorder {
                got: got.clone(),
                answer: Arc::new(Mutex::new(Offered::Gone)),
            }),
        );
        push_video(&hub, 166, false);
        assert_eq!(hub.consumer_count(ConsumerKind::WebRtc), 0);
        drop(gone);
        let kept = hub.subscribe_direct(
            ConsumerKind::WebRtc,
            Box::new(Recorder {
                got,
                answer: Arc::new(Mutex::new(Offered::Taken)),
            }),
        );
        assert_eq!(hub.consumer_count(ConsumerKind::WebRtc), 1);
        drop(kept);
        assert_eq!(hub.consumer_count(ConsumerKind::WebRtc), 0);
    }

    #[test]
    fn an_overlong_gop_is_not_cached() {
        let hub = hub();
        hub.set_info(info());
        push_video(&hub, 0, true);
        for i in 1..=60 {
            push_video(&hub, i * 33, false);
        }
        let mut sub = hub.subscribe(ConsumerKind::Rtsp);
        assert_eq!(frames(&mut sub), vec![]);
    }

    #[test]
    fn the_consumer_clock_squeezes_the_cache_and_keeps_live_spacing() {
        let mut clock = ConsumerClock::new();
        let frame = |ms: u64, cached: bool| Frame {
            track: Track::Video,
            buffer: gst::Buffer::new(),
            pts: Duration::from_millis(ms),
            keyframe: false,
            cached,
        };
        let _ = gst::init();
        let out: Vec<u64> = [
            frame(1000, true),
            frame(1033, true),
            frame(1066, true),
            frame(1100, false),
            frame(1133, false),
        ]
        .iter()
        .map(|f| clock.map(f).as_millis() as u64)
        .collect();
        assert_eq!(out, vec![0, 1, 2, 36, 69]);
    }
}
