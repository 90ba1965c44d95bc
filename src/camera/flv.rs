//! The FLV source of an ingest, for Reolink's own streams: `souphttpsrc` for HTTP-FLV
//! (`http://IP/flv?…`) or `rtmp2src` for RTMP (`rtmp://IP/bcs/…`), then `flvdemux`, each of its
//! pads linked through the shared [`tracks`](super::tracks) (H.264 and AAC, as Reolink sends).
//!
//! FLV carries one access unit per tag, so video goes straight to `h264parse`. The stream's
//! first bytes pass through [`FlvCheck`] first: garbage and codecs `flvdemux` cannot read (H.265
//! on 8 MP models) are refused in the ingest's [`Offer`] with words a user can act on, for the
//! actor to report, instead of `flvdemux`'s bare flow error. A login in the query string stays
//! in the location (the camera reads it there); one in the user info goes in as properties.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use gst::prelude::*;

use super::failure::FailureKind;
use super::flv_check::{FlvCheck, FlvVerdict};
use super::ingest::{IngestOptions, Offer};
use super::pcm::PcmOutput;
use super::rtsp::split_credentials;
use super::sink::Session;
use super::tracks::{self, Chain, TrackSetup};
use crate::config::{CameraUrl, StreamProtocol};

/// Adds the source for `url` (HTTP-FLV or RTMP) and `flvdemux` to `pipeline`, its tracks linked
/// into `session` as `flvdemux` finds them.
pub fn add_source(
    pipeline: &gst::Pipeline,
    camera: &str,
    url: &CameraUrl,
    options: IngestOptions,
    session: &Arc<Session>,
    offer: &Arc<Mutex<Offer>>,
    pcm: PcmOutput,
) -> anyhow::Result<()> {
    let source = match url.protocol() {
        StreamProtocol::Rtmp => rtmp2src(camera, url, options)?,
        _ => souphttpsrc(camera, url, options)?,
    };
    let demux = super::make_element("flvdemux", format!("{camera}-demux"))?;
    pipeline.add_many([&source, &demux])?;
    source.link(&demux)?;
    check_stream(&source, session, offer)?;

    let setup = TrackSetup {
        bin: pipeline,
        camera,
        session,
        unify_audio: options.unify_audio,
        offer,
    };
    tracks::link_each_pad(&demux, &setup, pcm, link_flv_pad);
    Ok(())
}

/// Links one pad of `flvdemux`; a track in a codec Vigil does not take is swallowed (audio) or
/// refuses the stream (video).
fn link_flv_pad(setup: &TrackSetup, pad: &gst::Pad, pcm: PcmOutput) -> anyhow::Result<()> {
    let caps = pad.current_caps().context("an FLV track without caps")?;
    let name = caps.structure(0).map_or("?", |s| s.name().as_str());
    match Chain::for_flv(&caps) {
        Some(chain) => {
            let mut offer = setup.offer.lock().unwrap();
            let slot = match chain.track {
                super::Track::Video => &mut offer.video,
                super::Track::Audio => &mut offer.audio,
            };
            *slot = Some(chain.encoding.clone());
            // The header's flags may leave audio out (`rtmp2src` writes its own header, video
            // only); the pad is what counts. It comes with the codec configuration, before the
            // first frame, so no frame is announced without it.
            setup
                .session
                .expect(offer.video.is_some(), offer.audio.is_some());
            drop(offer);
            tracks::link(setup, pad, chain, pcm)
        }
        None => {
            let mut offer = setup.offer.lock().unwrap();
            if name.starts_with("video/") {
                offer.refused = Some((
                    FailureKind::UnsupportedCodec,
                    format!("the camera's FLV video is {name}"),
                ));
            } else {
                tracing::debug!(camera = setup.camera, "ignoring an FLV {name} track");
                offer.ignored.push(name.to_string());
                offer.audio = None;
                setup.session.expect(offer.video.is_some(), false);
            }
            drop(offer);
            tracks::swallow(setup.bin, pad)
        }
    }
}

/// Looks at the stream's first bytes on the source's pad: the header says which tracks to wait
/// for (until `flvdemux`'s pads say more); garbage or an unsupported codec is refused (nothing
/// more reaches `flvdemux`).
fn check_stream(
    source: &gst::Element,
    session: &Arc<Session>,
    offer: &Arc<Mutex<Offer>>,
) -> anyhow::Result<()> {
    let pad = source
        .static_pad("src")
        .context("FLV source without a pad")?;
    // The probe is `Fn`; one streaming thread calls it, so the lock is never contended.
    let check = Mutex::new((FlvCheck::new(flvdemux_reads_h265()), false));
    let session = Arc::downgrade(session);
    let offer = Arc::downgrade(offer);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let (Some(session), Some(offer)) = (session.upgrade(), offer.upgrade()) else {
            return gst::PadProbeReturn::Remove;
        };
        let Some(buffer) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        let mut check = check.lock().unwrap();
        let (check, announced) = &mut *check;
        let verdict = match buffer.map_readable() {
            Ok(map) => check.push(&map),
            Err(_) => return gst::PadProbeReturn::Ok,
        };
        let mut offer = offer.lock().unwrap();
        if !*announced && let Some(header) = check.header() {
            *announced = true;
            offer.described = true;
            // What the header announces; the demuxer's pads say the codec once found.
            offer.video = header.video.then(|| "FLV".to_string());
            offer.audio = header.audio.then(|| "FLV".to_string());
            if !header.video {
                offer.ignored.push("no video in the FLV header".into());
            }
            session.expect(header.video, header.audio);
        }
        match verdict {
            FlvVerdict::Undecided => gst::PadProbeReturn::Ok,
            FlvVerdict::Usable => gst::PadProbeReturn::Remove,
            FlvVerdict::NotFlv(what) => {
                offer.refused.get_or_insert((
                    FailureKind::BadStream,
                    format!("the camera sent {what}, not an FLV stream"),
                ));
                gst::PadProbeReturn::Drop
            }
            FlvVerdict::UnsupportedCodec(codec) => {
                offer.refused.get_or_insert((
                    FailureKind::UnsupportedCodec,
                    format!("the camera's FLV video is {codec}"),
                ));
                gst::PadProbeReturn::Drop
            }
        }
    });
    Ok(())
}

/// Whether this GStreamer's `flvdemux` reads H.265 (1.22's does not).
fn flvdemux_reads_h265() -> bool {
    let h265 = gst::Caps::new_empty_simple("video/x-h265");
    gst::ElementFactory::find("flvdemux").is_some_and(|factory| {
        factory
            .static_pad_templates()
            .iter()
            .any(|t| t.direction() == gst::PadDirection::Src && t.caps().can_intersect(&h265))
    })
}

fn souphttpsrc(
    camera: &str,
    url: &CameraUrl,
    options: IngestOptions,
) -> anyhow::Result<gst::Element> {
    let (location, user, password) = split_credentials(url.expose())?;
    let source = gst::ElementFactory::make("souphttpsrc")
        .name(format!("{camera}-source"))
        .property("location", location)
        .property("is-live", true)
        .property("iradio-mode", false)
        .property("keep-alive", false)
        // The actor retries, with its backoff; souphttpsrc's own retries would hide an outage.
        .property("retries", 0i32)
        .property(
            "timeout",
            options.stall_timeout.as_secs().clamp(1, u32::MAX as u64) as u32,
        )
        .property("user-agent", concat!("Vigil/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot create souphttpsrc (is gstreamer1.0-plugins-good installed?)")?;
    if let Some(user) = user {
        source.set_property("user-id", user);
    }
    if let Some(password) = password {
        source.set_property("user-pw", password);
    }
    Ok(source)
}

fn rtmp2src(camera: &str, url: &CameraUrl, options: IngestOptions) -> anyhow::Result<gst::Element> {
    let seconds = options.stall_timeout.as_secs().clamp(1, u32::MAX as u64) as u32;
    gst::ElementFactory::make("rtmp2src")
        .name(format!("{camera}-source"))
        .property("location", url.expose())
        .property("timeout", seconds)
        .property("idle-timeout", seconds)
        .build()
        .context("cannot create rtmp2src (is gstreamer1.0-plugins-bad installed?)")
}
