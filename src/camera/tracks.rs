//! The track chains every ingest shares, whatever its source (RTSP's depayloaders, FLV's
//! demuxer): a camera's elementary stream in, access units for the [`Hub`] out, and for audio
//! the detector's copy through [`super::pcm`] and, with `unify_audio`, AAC for the hub through
//! [`super::unify`].
//!
//! Video is parsed into byte-stream access units with SPS/PPS (and VPS) before every keyframe,
//! never decoded. Runs from pad callbacks on GStreamer threads: it links and returns, never
//! blocks.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use gst::prelude::*;

use super::access_units::AccessUnits;
use super::describe::audio_status;
use super::hub::Track;
use super::ingest::Offer;
use super::nal::Codec;
use super::pcm::{self, PcmOutput};
use super::sink::Session;
use super::unify;

/// How one track of the camera becomes access units for the hub.
pub struct Chain {
    pub track: Track,
    /// The track's encoding, in RTP's upper-case words (`H264`, `MPEG4-GENERIC`, `PCMA`), or
    /// `AAC` for AAC from FLV: picks whether `unify_audio` transcodes it.
    pub encoding: String,
    /// Depayloader (RTP only), then parser if any.
    pub elements: &'static [&'static str],
    /// For video: the byte-stream caps the hub's contract asks for.
    pub video_caps: Option<&'static str>,
    /// For video from RTP: the codec whose access units are joined before the parser (see
    /// `nal.rs`). FLV carries whole access units, one per tag, so it needs none.
    pub join_access_units: Option<Codec>,
    /// The decoder for the detector's copy (audio only).
    pub decoder: Option<&'static str>,
    /// The audio's sample rate when known before it flows (the SDP's clock rate).
    pub rate: Option<i32>,
}

impl Chain {
    fn video(encoding: &str, elements: &'static [&'static str], caps: &'static str) -> Self {
        Self {
            track: Track::Video,
            encoding: encoding.into(),
            elements,
            video_caps: Some(caps),
            join_access_units: None,
            decoder: None,
            rate: None,
        }
    }

    fn audio(encoding: &str, elements: &'static [&'static str], decoder: &'static str) -> Self {
        Self {
            track: Track::Audio,
            encoding: encoding.into(),
            elements,
            video_caps: None,
            join_access_units: None,
            decoder: Some(decoder),
            rate: None,
        }
    }

    /// The chain for an RTP track of `encoding` (upper case), if Vigil passes it on.
    pub fn for_rtp(encoding: &str, rate: Option<i32>) -> Option<Self> {
        let mut chain = match encoding {
            "H264" => Self::video(encoding, &["rtph264depay", "h264parse"], "video/x-h264"),
            "H265" => Self::video(encoding, &["rtph265depay", "h265parse"], "video/x-h265"),
            "MPEG4-GENERIC" => Self::audio(encoding, &["rtpmp4gdepay", "aacparse"], "avdec_aac"),
            "MP4A-LATM" => Self::audio(encoding, &["rtpmp4adepay", "aacparse"], "avdec_aac"),
            "PCMA" => Self::audio(encoding, &["rtppcmadepay"], "alawdec"),
            "PCMU" => Self::audio(encoding, &["rtppcmudepay"], "mulawdec"),
            "OPUS" => Self::audio(encoding, &["rtpopusdepay"], "opusdec"),
            _ => return None,
        };
        chain.join_access_units = match encoding {
            "H264" => Some(Codec::H264),
            "H265" => Some(Codec::H265),
            _ => None,
        };
        chain.rate = rate;
        Some(chain)
    }

    /// The chain for a pad of `flvdemux` with `caps`, if Vigil passes it on: H.264 and AAC
    /// (what Reolink sends), and G.711, which some other FLV sources send.
    pub fn for_flv(caps: &gst::CapsRef) -> Option<Self> {
        let s = caps.structure(0)?;
        let chain = match s.name().as_str() {
            "video/x-h264" => Self::video("H264", &["h264parse"], "video/x-h264"),
            "video/x-h265" => Self::video("H265", &["h265parse"], "video/x-h265"),
            "audio/mpeg" if s.get::<i32>("mpegversion").ok() == Some(4) => {
                Self::audio("AAC", &["aacparse"], "avdec_aac")
            }
            "audio/x-alaw" => Self::audio("PCMA", &[], "alawdec"),
            "audio/x-mulaw" => Self::audio("PCMU", &[], "mulawdec"),
            _ => return None,
        };
        Some(Self {
            rate: s.get::<i32>("rate").ok(),
            ..chain
        })
    }
}

/// What [`link`] needs from the ingest.
pub struct TrackSetup<'a> {
    pub bin: &'a gst::Pipeline,
    pub camera: &'a str,
    pub session: &'a Arc<Session>,
    pub unify_audio: bool,
    pub offer: &'a Arc<Mutex<Offer>>,
}

/// How a linker turns one of a source's pads into a track.
pub type LinkPad = fn(&TrackSetup, &gst::Pad, PcmOutput) -> anyhow::Result<()>;

/// Links every pad `element` (the source, or its demuxer) adds through `link`; a pad that
/// cannot be linked fails the pipeline with the reason. The callback holds the pipeline and
/// the session weakly: the element belongs to the pipeline, so a strong reference would keep
/// the whole pipeline (its sockets, its buffers) alive after every reconnect.
pub fn link_each_pad(element: &gst::Element, setup: &TrackSetup, pcm: PcmOutput, link: LinkPad) {
    let bin = setup.bin.downgrade();
    let linked = Arc::downgrade(setup.session);
    let camera = setup.camera.to_string();
    let (offer, unify_audio) = (setup.offer.clone(), setup.unify_audio);
    element.connect_pad_added(move |_, pad| {
        let (Some(bin), Some(session)) = (bin.upgrade(), linked.upgrade()) else {
            return;
        };
        let setup = TrackSetup {
            bin: &bin,
            camera: &camera,
            session: &session,
            unify_audio,
            offer: &offer,
        };
        if let Err(e) = link(&setup, pad, pcm.clone()) {
            gst::element_error!(bin, gst::StreamError::Format, ["{e:#}"]);
        }
    });
}

/// Sends a pad the camera's source offers but Vigil does not take into a `fakesink`, so the
/// source never blocks on it.
pub fn swallow(bin: &gst::Pipeline, pad: &gst::Pad) -> anyhow::Result<()> {
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()?;
    bin.add(&sink)?;
    sink.sync_state_with_parent()?;
    pad.link(&sink.static_pad("sink").context("fakesink without a pad")?)?;
    Ok(())
}

/// Links `pad` through `chain` into the hub (and the detector); with `unify_audio`, audio other
/// than AAC reaches the hub as AAC.
pub fn link(
    setup: &TrackSetup,
    pad: &gst::Pad,
    chain: Chain,
    pcm: PcmOutput,
) -> anyhow::Result<()> {
    let (bin, camera, session) = (setup.bin, setup.camera, setup.session);
    let role = match chain.track {
        Track::Video => "video",
        Track::Audio => "audio",
    };
    let make =
        |factory: &str, name: &str| super::make_element(factory, format!("{camera}-{role}-{name}"));
    let mut elements = Vec::new();
    for factory in chain.elements {
        if factory.ends_with("parse")
            && let Some(codec) = chain.join_access_units
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
        && unify::needs_transcoding(&chain.encoding)
    {
        // The hub's branch of the tee becomes decode → AAC; the detector's stays as it is.
        elements.extend(unify::aac_chain(decoder, chain.rate, camera)?);
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
    fn flv_tracks_get_a_parser_and_no_depayloader() {
        let _ = gst::init();
        let caps = |s: &str| s.parse::<gst::Caps>().unwrap();
        let h264 = Chain::for_flv(&caps("video/x-h264, stream-format=avc, alignment=au")).unwrap();
        assert_eq!(h264.elements, &["h264parse"]);
        assert!(
            h264.join_access_units.is_none(),
            "FLV tags are whole access units"
        );
        let aac =
            Chain::for_flv(&caps("audio/mpeg, mpegversion=4, rate=16000, channels=1")).unwrap();
        assert_eq!((aac.encoding.as_str(), aac.rate), ("AAC", Some(16000)));
        assert!(!unify::needs_transcoding(&aac.encoding));
        assert!(Chain::for_flv(&caps("audio/mpeg, mpegversion=1, layer=3")).is_none());
        assert!(Chain::for_flv(&caps("video/x-flash-video, flvversion=1")).is_none());
    }

    #[test]
    fn rtp_video_is_joined_into_access_units() {
        let h265 = Chain::for_rtp("H265", None).unwrap();
        assert_eq!(h265.join_access_units, Some(Codec::H265));
        assert_eq!(Chain::for_rtp("PCMA", Some(8000)).unwrap().rate, Some(8000));
        assert!(Chain::for_rtp("JPEG", None).is_none());
    }
}
