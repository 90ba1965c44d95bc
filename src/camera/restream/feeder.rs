//! Feeds one restream client's media from the camera's hub: the cached GOP first, then live
//! frames, each re-timed by a [`ConsumerClock`] so the client starts at the newest picture and
//! stays as live as the camera. Runs as a tokio task per client; never blocks.
//!
//! A client is closed when it falls behind (the hub drops it, or its `appsrc` queue grows past
//! [`CLIENT_LAG_LIMIT`] for a second) or when the camera's formats change in a way its SDP cannot follow. It
//! never delays the camera or the other clients: each has its own media and its own queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gst::glib;
use gst::prelude::*;
use gst_rtsp_server::prelude::*;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::factory::FactoryContext;
use crate::camera::{ConsumerClock, ConsumerKind, MediaEvent, StreamInfo, Subscription, Track};

/// How far behind live a client's queue may get before the client is closed...
pub const CLIENT_LAG_LIMIT: Duration = Duration::from_secs(2);
/// ...for this long.
const LAG_PERSISTS: Duration = Duration::from_secs(1);

/// The name of a track's `appsrc` in a client's media.
pub fn source_name(role: &str) -> String {
    format!("{role}-src")
}

/// Everything one client's feeding task owns.
pub struct Feed {
    camera: String,
    video: Option<gst_app::AppSrc>,
    audio: Option<gst_app::AppSrc>,
    /// The formats the client's SDP was made from.
    described: Option<Arc<StreamInfo>>,
    subscription: Subscription,
    client: Option<glib::WeakRef<gst_rtsp_server::RTSPClient>>,
    /// Set once the media's sources run and take buffers.
    started: Arc<Notify>,
    /// Cancelled when the media is torn down (the client left).
    stop: CancellationToken,
    element: gst::Element,
}

impl Feed {
    /// Subscribes to the camera for the client of `media` (its request is being handled now).
    pub fn new(
        context: &FactoryContext,
        media: &gst_rtsp_server::RTSPMedia,
        client: Option<gst_rtsp_server::RTSPClient>,
    ) -> anyhow::Result<Self> {
        let element = media.element();
        let bin = element
            .downcast_ref::<gst::Bin>()
            .context("the client's media is not a bin")?;
        let source = |role: &str| {
            bin.by_name(&source_name(role))
                .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        };
        let (video, audio) = (source("video"), source("audio"));
        let started = Arc::new(Notify::new());
        for src in video.iter().chain(audio.iter()) {
            let started = started.clone();
            src.set_callbacks(
                gst_app::AppSrcCallbacks::builder()
                    .need_data(move |_, _| started.notify_one())
                    .build(),
            );
        }
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        media.connect_unprepared(move |_| stopped.cancel());
        let subscription = context.camera.subscribe(ConsumerKind::Rtsp);
        let peer = client.as_ref().and_then(client_address);
        if let Some(address) = &peer {
            subscription.set_peer(address.as_str());
        }
        tracing::debug!(camera = context.camera.name(), peer = ?peer, "restream client");
        Ok(Self {
            camera: context.camera.name().to_string(),
            video,
            audio,
            described: context.camera.stream_info(),
            subscription,
            client: client.map(|c| c.downgrade()),
            started,
            stop,
            element,
        })
    }

    async fn run(mut self, main_context: glib::MainContext) {
        tokio::select! {
            _ = self.stop.cancelled() => return,
            _ = self.started.notified() => {}
        }
        let mut clock = ConsumerClock::new();
        let mut batch = AudioBatch::default();
        let mut lagging_since: Option<Instant> = None;
        let mut join_audio = joinable(&self.described.as_ref().and_then(|d| d.audio.clone()));
        let base = self
            .element
            .current_running_time()
            .unwrap_or(gst::ClockTime::ZERO);
        loop {
            let event = tokio::select! {
                _ = self.stop.cancelled() => return,
                event = self.subscription.recv() => event,
            };
            let Some(event) = event else {
                self.close(&main_context, "it fell behind (or the camera is gone)");
                return;
            };
            let frame = match event {
                MediaEvent::Info(info) => {
                    if let Err(why) = self.follow(&info) {
                        self.close(&main_context, why);
                        return;
                    }
                    join_audio = joinable(&info.audio);
                    clock.reset();
                    continue;
                }
                MediaEvent::Frame(frame) => frame,
            };
            let at = base + gst::ClockTime::from_nseconds(clock.map(&frame).as_nanos() as u64);
            // A new buffer sharing the camera's memory: only the timestamps are the client's.
            let mut buffer = frame.buffer.copy();
            {
                let buffer = buffer.make_mut();
                buffer.set_pts(at);
                buffer.set_dts(at);
            }
            let pushed = match (frame.track, &self.video, &self.audio) {
                (Track::Video, Some(video), _) => {
                    let audio = self.audio.as_ref().map_or(Ok(()), |a| batch.flush(a));
                    audio.and(video.push_buffer(buffer).map(drop))
                }
                (Track::Audio, _, Some(audio)) => batch.add(buffer, at, audio, join_audio),
                _ => Ok(()),
            };
            if pushed.is_err() {
                return; // the media is stopping
            }
            let lag = |src: &Option<gst_app::AppSrc>| {
                src.as_ref()
                    .map_or(Duration::ZERO, |s| s.current_level_time().into())
            };
            // Right after a camera outage the queue spans the outage for a moment (its newest
            // frame is seconds after the last one out); a client that stopped reading stays
            // behind.
            if lag(&self.video).max(lag(&self.audio)) <= CLIENT_LAG_LIMIT {
                lagging_since = None;
            } else if lagging_since.get_or_insert_with(Instant::now).elapsed() >= LAG_PERSISTS {
                self.close(&main_context, "it stopped reading");
                return;
            }
        }
    }

    /// Takes new formats from the camera; `Err` when the client's SDP no longer fits them.
    fn follow(&mut self, info: &Arc<StreamInfo>) -> Result<(), &'static str> {
        let Some(described) = &self.described else {
            self.described = Some(info.clone());
            return Ok(());
        };
        if described == info {
            return Ok(());
        }
        let codec = |caps: &Option<gst::Caps>| {
            caps.as_ref()
                .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
        };
        // A track that went missing (a camera back from a reboot without its audio yet) leaves
        // the client playing the other one; only a different codec needs a new SDP.
        let changed = |was: Option<String>, now: Option<String>| matches!((was, now), (Some(was), Some(now)) if was != now);
        if changed(codec(&described.video), codec(&info.video))
            || changed(codec(&described.audio), codec(&info.audio))
        {
            return Err("the camera's codecs changed");
        }
        // Same codecs: new parameters travel in band, the sources announce the new caps.
        for (src, caps) in [(&self.video, &info.video), (&self.audio, &info.audio)] {
            if let (Some(src), Some(caps)) = (src, caps) {
                src.set_caps(Some(caps));
            }
        }
        // A missing track keeps its described codec, so that it must come back the same.
        self.described = Some(Arc::new(StreamInfo {
            video: info.video.clone().or_else(|| described.video.clone()),
            audio: info.audio.clone().or_else(|| described.audio.clone()),
        }));
        Ok(())
    }

    fn close(&self, main_context: &glib::MainContext, why: &str) {
        tracing::info!(camera = %self.camera, "closing a restream client: {why}");
        if let Some(client) = self.client.as_ref().and_then(|c| c.upgrade()) {
            main_context.invoke(move || client.close());
        }
    }
}

/// Audio frames held back to leave with the next video frame: one hand-over through the
/// client's pipeline (its source and sender threads) instead of two or three, since audio frames
/// come every 20 ms and video frames every 40 to 66 ms. G.711 frames are joined into one packet
/// (its samples stand alone, as RTP allows); other codecs' frames stay packets of their own.
#[derive(Default)]
struct AudioBatch {
    /// G.711: the frames so far, joined (sharing the camera's memory).
    joined: Option<gst::Buffer>,
    /// Other codecs: the frames so far.
    list: Option<gst::BufferList>,
    first: Option<gst::ClockTime>,
}

impl AudioBatch {
    /// Adds a frame stamped `at`; sends the batch once it spans [`AUDIO_BATCH_SPAN`].
    fn add(
        &mut self,
        buffer: gst::Buffer,
        at: gst::ClockTime,
        src: &gst_app::AppSrc,
        join: bool,
    ) -> Result<(), gst::FlowError> {
        let first = *self.first.get_or_insert(at);
        if join {
            self.joined = Some(match self.joined.take() {
                Some(mut joined) => {
                    joined.append(buffer);
                    joined
                }
                None => buffer,
            });
        } else {
            self.list
                .get_or_insert_with(gst::BufferList::new)
                .make_mut()
                .add(buffer);
        }
        if Duration::from(at.saturating_sub(first)) >= AUDIO_BATCH_SPAN {
            return self.flush(src);
        }
        Ok(())
    }

    fn flush(&mut self, src: &gst_app::AppSrc) -> Result<(), gst::FlowError> {
        self.first = None;
        if let Some(mut joined) = self.joined.take() {
            // The joined buffer lasts as long as its samples; the payloader reads that.
            joined.make_mut().set_duration(gst::ClockTime::NONE);
            src.push_buffer(joined)?;
        }
        match self.list.take() {
            Some(list) => src.push_buffer_list(list).map(drop),
            None => Ok(()),
        }
    }
}

/// True for audio whose frames may be joined into longer packets (G.711).
fn joinable(caps: &Option<gst::Caps>) -> bool {
    caps.as_ref()
        .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
        .is_some_and(|name| name == "audio/x-alaw" || name == "audio/x-mulaw")
}

/// The longest audio held back for the next video frame.
pub const AUDIO_BATCH_SPAN: Duration = Duration::from_millis(60);

/// Starts feeding on the runtime.
pub fn start(feed: Feed, context: &FactoryContext) {
    let main_context = context.main_context.clone();
    context.runtime.spawn(feed.run(main_context));
}

/// The client's IP address, for the API (the bindings do not wrap the connection).
fn client_address(client: &gst_rtsp_server::RTSPClient) -> Option<String> {
    use glib::translate::ToGlibPtr;
    // SAFETY: the client outlives this call; the connection and the address it returns belong
    // to the client and are only read here, while the client is alive.
    unsafe {
        let connection =
            gst_rtsp_server::ffi::gst_rtsp_client_get_connection(client.to_glib_none().0);
        if connection.is_null() {
            return None;
        }
        let ip = gst_rtsp::ffi::gst_rtsp_connection_get_ip(connection);
        if ip.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(ip).to_string_lossy().into_owned())
    }
}
