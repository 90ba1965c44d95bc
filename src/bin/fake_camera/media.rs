//! The fake camera's stream, as varied as real cameras send theirs: the launch description
//! (encoder, slices, SEI, RTP timestamps near their wrap, audio format), where the parameter sets
//! travel (in band, in the SDP, or both), and a resolution change while streaming.

use std::sync::{Arc, Mutex};

use clap::ValueEnum;
use gst::glib;
use gst::prelude::*;
use gst_rtsp_server::prelude::*;
use gst_rtsp_server::subclass::prelude::*;

use crate::{Args, AudioCodec, VideoCodec};

/// Where the camera sends its parameter sets (SPS/PPS, and VPS for H.265).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ParameterSets {
    /// In front of every keyframe, and in the SDP (`sprop-parameter-sets`).
    Both,
    /// In front of every keyframe only: the SDP has none.
    InBand,
    /// In the SDP only: never in the stream.
    Sdp,
}

/// Name of the capsfilter that sets the picture size (changed by `resize`).
const SIZE: &str = "size";
/// Name of the identity in front of the payloader whose pad drops in-band parameter sets.
const STRIP: &str = "strip";

/// The shared media's launch description: video from a live test pattern, and the audio track
/// fed by [`crate::audio`].
pub fn launch_description(args: &Args) -> String {
    let sdp_only = args.parameter_sets == ParameterSets::Sdp;
    // Parameter sets are repeated in band (before every IDR slice, as rtph26xpay does) unless the
    // camera sends them only in the SDP; there the stream carries them in codec_data (avc/hvc1)
    // and the identity drops the encoder's in-band copies.
    let config_interval = if sdp_only { 0 } else { -1 };
    let strip = format!("identity name={STRIP} silent=true");
    let encode = match args.video {
        VideoCodec::H264 => {
            let mut options = format!("slices={}", args.slices);
            if args.sei {
                // Buffering period and picture timing SEI on every frame, as broadcast-minded
                // cameras send.
                let rate = args.bitrate;
                options.push_str(&format!(
                    ":nal-hrd=vbr:vbv-maxrate={rate}:vbv-bufsize={rate}"
                ));
            }
            let format = if sdp_only { "avc" } else { "byte-stream" };
            format!(
                "x264enc tune=zerolatency speed-preset=ultrafast bframes=0 bitrate={} \
                 key-int-max={} threads=1 sliced-threads=false option-string={options} \
                 ! video/x-h264,stream-format={format} ! {strip} \
                 ! rtph264pay name=pay0 pt=96 config-interval={config_interval}{}",
                args.bitrate,
                args.gop,
                timestamp_offset(args.rtp_wrap_after, 90_000),
            )
        }
        VideoCodec::H265 => {
            let format = if sdp_only { "hvc1" } else { "byte-stream" };
            format!(
                "x265enc tune=zerolatency speed-preset=ultrafast bitrate={} key-int-max={} \
                 option-string=slices={} ! h265parse ! video/x-h265,stream-format={format} \
                 ! {strip} ! rtph265pay name=pay0 pt=96 config-interval={config_interval}{}",
                args.bitrate,
                args.gop,
                args.slices,
                timestamp_offset(args.rtp_wrap_after, 90_000),
            )
        }
    };
    let audio = audio_branch(args).unwrap_or_default();
    format!(
        "( videotestsrc is-live=true pattern={} \
         ! capsfilter name={SIZE} caps=video/x-raw,width={},height={},framerate={}/1 \
         ! {encode} {audio} )",
        args.pattern, args.width, args.height, args.fps
    )
}

fn audio_branch(args: &Args) -> Option<String> {
    let rate = args.audio_rate();
    let pay = match args.audio {
        AudioCodec::Aac => format!(
            "audio/x-raw,channels={} ! voaacenc bitrate=32000 ! aacparse \
             ! rtpmp4gpay name=pay1 pt=97 max-ptime=64000000",
            args.audio_channels
        ),
        AudioCodec::Pcma => "alawenc ! rtppcmapay name=pay1".into(),
        AudioCodec::Pcmu => "mulawenc ! rtppcmupay name=pay1".into(),
        AudioCodec::Opus => "opusenc ! rtpopuspay name=pay1 pt=98".into(),
        AudioCodec::None => return None,
    };
    let clock_rate = if args.audio == AudioCodec::Opus {
        48_000
    } else {
        rate
    };
    Some(format!(
        "appsrc name={} is-live=true format=time do-timestamp=true \
         caps=audio/x-raw,format=S16LE,layout=interleaved,channels=1,rate={rate} \
         ! audioconvert ! {pay}{}",
        crate::audio::SOURCE_NAME,
        timestamp_offset(args.rtp_wrap_after, clock_rate),
    ))
}

/// The payloader's `timestamp-offset` that makes its RTP timestamps wrap past 2^32 after
/// `seconds` of streaming.
fn timestamp_offset(seconds: Option<u32>, clock_rate: u32) -> String {
    seconds.map_or(String::new(), |s| {
        let before_wrap = u64::from(s) * u64::from(clock_rate);
        format!(
            " timestamp-offset={}",
            (1u64 << 32).saturating_sub(before_wrap)
        )
    })
}

/// Sets up a new shared media: drops in-band parameter sets where the camera sends them in the
/// SDP only, and keeps the media for `resize`.
pub fn configure(media: &gst_rtsp_server::RTSPMedia, args: &Args, current: &CurrentMedia) {
    let Some(bin) = media.element().downcast::<gst::Bin>().ok() else {
        return;
    };
    if args.parameter_sets == ParameterSets::Sdp
        && let Some(pad) = bin.by_name(STRIP).and_then(|e| e.static_pad("src"))
    {
        let codec = args.video;
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() {
                *buffer = without_parameter_sets(buffer, codec);
            }
            gst::PadProbeReturn::Ok
        });
    }
    *current.0.lock().unwrap() = Some(bin.downgrade());
}

/// The shared media, once a client made it.
#[derive(Default, Clone)]
pub struct CurrentMedia(Arc<Mutex<Option<glib::WeakRef<gst::Bin>>>>);

impl CurrentMedia {
    /// Changes the picture size while streaming: the encoder starts again with a keyframe and
    /// new parameter sets, as a camera does when its resolution is changed in its settings.
    pub fn resize(&self, width: u32, height: u32) -> anyhow::Result<()> {
        let bin = self
            .0
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|weak| weak.upgrade())
            .ok_or_else(|| anyhow::anyhow!("nobody is watching yet"))?;
        let size = bin
            .by_name(SIZE)
            .ok_or_else(|| anyhow::anyhow!("no size filter"))?;
        let caps = size.property::<gst::Caps>("caps");
        let mut caps = caps.copy();
        caps.make_mut()
            .set("width", i32::try_from(width).unwrap_or(i32::MAX));
        caps.make_mut()
            .set("height", i32::try_from(height).unwrap_or(i32::MAX));
        size.set_property("caps", caps);
        Ok(())
    }
}

/// An avc/hvc1 sample (4-byte lengths) without its SPS/PPS (and VPS).
fn without_parameter_sets(buffer: &gst::Buffer, codec: VideoCodec) -> gst::Buffer {
    let Ok(map) = buffer.map_readable() else {
        return buffer.clone();
    };
    let is_parameter_set = |header: u8| match codec {
        VideoCodec::H264 => matches!(header & 0x1f, 7 | 8),
        VideoCodec::H265 => matches!((header >> 1) & 0x3f, 32..=34),
    };
    let mut kept = Vec::with_capacity(map.len());
    let mut at = 0;
    while at + 4 < map.len() {
        let len = u32::from_be_bytes([map[at], map[at + 1], map[at + 2], map[at + 3]]) as usize;
        let end = (at + 4 + len).min(map.len());
        if !is_parameter_set(map[at + 4]) {
            kept.extend_from_slice(&map[at..end]);
        }
        at = end;
    }
    drop(map);
    let mut out = gst::Buffer::from_mut_slice(kept);
    {
        let out_mut = out.get_mut().expect("a new buffer is writable");
        let _ = buffer.copy_into(
            out_mut,
            gst::BufferCopyFlags::FLAGS | gst::BufferCopyFlags::TIMESTAMPS,
            ..,
        );
    }
    out
}

/// A media whose SDP carries no parameter sets (`--parameter-sets in-band`).
mod imp {
    use super::*;

    #[derive(Default)]
    pub struct InBandMedia;

    #[glib::object_subclass]
    impl ObjectSubclass for InBandMedia {
        const NAME: &'static str = "FakeCameraInBandMedia";
        type Type = super::InBandMedia;
        type ParentType = gst_rtsp_server::RTSPMedia;
    }

    impl ObjectImpl for InBandMedia {}

    impl RTSPMediaImpl for InBandMedia {
        fn setup_sdp(
            &self,
            sdp: &mut gst_sdp::SDPMessageRef,
            info: &gst_rtsp_server::subclass::SDPInfo,
        ) -> Result<(), gst::LoggableError> {
            self.parent_setup_sdp(sdp, info)?;
            for index in 0..sdp.medias_len() {
                let Some(media) = sdp.media_mut(index) else {
                    continue;
                };
                let attributes: Vec<(String, Option<String>)> = media
                    .attributes()
                    .map(|a| (a.key().to_string(), a.value().map(str::to_string)))
                    .collect();
                for (at, (key, value)) in attributes.iter().enumerate().rev() {
                    let Some(value) = value.as_deref().filter(|_| key == "fmtp") else {
                        continue;
                    };
                    // `96 packetization-mode=1;sprop-parameter-sets=…;profile-level-id=…`
                    let (payload, parameters) = value.split_once(' ').unwrap_or((value, ""));
                    let kept: Vec<&str> = parameters
                        .split(';')
                        .map(str::trim)
                        .filter(|p| !p.is_empty() && !p.starts_with("sprop-"))
                        .collect();
                    let value = format!("{payload} {}", kept.join(";"));
                    let attribute = gst_sdp::SDPAttribute::new("fmtp", Some(&value));
                    let _ = media.replace_attribute(at as u32, attribute);
                }
            }
            Ok(())
        }
    }
}

glib::wrapper! {
    /// See [`imp::InBandMedia`].
    pub struct InBandMedia(ObjectSubclass<imp::InBandMedia>)
        @extends gst_rtsp_server::RTSPMedia;
}
