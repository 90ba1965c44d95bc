//! One connection to a camera: `rtspsrc` over TCP, depayloaded and parsed into access units for
//! the [`Hub`], never decoded (only the audio copy for the detector is, in [`super::pcm`]).
//!
//! An [`Ingest`] is one attempt; the actor makes a new one after every failure. The camera's
//! credentials are handed to `rtspsrc` as properties, so the location it may quote in an error
//! carries none. Pad and signal callbacks run on GStreamer threads and never block.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use gst::prelude::*;

use super::AudioStatus;
use super::access_units::AccessUnits;
use super::describe::audio_status;
use super::hub::{Hub, Track};
use super::nal::Codec;
use super::pcm::{self, PcmOutput};
use super::sink::{Received, Session};
use super::unify;
use crate::config::CameraUrl;

/// Settings shared by every camera's ingest.
#[derive(Debug, Clone, Copy)]
pub struct IngestOptions {
    /// The jitter buffer's latency (`camera_latency_ms`).
    pub latency: Duration,
    /// No frame for this long restarts the connection (`stall_timeout`); also the time the
    /// camera has to answer a request.
    pub stall_timeout: Duration,
    /// Audio other than AAC is transcoded to AAC before the hub (`unify_audio`).
    pub unify_audio: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(crate::config::DEFAULT_CAMERA_LATENCY_MS as u64),
            stall_timeout: Duration::from_secs(crate::config::DEFAULT_STALL_TIMEOUT as u64),
            unify_audio: true,
        }
    }
}

/// What the camera's SDP offered and what was taken.
#[derive(Debug, Default, Clone)]
pub struct Offer {
    /// The camera described its stream (DESCRIBE answered).
    pub described: bool,
    /// The RTP encoding of the video and audio tracks taken (`H264`, `PCMA`, …).
    pub video: Option<String>,
    pub audio: Option<String>,
    /// Tracks offered but not taken, as `media/ENCODING`.
    pub ignored: Vec<String>,
    /// The camera's own audio when the hub gets it transcoded to AAC (`unify_audio`).
    pub transcoded_audio: Option<AudioStatus>,
}

/// A running attempt; dropping it stops the pipeline.
pub struct Ingest {
    pipeline: gst::Pipeline,
    session: Arc<Session>,
    offer: Arc<Mutex<Offer>>,
}

impl Ingest {
    /// Builds the pipeline for `url` and starts it; the connection itself happens on
    /// GStreamer's threads, its outcome arrives on the bus.
    pub fn start(
        camera: &str,
        url: &CameraUrl,
        options: IngestOptions,
        hub: Arc<Hub>,
        pcm: PcmOutput,
    ) -> anyhow::Result<Self> {
        let pipeline = gst::Pipeline::with_name(&format!("{camera}-ingest"));
        let source = rtspsrc(camera, url, options)?;
        pipeline.add(&source)?;
        let session = Session::begin(hub, true, true);
        pcm.begin_session();
        let offer = Arc::new(Mutex::new(Offer::default()));

        let chosen = offer.clone();
        let expect = Arc::downgrade(&session);
        source.connect("select-stream", false, move |args| {
            let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok())?;
            let take = choose_track(&caps, &mut chosen.lock().unwrap());
            if let Some(session) = expect.upgrade() {
                let offer = chosen.lock().unwrap();
                session.expect(offer.video.is_some(), offer.audio.is_some());
            }
            Some(take.to_value())
        });

        // Weak: the source belongs to the pipeline, so a strong reference here would keep the
        // whole pipeline (its buses' sockets, its buffers) alive after every reconnect.
        let bin = pipeline.downgrade();
        let linked = Arc::downgrade(&session);
        let camera_name = camera.to_string();
        let tracks = offer.clone();
        source.connect_pad_added(move |_, pad| {
            let (Some(bin), Some(session)) = (bin.upgrade(), linked.upgrade()) else {
                return;
            };
            let track = TrackSetup {
                bin: &bin,
                camera: &camera_name,
                session: &session,
                unify_audio: options.unify_audio,
                offer: &tracks,
            };
            if let Err(e) = link_track(&track, pad, pcm.clone()) {
                gst::element_error!(bin, gst::StreamError::Format, ["{e:#}"]);
            }
        });

        pipeline
            .set_state(gst::State::Playing)
            .context("cannot start the camera's pipeline")?;
        Ok(Self {
            pipeline,
            session,
            offer,
        })
    }

    /// The pipeline's messages (errors, end of stream).
    pub fn bus(&self) -> Option<gst::Bus> {
        self.pipeline.bus()
    }

    /// What arrived so far.
    pub fn received(&self) -> Received {
        self.session.received()
    }

    /// Which tracks have their format so far (video, audio).
    pub fn negotiated(&self) -> (bool, bool) {
        self.session.negotiated()
    }

    /// What the camera offered, once it described its stream.
    pub fn offer(&self) -> Offer {
        self.offer.lock().unwrap().clone()
    }

    /// The camera's audio stopped while its video goes on: the hub carries video alone
    /// until audio comes again.
    pub fn pause_audio(&self) {
        self.session.pause_audio();
    }

    /// True while the audio is paused after it stopped.
    pub fn audio_paused(&self) -> bool {
        self.session.audio_paused()
    }

    /// Stops waiting for a track the camera announced but does not send.
    pub fn give_up_audio(&self) {
        self.offer.lock().unwrap().audio = None;
        self.session.expect(true, false);
    }

    /// Stops the pipeline off the async runtime (an `rtspsrc` may take a moment to tear down).
    pub async fn stop(self) {
        let pipeline = self.pipeline.clone();
        let stopped = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null));
        if tokio::time::timeout(Duration::from_secs(5), stopped)
            .await
            .is_err()
        {
            tracing::warn!(pipeline = %self.pipeline.name(), "the camera's pipeline is slow to stop");
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn rtspsrc(camera: &str, url: &CameraUrl, options: IngestOptions) -> anyhow::Result<gst::Element> {
    let (location, user, password) = split_credentials(url.expose())?;
    let source = gst::ElementFactory::make("rtspsrc")
        .name(format!("{camera}-source"))
        .property("location", location)
        .property("latency", options.latency.as_millis() as u32)
        .property("tcp-timeout", options.stall_timeout.as_micros() as u64)
        .property("do-retransmission", false)
        .property("user-agent", concat!("Vigil/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot create rtspsrc (is gstreamer1.0-plugins-good installed?)")?;
    source.set_property_from_str("protocols", "tcp");
    if let Some(user) = user {
        source.set_property("user-id", user);
    }
    if let Some(password) = password {
        source.set_property("user-pw", password);
    }
    Ok(source)
}

/// The URL without its user info, and the user name and password (percent-decoded).
fn split_credentials(raw: &str) -> anyhow::Result<(String, Option<String>, Option<String>)> {
    let mut url =
        url::Url::parse(raw).map_err(|e| anyhow!("the camera's url is not valid: {e}"))?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = Some(decode(url.username())).filter(|u| !u.is_empty());
    let password = url.password().map(decode);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url.to_string(), user, password))
}

/// Takes the first H.264/H.265 video track and the first audio track in a codec we pass on;
/// returns whether to set this stream up.
fn choose_track(caps: &gst::CapsRef, offer: &mut Offer) -> bool {
    offer.described = true;
    let Some(s) = caps.structure(0) else {
        return false;
    };
    let media = s.get::<&str>("media").unwrap_or("?");
    let encoding = s
        .get::<&str>("encoding-name")
        .unwrap_or("?")
        .to_ascii_uppercase();
    let slot = match media {
        "video" if matches!(encoding.as_str(), "H264" | "H265") => &mut offer.video,
        "audio"
            if matches!(
                encoding.as_str(),
                "MPEG4-GENERIC" | "MP4A-LATM" | "PCMA" | "PCMU" | "OPUS"
            ) =>
        {
            &mut offer.audio
        }
        _ => {
            offer.ignored.push(format!("{media}/{encoding}"));
            return false;
        }
    };
    if slot.is_some() {
        offer.ignored.push(format!("{media}/{encoding}"));
        return false;
    }
    *slot = Some(encoding);
    true
}

/// How one RTP encoding becomes access units for the hub.
struct Chain {
    track: Track,
    /// Depayloader, then parser if any.
    elements: &'static [&'static str],
    /// For video: the byte-stream caps the hub's contract asks for.
    video_caps: Option<&'static str>,
    /// For video: the codec, whose access units are joined before the parser.
    codec: Option<Codec>,
    /// The decoder for the detector's copy (audio only).
    decoder: Option<&'static str>,
}

fn chain_for(encoding: &str) -> Option<Chain> {
    let video = |elements, caps, codec| Chain {
        track: Track::Video,
        elements,
        video_caps: Some(caps),
        codec: Some(codec),
        decoder: None,
    };
    let audio = |elements, decoder| Chain {
        track: Track::Audio,
        elements,
        video_caps: None,
        codec: None,
        decoder: Some(decoder),
    };
    Some(match encoding {
        "H264" => video(&["rtph264depay", "h264parse"], "video/x-h264", Codec::H264),
        "H265" => video(&["rtph265depay", "h265parse"], "video/x-h265", Codec::H265),
        "MPEG4-GENERIC" => audio(&["rtpmp4gdepay", "aacparse"], "avdec_aac"),
        "MP4A-LATM" => audio(&["rtpmp4adepay", "aacparse"], "avdec_aac"),
        "PCMA" => audio(&["rtppcmadepay"], "alawdec"),
        "PCMU" => audio(&["rtppcmudepay"], "mulawdec"),
        "OPUS" => audio(&["rtpopusdepay"], "opusdec"),
        _ => return None,
    })
}

/// What [`link_track`] needs from the ingest.
struct TrackSetup<'a> {
    bin: &'a gst::Pipeline,
    camera: &'a str,
    session: &'a Arc<Session>,
    unify_audio: bool,
    offer: &'a Arc<Mutex<Offer>>,
}

/// Depayloads and parses one RTP pad of `rtspsrc` into the hub (and the detector); with
/// `unify_audio`, audio other than AAC reaches the hub as AAC.
fn link_track(setup: &TrackSetup, pad: &gst::Pad, pcm: PcmOutput) -> anyhow::Result<()> {
    let (bin, camera, session) = (setup.bin, setup.camera, setup.session);
    let caps = pad.current_caps().context("a camera track without caps")?;
    let s = caps.structure(0).context("empty caps")?;
    let encoding = s
        .get::<&str>("encoding-name")
        .unwrap_or_default()
        .to_ascii_uppercase();
    let Some(chain) = chain_for(&encoding) else {
        // Not selected, so not expected; swallow it so the source never blocks on it.
        tracing::debug!(camera, "ignoring a {encoding} track");
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()?;
        bin.add(&sink)?;
        sink.sync_state_with_parent()?;
        pad.link(&sink.static_pad("sink").context("fakesink without a pad")?)?;
        return Ok(());
    };
    let role = match chain.track {
        Track::Video => "video",
        Track::Audio => "audio",
    };
    let make =
        |factory: &str, name: &str| super::make_element(factory, format!("{camera}-{role}-{name}"));
    let mut elements = Vec::new();
    for factory in chain.elements {
        if factory.ends_with("parse")
            && let Some(codec) = chain.codec
        {
            // Whole access units into the parser, however the camera cut them (see nal.rs).
            let name = format!("{camera}-{role}-access-units");
            elements.push(AccessUnits::new(&name, codec).upcast());
        }
        let element = make(factory, factory)?;
        if chain.track == Track::Video && factory.ends_with("parse") {
            // SPS/PPS (and VPS) in front of every keyframe: each one decodes on its own.
            element.set_property("config-interval", -1i32);
        }
        elements.push(element);
    }
    if let Some(name) = chain.video_caps {
        let filter = make("capsfilter", "caps")?;
        filter.set_property("caps", byte_stream_caps(name));
        elements.push(filter);
    }
    let detector = chain.decoder.map(|decoder| (pcm, decoder));
    let tee = match detector {
        Some(_) => {
            let tee = make("tee", "tee")?;
            tee.set_property("allow-not-linked", true);
            elements.push(tee.clone());
            Some(tee)
        }
        None => None,
    };
    if let Some((_, decoder)) = detector.as_ref().filter(|_| setup.unify_audio)
        && unify::needs_transcoding(&encoding)
    {
        // The hub's branch of the tee becomes decode → AAC; the detector's stays as it is.
        let rate = s.get::<i32>("clock-rate").ok();
        elements.extend(unify::aac_chain(decoder, rate, camera)?);
        if let Some(tee) = &tee {
            record_camera_audio(tee, setup.offer);
        }
    }
    let sink = gst_app::AppSink::builder()
        .name(format!("{camera}-{role}"))
        .sync(false)
        .async_(false)
        .enable_last_sample(false)
        .build();
    bin.add_many(&elements)?;
    bin.add(&sink)?;
    gst::Element::link_many(&elements)?;
    elements.last().context("empty chain")?.link(&sink)?;
    session.connect(&sink, chain.track);
    if let (Some((pcm, decoder)), Some(tee)) = (detector, tee)
        && let Err(e) = pcm::link_decoder(bin.upcast_ref(), &tee, decoder, camera, pcm)
    {
        tracing::warn!(
            camera,
            "cannot decode the camera's audio for cry detection: {e:#}"
        );
    }
    sink.sync_state_with_parent()?;
    for element in elements.iter().rev() {
        element.sync_state_with_parent()?;
    }
    pad.link(&elements[0].static_pad("sink").context("no sink pad")?)?;
    Ok(())
}

/// Keeps the camera's own audio format (the tee's input, before it becomes AAC) in the offer,
/// for the status.
fn record_camera_audio(tee: &gst::Element, offer: &Arc<Mutex<Offer>>) {
    let Some(pad) = tee.static_pad("sink") else {
        return;
    };
    let offer = Arc::downgrade(offer);
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        if let Some(gst::EventView::Caps(event)) = info.event().map(|e| e.view())
            && let Some(offer) = offer.upgrade()
        {
            let mut status = audio_status(event.caps());
            if let Some(status) = status.as_mut() {
                status.restreamed_as = Some("AAC".into());
            }
            offer.lock().unwrap().transcoded_audio = status;
        }
        gst::PadProbeReturn::Ok
    });
}

fn byte_stream_caps(name: &str) -> gst::Caps {
    gst::Caps::builder(name)
        .field("stream-format", "byte-stream")
        .field("alignment", "au")
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_location() {
        let (location, user, password) =
            split_credentials("rtsp://admin:p%40ss%3Aw0rd@192.168.1.20:554/stream1?channel=1")
                .unwrap();
        assert_eq!(location, "rtsp://192.168.1.20:554/stream1?channel=1");
        assert_eq!(user.as_deref(), Some("admin"));
        assert_eq!(password.as_deref(), Some("p@ss:w0rd"));
        let (location, user, password) = split_credentials("rtsp://cam/live").unwrap();
        assert_eq!(
            (location.as_str(), user, password),
            ("rtsp://cam/live", None, None)
        );
    }

    #[test]
    fn the_first_supported_video_and_audio_tracks_are_taken() {
        let _ = gst::init();
        let rtp = |media: &str, encoding: &str| {
            gst::Caps::builder("application/x-rtp")
                .field("media", media)
                .field("encoding-name", encoding)
                .build()
        };
        let mut offer = Offer::default();
        let taken: Vec<bool> = [
            rtp("video", "H264"),
            rtp("video", "H265"),
            rtp("audio", "PCMA"),
            rtp("application", "VND.ONVIF.METADATA"),
            rtp("audio", "mpeg4-generic"),
        ]
        .iter()
        .map(|caps| choose_track(caps, &mut offer))
        .collect();
        assert_eq!(taken, vec![true, false, true, false, false]);
        assert_eq!(offer.video.as_deref(), Some("H264"));
        assert_eq!(offer.audio.as_deref(), Some("PCMA"));
        assert_eq!(
            offer.ignored,
            vec![
                "video/H265",
                "application/VND.ONVIF.METADATA",
                "audio/MPEG4-GENERIC"
            ]
        );
        let mut offer = Offer::default();
        assert!(!choose_track(&rtp("video", "JPEG"), &mut offer));
        assert!(offer.described && offer.video.is_none());
    }
}
