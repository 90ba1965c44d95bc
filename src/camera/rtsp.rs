//! The RTSP source of an ingest: `rtspsrc` over TCP, the camera's credentials as properties
//! (so the location it may quote in an error carries none), a track chosen from the SDP
//! (`select-stream`) and each RTP pad linked through the shared [`tracks`](super::tracks).

use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow};
use gst::prelude::*;

use super::ingest::{IngestOptions, Offer};
use super::pcm::PcmOutput;
use super::sink::Session;
use super::tracks::{self, Chain, TrackSetup};
use crate::config::CameraUrl;

/// Adds an `rtspsrc` for `url` to `pipeline`, its tracks linked into `session` as they appear.
pub fn add_source(
    pipeline: &gst::Pipeline,
    camera: &str,
    url: &CameraUrl,
    options: IngestOptions,
    session: &Arc<Session>,
    offer: &Arc<Mutex<Offer>>,
    pcm: PcmOutput,
) -> anyhow::Result<()> {
    let source = rtspsrc(camera, url, options)?;
    pipeline.add(&source)?;

    let chosen = offer.clone();
    let expect = Arc::downgrade(session);
    source.connect("select-stream", false, move |args| {
        let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok())?;
        let take = choose_track(&caps, &mut chosen.lock().unwrap());
        if let Some(session) = expect.upgrade() {
            let offer = chosen.lock().unwrap();
            session.expect(offer.video.is_some(), offer.audio.is_some());
        }
        Some(take.to_value())
    });

    let setup = TrackSetup {
        bin: pipeline,
        camera,
        session,
        unify_audio: options.unify_audio,
        offer,
    };
    tracks::link_each_pad(&source, &setup, pcm, link_rtp_pad);
    Ok(())
}

/// Links one RTP pad of `rtspsrc` through its chain, or swallows a track not selected.
fn link_rtp_pad(setup: &TrackSetup, pad: &gst::Pad, pcm: PcmOutput) -> anyhow::Result<()> {
    let caps = pad.current_caps().context("a camera track without caps")?;
    let s = caps.structure(0).context("empty caps")?;
    let encoding = s
        .get::<&str>("encoding-name")
        .unwrap_or_default()
        .to_ascii_uppercase();
    match Chain::for_rtp(&encoding, s.get::<i32>("clock-rate").ok()) {
        Some(chain) => tracks::link(setup, pad, chain, pcm),
        None => {
            // Not selected, so not expected.
            tracing::debug!(camera = setup.camera, "ignoring a {encoding} track");
            tracks::swallow(setup.bin, pad)
        }
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
pub fn split_credentials(raw: &str) -> anyhow::Result<(String, Option<String>, Option<String>)> {
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
