//! Reads a browser's WebRTC offer (with `gst-sdp`, not by hand) and decides what to answer:
//! which m-line carries the video and on which payload type, which carries the audio and how.
//!
//! Pure: no pipeline, no I/O. The rules, each tested below:
//! - H.264 goes on an H.264 payload type the offer has, preferring `packetization-mode=1` and a
//!   profile the stream really uses, then Constrained Baseline (which every browser decodes),
//!   then any. Browsers decode High even when they offer only Baseline/Main (Debian's Chromium
//!   offers no High), so the answer keeps the offer's `profile-level-id`.
//! - H.265 only where the offer has H.265; otherwise an error that says to use an H.264 stream.
//! - Audio as the camera sends it where the offer takes it (G.711 at 8 kHz mono as PCMA or
//!   PCMU, which Chromium and the companion app offer; Opus), so nothing is decoded; else as
//!   Opus from the camera's shared transcoder, on the offer's Opus payload type.

use std::time::Duration;

use gst_sdp::{SDPMediaRef, SDPMessage};

use crate::live::{AudioCodec, LiveError, VideoCodec};

/// One m-line of the offer and what to send on it.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaChoice {
    /// The m-line index (webrtcbin's transceiver index).
    pub mline: u32,
    pub payload: u32,
    /// The codec preferences for the transceiver: the offer's caps for `payload`, without its
    /// profile (so the payloader takes the stream's real profile).
    pub caps: gst::Caps,
    /// The offer's format parameters for `payload` (`a=fmtp:` without the payload type).
    pub fmtp: Option<String>,
}

/// What to answer to one offer.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerPlan {
    pub video: MediaChoice,
    /// `None` when the camera sends no audio, or the offer has no audio m-line or neither the
    /// camera's codec nor Opus in it. Other m-lines (a second video, data) get nothing:
    /// webrtcbin answers them as not used.
    pub audio: Option<AudioChoice>,
}

/// The audio m-line and how its audio is made.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioChoice {
    pub media: MediaChoice,
    pub send: AudioSend,
    /// The offer's `a=maxptime:` (the longest packet it takes), if it says.
    pub max_ptime: Option<Duration>,
}

/// How much G.711 goes in one packet: a third of the packets of the usual 20 ms, and each
/// packet costs a viewer a trip through webrtcbin. Browsers take any length; the RTSP restream
/// joins as much.
pub const G711_PACKET_SPAN: Duration = Duration::from_millis(60);

impl AudioChoice {
    /// How long the camera's frames are joined into one packet (G.711; other codecs are not).
    pub fn packet_span(&self) -> Duration {
        self.max_ptime
            .map_or(G711_PACKET_SPAN, |max| max.min(G711_PACKET_SPAN))
    }
}

/// How a viewer's audio is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioSend {
    /// The camera's own frames, payloaded as they are (G.711 or Opus).
    Camera(AudioCodec),
    /// Opus from the camera's shared transcoder.
    Transcoded,
}

/// Parses `sdp` and checks that it is an offer a WebRTC peer can answer.
pub fn parse_offer(sdp: &str) -> Result<SDPMessage, LiveError> {
    let bad = |why: &str| LiveError::BadOffer(why.to_string());
    if !sdp.trim_start().starts_with("v=0") {
        return Err(bad("an SDP offer starts with 'v=0'"));
    }
    let message = SDPMessage::parse_buffer(sdp.as_bytes())
        .map_err(|_| bad("the SDP text cannot be parsed"))?;
    if message.medias_len() == 0 {
        return Err(bad("it has no media (m=) lines"));
    }
    let has_attribute = |key: &str| {
        message.attribute_val(key).is_some()
            || (0..message.medias_len())
                .filter_map(|i| message.media(i))
                .any(|m| m.attribute_val(key).is_some())
    };
    for key in ["ice-ufrag", "ice-pwd", "fingerprint"] {
        if !has_attribute(key) {
            return Err(LiveError::BadOffer(format!(
                "it has no a={key} line (is it a WebRTC offer?)"
            )));
        }
    }
    Ok(message)
}

/// Decides what to send on which m-line of `offer` for a stream of `video` codec whose H.264
/// profile is `profile` (GStreamer's name, such as `high`, if known) and whose audio has the
/// caps `audio` (the hub's, `None` without audio).
pub fn plan(
    offer: &SDPMessage,
    camera: &str,
    video: VideoCodec,
    profile: Option<&str>,
    audio: Option<&gst::Caps>,
) -> Result<AnswerPlan, LiveError> {
    let mut chosen_video = None;
    let mut chosen_audio = None;
    let mut offered_video = Vec::new();
    for mline in 0..offer.medias_len() {
        let Some(media) = offer.media(mline) else {
            continue;
        };
        let usable = media.port() != 0 && receives(media);
        match media.media() {
            Some("video") if usable && chosen_video.is_none() => {
                offered_video.extend(codec_names(media));
                chosen_video = choose_video(media, mline, video, profile);
            }
            Some("audio") if usable && chosen_audio.is_none() => {
                if let Some(caps) = audio {
                    chosen_audio = choose_audio(media, mline, caps);
                }
            }
            _ => {}
        }
    }
    let Some(video_choice) = chosen_video else {
        if offered_video.is_empty() {
            return Err(LiveError::BadOffer(
                "it asks for no video (no m=video line that receives)".into(),
            ));
        }
        offered_video.sort();
        offered_video.dedup();
        let offered = offered_video.join(", ");
        return Err(LiveError::Unsupported(match video {
            VideoCodec::H265 => format!(
                "camera '{camera}' sends H.265, which this browser does not offer over WebRTC \
                 (it offers {offered}); switch the camera's sub stream to H.264, give it as the \
                 camera's sub_url and watch its _sub stream, or watch with MSE"
            ),
            VideoCodec::H264 => format!(
                "camera '{camera}' sends H.264, but the offer has no usable H.264 (it offers \
                 {offered})"
            ),
        }));
    };
    Ok(AnswerPlan {
        video: video_choice,
        audio: chosen_audio,
    })
}

/// True for an m-line on which the offerer receives (`recvonly`, `sendrecv` or unspecified).
fn receives(media: &SDPMediaRef) -> bool {
    !media
        .attributes()
        .any(|a| matches!(a.key(), "sendonly" | "inactive"))
}

/// The payload types of `media`, with their caps.
fn payloads(media: &SDPMediaRef) -> impl Iterator<Item = (u32, gst::Caps)> + '_ {
    media.formats().filter_map(|format| {
        let pt = format.parse::<u32>().ok()?;
        let caps = media.caps_from_media(pt as i32)?;
        Some((pt, caps))
    })
}

fn codec_names(media: &SDPMediaRef) -> Vec<String> {
    payloads(media)
        .filter_map(|(_, caps)| field(&caps, "encoding-name"))
        .filter(|name| !matches!(name.as_str(), "RTX" | "RED" | "ULPFEC" | "FLEXFEC-03"))
        .collect()
}

fn field(caps: &gst::Caps, name: &str) -> Option<String> {
    caps.structure(0)?.get::<String>(name).ok()
}

fn choose_video(
    media: &SDPMediaRef,
    mline: u32,
    video: VideoCodec,
    profile: Option<&str>,
) -> Option<MediaChoice> {
    if video == VideoCodec::H265 {
        return choose(media, mline, "H265");
    }
    let h264: Vec<(u32, gst::Caps)> = payloads(media)
        .filter(|(_, caps)| field(caps, "encoding-name").as_deref() == Some("H264"))
        .collect();
    // Higher is better: packetization-mode=1 first, then the stream's own profile, then
    // Constrained Baseline.
    // gst-sdp reads `profile-level-id` into GStreamer's profile name (`profile`).
    let score = |caps: &gst::Caps| {
        let mode1 = field(caps, "packetization-mode").as_deref() == Some("1");
        let offered = field(caps, "profile");
        let same_profile = profile.is_some() && offered.as_deref() == profile;
        let constrained_baseline = offered.as_deref() == Some("constrained-baseline");
        (mode1, same_profile, constrained_baseline)
    };
    let (pt, caps) = h264
        .iter()
        .enumerate()
        // The offer's own order breaks ties (earlier = preferred by the browser).
        .max_by_key(|(i, (_, caps))| (score(caps), std::cmp::Reverse(*i)))
        .map(|(_, choice)| choice.clone())?;
    Some(MediaChoice {
        mline,
        payload: pt,
        caps: preferences(&caps),
        fmtp: fmtp(media, pt),
    })
}

/// The camera's own audio where `media` takes it, else Opus from the transcoder.
fn choose_audio(media: &SDPMediaRef, mline: u32, camera_audio: &gst::Caps) -> Option<AudioChoice> {
    let max_ptime = media
        .attribute_val("maxptime")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    let own = AudioCodec::of(camera_audio).and_then(|codec| {
        let encoding = webrtc_encoding(codec, camera_audio)?;
        choose(media, mline, encoding).map(|media| AudioChoice {
            media,
            send: AudioSend::Camera(codec),
            max_ptime,
        })
    });
    own.or_else(|| {
        choose(media, mline, "OPUS").map(|media| AudioChoice {
            media,
            send: AudioSend::Transcoded,
            max_ptime,
        })
    })
}

/// The RTP encoding name under which WebRTC carries audio of these caps untouched, if it can:
/// G.711 only at 8 kHz mono (the rate and channels its static payload types stand for).
fn webrtc_encoding(codec: AudioCodec, caps: &gst::Caps) -> Option<&'static str> {
    let s = caps.structure(0)?;
    let narrowband =
        s.get::<i32>("rate").ok() == Some(8000) && s.get::<i32>("channels").unwrap_or(1) == 1;
    match codec {
        AudioCodec::Pcma if narrowband => Some("PCMA"),
        AudioCodec::Pcmu if narrowband => Some("PCMU"),
        AudioCodec::Opus => Some("OPUS"),
        _ => None,
    }
}

/// The first payload type of `encoding` (RTP encoding name, upper case) in `media`.
fn choose(media: &SDPMediaRef, mline: u32, encoding: &str) -> Option<MediaChoice> {
    let (pt, caps) = payloads(media)
        .find(|(_, caps)| field(caps, "encoding-name").as_deref() == Some(encoding))?;
    Some(MediaChoice {
        mline,
        payload: pt,
        caps: preferences(&caps),
        fmtp: fmtp(media, pt),
    })
}

/// The `a=fmtp:<pt> …` parameters of `media` for `pt`.
fn fmtp(media: &SDPMediaRef, pt: u32) -> Option<String> {
    let prefix = format!("{pt} ");
    media
        .attributes()
        .filter(|a| a.key() == "fmtp")
        .filter_map(|a| a.value())
        .find_map(|v| v.strip_prefix(&prefix).map(|p| p.trim().to_string()))
}

/// Writes `parameters` as the answer's `a=fmtp:` line for `pt` on m-line `mline` (webrtcbin
/// 1.22 drops the offer's `profile-level-id` from its answer).
pub fn set_fmtp(answer: &mut gst_sdp::SDPMessageRef, mline: u32, pt: u32, parameters: &str) {
    let Some(media) = answer.media_mut(mline) else {
        return;
    };
    let prefix = format!("{pt} ");
    let existing = (0..media.attributes_len()).find(|&i| {
        media
            .attribute(i)
            .is_some_and(|a| a.key() == "fmtp" && a.value().is_some_and(|v| v.starts_with(&prefix)))
    });
    let value = format!("{pt} {parameters}");
    match existing {
        Some(i) => {
            let _ = media.replace_attribute(i, gst_sdp::SDPAttribute::new("fmtp", Some(&value)));
        }
        None => media.add_attribute("fmtp", Some(&value)),
    }
}

/// The codec preferences for a transceiver: what identifies the payload type, nothing that
/// would stop the payloader from sending the stream as it is.
fn preferences(offered: &gst::Caps) -> gst::Caps {
    const KEEP: &[&str] = &[
        "media",
        "payload",
        "clock-rate",
        "encoding-name",
        "encoding-params",
        "packetization-mode",
    ];
    let mut caps = offered.clone();
    if let Some(s) = caps.make_mut().structure_mut(0) {
        // gst-sdp names it application/x-unknown; webrtcbin compares with application/x-rtp.
        s.set_name("application/x-rtp");
        let names: Vec<String> = s.fields().map(|f| f.to_string()).collect();
        for name in names {
            if !KEEP.contains(&name.as_str()) {
                s.remove_field(name.as_str());
            }
        }
    }
    caps
}

/// The H.264 profile of a stream (GStreamer's name, such as `high`), from its caps.
pub fn h264_profile(caps: &gst::Caps) -> Option<String> {
    caps.structure(0)?.get::<String>("profile").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\na=fingerprint:sha-256 00:11\r\n";
    const ICE: &str = "c=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
        a=setup:actpass\r\na=rtcp-mux\r\n";

    /// An offer shaped like Debian's Chromium: Baseline, Constrained Baseline and Main, no High.
    fn chromium_like(audio_first: bool) -> String {
        let video = format!(
            "m=video 9 UDP/TLS/RTP/SAVPF 96 102 103 104 108 116\r\n{ICE}a=mid:v\r\na=recvonly\r\n\
             a=rtpmap:96 VP8/90000\r\n\
             a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
             a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n\
             a=rtpmap:104 H264/90000\r\na=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\n\
             a=rtpmap:108 H264/90000\r\na=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
             a=rtpmap:116 H264/90000\r\na=fmtp:116 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f\r\n"
        );
        let audio = format!(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\n{ICE}a=mid:a\r\na=recvonly\r\n\
             a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
             a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        );
        if audio_first {
            format!("{HEAD}{audio}{video}")
        } else {
            format!("{HEAD}{video}{audio}")
        }
    }

    /// (video m-line, video payload type, (audio m-line, audio payload type)).
    type Expected = (u32, u32, Option<(u32, u32)>);

    fn check(
        offer: &str,
        video: VideoCodec,
        profile: Option<&str>,
        expected: Result<Expected, &str>,
    ) {
        let _ = gst::init();
        let aac = aac();
        let got = parse_offer(offer).and_then(|o| plan(&o, "nursery", video, profile, Some(&aac)));
        match (got, expected) {
            (Ok(plan), Ok((vline, vpt, audio))) => {
                assert_eq!((plan.video.mline, plan.video.payload), (vline, vpt));
                assert_eq!(plan.audio.map(|a| (a.media.mline, a.media.payload)), audio);
                let prefs = plan.video.caps.structure(0).unwrap();
                assert!(!prefs.has_field("profile"), "{prefs}");
                assert!(!prefs.has_field("profile-level-id"), "{prefs}");
            }
            (Err(e), Err(words)) => {
                let text = e.to_string();
                assert!(text.contains(words), "{text:?} lacks {words:?}");
            }
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn high_profile_goes_on_constrained_baseline_when_high_is_not_offered() {
        check(
            &chromium_like(false),
            VideoCodec::H264,
            Some("high"),
            Ok((0, 108, Some((1, 111)))),
        );
    }

    #[test]
    fn the_answer_keeps_the_offers_format_parameters() {
        let _ = gst::init();
        let offer = parse_offer(&chromium_like(false)).unwrap();
        let plan = plan(
            &offer,
            "nursery",
            VideoCodec::H264,
            Some("high"),
            Some(&aac()),
        )
        .unwrap();
        let fmtp = plan.video.fmtp.clone().unwrap();
        assert!(fmtp.contains("profile-level-id=42e01f"), "{fmtp}");
        // An answer as webrtcbin writes it, without the profile.
        let mut answer = offer.clone();
        set_fmtp(&mut answer, 0, 108, &fmtp);
        let text = answer.as_text().unwrap();
        assert!(text.contains(&format!("a=fmtp:108 {fmtp}\r\n")), "{text}");
        assert_eq!(text.matches("a=fmtp:108 ").count(), 1, "{text}");
    }

    #[test]
    fn the_streams_own_profile_wins_when_offered() {
        check(
            &chromium_like(false),
            VideoCodec::H264,
            Some("main"),
            Ok((0, 116, Some((1, 111)))),
        );
    }

    #[test]
    fn audio_first_offers_map_by_mline() {
        check(
            &chromium_like(true),
            VideoCodec::H264,
            Some("high"),
            Ok((1, 108, Some((0, 111)))),
        );
    }

    #[test]
    fn h265_needs_h265_in_the_offer() {
        check(&chromium_like(false), VideoCodec::H265, None, Err("switch"));
        check(&chromium_like(false), VideoCodec::H265, None, Err("H.264"));
        let with_hevc =
            chromium_like(false).replace("a=rtpmap:96 VP8/90000", "a=rtpmap:96 H265/90000");
        check(
            &with_hevc,
            VideoCodec::H265,
            None,
            Ok((0, 96, Some((1, 111)))),
        );
    }

    fn aac() -> gst::Caps {
        gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .field("rate", 16000i32)
            .field("channels", 1i32)
            .build()
    }

    fn g711(name: &str, rate: i32) -> gst::Caps {
        gst::Caps::builder(name)
            .field("rate", rate)
            .field("channels", 1i32)
            .build()
    }

    /// The audio plan for a camera whose hub audio has `caps`: (payload type, how it is made).
    fn audio_plan(offer: &str, caps: Option<&gst::Caps>) -> Option<(u32, AudioSend)> {
        let _ = gst::init();
        let offer = parse_offer(offer).unwrap();
        plan(&offer, "nursery", VideoCodec::H264, Some("high"), caps)
            .unwrap()
            .audio
            .map(|a| (a.media.payload, a.send))
    }

    #[test]
    fn g711_cameras_are_heard_untranscoded_where_the_offer_takes_g711() {
        let offer = chromium_like(false);
        let pcma = g711("audio/x-alaw", 8000);
        let pcmu = g711("audio/x-mulaw", 8000);
        assert_eq!(
            audio_plan(&offer, Some(&pcma)),
            Some((8, AudioSend::Camera(AudioCodec::Pcma)))
        );
        assert_eq!(
            audio_plan(&offer, Some(&pcmu)),
            Some((0, AudioSend::Camera(AudioCodec::Pcmu)))
        );
        // AAC, G.711 at another rate than WebRTC's 8 kHz, and an offer without G.711: Opus.
        assert_eq!(
            audio_plan(&offer, Some(&aac())),
            Some((111, AudioSend::Transcoded))
        );
        assert_eq!(
            audio_plan(&offer, Some(&g711("audio/x-alaw", 16000))),
            Some((111, AudioSend::Transcoded))
        );
        let opus_only = offer.replace("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", "");
        assert_ne!(opus_only, offer);
        assert_eq!(
            audio_plan(&opus_only, Some(&pcma)),
            Some((111, AudioSend::Transcoded))
        );
        // A camera without audio gets no audio m-line.
        assert_eq!(audio_plan(&offer, None), None);
    }

    #[test]
    fn g711_goes_in_60_ms_packets_unless_the_offer_takes_less() {
        let _ = gst::init();
        let span = |offer: &str| {
            let offer = parse_offer(offer).unwrap();
            let pcma = g711("audio/x-alaw", 8000);
            plan(&offer, "nursery", VideoCodec::H264, None, Some(&pcma))
                .unwrap()
                .audio
                .unwrap()
                .packet_span()
        };
        let offer = chromium_like(false);
        assert_eq!(span(&offer), Duration::from_millis(60));
        let at_most_40 = offer.replace(
            "a=rtpmap:8 PCMA/8000\r\n",
            "a=rtpmap:8 PCMA/8000\r\na=maxptime:40\r\n",
        );
        assert_ne!(at_most_40, offer);
        assert_eq!(span(&at_most_40), Duration::from_millis(40));
    }

    #[test]
    fn broken_offers_say_what_is_wrong() {
        check("hello", VideoCodec::H264, None, Err("v=0"));
        check(
            &chromium_like(false).replace("a=ice-ufrag:abcd\r\n", ""),
            VideoCodec::H264,
            None,
            Err("ice-ufrag"),
        );
        let audio_only =
            format!("{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{ICE}a=rtpmap:111 opus/48000/2\r\n");
        check(&audio_only, VideoCodec::H264, None, Err("no video"));
        let vp8_only = chromium_like(false)
            .lines()
            .filter(|l| !l.contains("H264") && !l.contains("fmtp:10"))
            .collect::<Vec<_>>()
            .join("\r\n");
        check(&vp8_only, VideoCodec::H264, None, Err("no usable H.264"));
    }
}
