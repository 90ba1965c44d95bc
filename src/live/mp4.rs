//! Fragmented MP4 viewers: MSE over WebSocket and progressive `stream.mp4` over HTTP. Each
//! viewer owns one pipeline (appsrc → parser → `mp4mux` in fragmented mode → appsink) that
//! starts at the cached keyframe, so the first fragment decodes on its own.
//!
//! Video passes through (H.264 or H.265). Audio is AAC: the camera's own, or from the camera's
//! shared AAC transcoder (PCMA, PCMU, Opus) — never Opus in MP4, whose `dOps` box GStreamer
//! 1.22's mp4mux writes in an order browsers reject. The muxer and `gst-pbutils` write the boxes
//! and the codec string: no MP4 is written by hand. A viewer whose connection cannot keep up is
//! dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gst::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::feed::{self, AudioFrom, FeedTargets};
use super::pipeline::OwnedPipeline;
use super::transcode::Target;
use super::{AudioCodec, Live, LiveError, VideoCodec, ViewerSlot};
use crate::camera::{CameraHandle, ConsumerKind, StreamInfo};

/// Fragment length: short, so a fragment leaves the muxer soon after its frames arrived.
pub const FRAGMENT_MS: u32 = 100;

/// Chunks queued for a viewer's connection before it counts as too slow (a few seconds).
const CHUNK_QUEUE: usize = 512;

/// How long the first fragment may take.
const FIRST_CHUNK_TIMEOUT: Duration = Duration::from_secs(5);

/// What a player says it can play: go2rtc's `mse` message lists codec strings such as
/// `avc1.640029,hvc1.1.6.L153.B0,mp4a.40.2,opus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerCodecs {
    pub h264: bool,
    pub h265: bool,
    pub aac: bool,
}

impl PlayerCodecs {
    /// Everything Vigil can send (players of `stream.mp4`, or an `mse` message without a list).
    pub const ALL: PlayerCodecs = PlayerCodecs {
        h264: true,
        h265: true,
        aac: true,
    };

    /// Reads a comma-separated codec list; an empty list means [`PlayerCodecs::ALL`].
    pub fn parse(list: &str) -> PlayerCodecs {
        let codecs: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if codecs.is_empty() {
            return PlayerCodecs::ALL;
        }
        let has = |prefixes: &[&str]| {
            codecs
                .iter()
                .any(|c| prefixes.iter().any(|p| c.starts_with(p)))
        };
        PlayerCodecs {
            h264: has(&["avc1", "avc3"]),
            h265: has(&["hvc1", "hev1"]),
            aac: has(&["mp4a.40"]),
        }
    }
}

/// How a camera's audio reaches an MP4 viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AudioPlan {
    None,
    /// The camera's AAC as it is.
    Aac,
    /// PCMA, PCMU or Opus through the camera's shared AAC transcoder.
    TranscodedAac,
}

fn audio_plan(audio: Option<AudioCodec>, player: PlayerCodecs) -> AudioPlan {
    match audio {
        _ if !player.aac => AudioPlan::None,
        Some(AudioCodec::Aac) => AudioPlan::Aac,
        Some(_) => AudioPlan::TranscodedAac,
        None => AudioPlan::None,
    }
}

/// A running MP4 viewer: its content type, then its bytes (init segment first).
pub struct Fmp4Stream {
    /// Such as `video/mp4; codecs="avc1.640028,mp4a.40.2"`.
    pub content_type: String,
    /// The init segment, read to learn the codecs, handed out first.
    first: Option<Bytes>,
    chunks: mpsc::Receiver<Bytes>,
    too_slow: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Fmp4Stream {
    /// The next bytes; `None` when the viewer ended (see [`Fmp4Stream::too_slow`]).
    pub async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        tokio::select! {
            chunk = self.chunks.recv() => chunk,
            _ = self.token.cancelled() => None,
        }
    }

    /// Everything queued now, without waiting.
    pub fn try_next(&mut self) -> Option<Bytes> {
        self.first.take().or_else(|| self.chunks.try_recv().ok())
    }

    /// True when the viewer was dropped because its connection did not keep up.
    pub fn too_slow(&self) -> bool {
        self.too_slow.load(Ordering::Relaxed)
    }
}

impl Drop for Fmp4Stream {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Starts an MP4 viewer of `camera` for a player that plays `player`.
pub async fn start(
    live: &Live,
    camera: &CameraHandle,
    player: PlayerCodecs,
    kind: ConsumerKind,
) -> Result<Fmp4Stream, LiveError> {
    let slot = live.viewer_slot(camera)?;
    let (subscription, info) = super::subscribe_with_info(camera, kind).await?;
    let video_codec = info
        .video
        .as_ref()
        .and_then(VideoCodec::of)
        .ok_or_else(|| LiveError::Unsupported("the camera's video is not H.264 or H.265".into()))?;
    let playable = match video_codec {
        VideoCodec::H264 => player.h264,
        VideoCodec::H265 => player.h265,
    };
    if !playable {
        return Err(LiveError::Unsupported(format!(
            "camera '{}' sends {}, which this player cannot play; use the camera's H.264 sub \
             stream",
            camera.name(),
            video_codec.label()
        )));
    }
    let plan = audio_plan(info.audio.as_ref().and_then(AudioCodec::of), player);
    let token = live.token().child_token();
    let (tx, chunks) = mpsc::channel(CHUNK_QUEUE);
    let too_slow = Arc::new(AtomicBool::new(false));
    let built = build(
        camera.name(),
        &info,
        video_codec,
        plan,
        tx,
        &too_slow,
        &token,
    )?;
    let audio = match (plan, built.audio_src.clone()) {
        (AudioPlan::Aac, Some(src)) => Some((src, AudioFrom::Camera)),
        (AudioPlan::TranscodedAac, Some(src)) => {
            let aac = live.transcoded(camera, Target::Aac);
            Some((src, AudioFrom::Transcoded(aac)))
        }
        _ => None,
    };
    built.pipeline.play()?;
    let targets = FeedTargets {
        video: built.video_src.clone(),
        audio,
        follow_caps: false,
        join_audio: None,
    };
    let mut stream = Fmp4Stream {
        content_type: String::new(),
        first: None,
        chunks,
        too_slow,
        token: token.clone(),
    };
    live.spawn(run(
        camera.name().to_string(),
        subscription,
        targets,
        info,
        built.pipeline,
        slot,
        token,
    ));
    // The codec string is known once the muxer has its formats, which is when it writes the
    // init segment: wait for it, and keep it for the caller.
    let first = tokio::time::timeout(FIRST_CHUNK_TIMEOUT, stream.next())
        .await
        .ok()
        .flatten()
        .ok_or_else(|| LiveError::Pipeline {
            what: "MP4",
            detail: "no MP4 data came out of the muxer".into(),
        })?;
    stream.content_type = content_type(&built.mux);
    stream.first = Some(first);
    Ok(stream)
}

/// The viewer task: feeds the pipeline until the viewer, the camera or the pipeline ends.
async fn run(
    camera: String,
    subscription: crate::camera::Subscription,
    targets: FeedTargets,
    info: Arc<StreamInfo>,
    pipeline: OwnedPipeline,
    _slot: ViewerSlot,
    token: CancellationToken,
) {
    tracing::debug!(camera, "MP4 viewer started");
    let failed = pipeline.first_error();
    tokio::select! {
        end = feed::run(subscription, targets, info, token.clone()) => {
            tracing::debug!(camera, ?end, "MP4 viewer ended");
        }
        error = failed => tracing::warn!(camera, "MP4 viewer failed: {error}"),
    }
    token.cancel();
    drop(pipeline);
}

struct Built {
    pipeline: OwnedPipeline,
    video_src: gst_app::AppSrc,
    audio_src: Option<gst_app::AppSrc>,
    mux: gst::Element,
}

fn build(
    camera: &str,
    info: &StreamInfo,
    video_codec: VideoCodec,
    plan: AudioPlan,
    tx: mpsc::Sender<Bytes>,
    too_slow: &Arc<AtomicBool>,
    token: &CancellationToken,
) -> Result<Built, LiveError> {
    let pipeline = OwnedPipeline::new(&format!("{camera}-mp4"), "MP4");
    let add_src = |name: &str, caps: &gst::Caps| {
        let src = feed::appsrc(name, caps);
        pipeline.adopt(&src).map(|_| src)
    };
    let video_caps = info.video.clone().unwrap_or_else(gst::Caps::new_empty);
    let video_src = add_src(&format!("{camera}-mp4-video"), &video_caps)?;
    let parser = match video_codec {
        VideoCodec::H264 => "h264parse",
        VideoCodec::H265 => "h265parse",
    };
    let video_parse = pipeline.add(parser, &format!("{camera}-mp4-vparse"))?;
    let mux = pipeline.add("mp4mux", &format!("{camera}-mp4-mux"))?;
    mux.set_property("fragment-duration", FRAGMENT_MS);
    mux.set_property("streamable", true);
    let sink = pipeline.add_appsink(&format!("{camera}-mp4-sink"))?;
    pipeline.link(&[video_src.upcast_ref(), &video_parse])?;
    link_to_mux(&pipeline, &video_parse, &mux, "video_%u")?;

    let audio_src = match plan {
        AudioPlan::None => None,
        AudioPlan::Aac | AudioPlan::TranscodedAac => {
            // The transcoder's caps (with its codec data) replace these with its first frame.
            let caps = match plan {
                AudioPlan::Aac => info.audio.clone().unwrap_or_else(aac_caps),
                _ => aac_caps(),
            };
            let src = add_src(&format!("{camera}-mp4-audio"), &caps)?;
            let parse = pipeline.add("aacparse", &format!("{camera}-mp4-aparse"))?;
            pipeline.link(&[src.upcast_ref(), &parse])?;
            link_to_mux(&pipeline, &parse, &mux, "audio_%u")?;
            Some(src)
        }
    };
    pipeline.link(&[&mux, sink.upcast_ref()])?;

    let too_slow = too_slow.clone();
    let token = token.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(buffer) = sample.buffer() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Ok(map) = buffer.map_readable() else {
                    gst::element_error!(sink, gst::StreamError::Failed, ["unreadable buffer"]);
                    return Err(gst::FlowError::Error);
                };
                match tx.try_send(Bytes::copy_from_slice(map.as_slice())) {
                    Ok(()) => Ok(gst::FlowSuccess::Ok),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // A gap would corrupt the MP4 stream: drop the viewer instead.
                        too_slow.store(true, Ordering::Relaxed);
                        token.cancel();
                        Err(gst::FlowError::Flushing)
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => Err(gst::FlowError::Flushing),
                }
            })
            .build(),
    );
    Ok(Built {
        pipeline,
        video_src,
        audio_src,
        mux,
    })
}

fn aac_caps() -> gst::Caps {
    gst::Caps::builder("audio/mpeg")
        .field("mpegversion", 4i32)
        .field("stream-format", "raw")
        .build()
}

fn link_to_mux(
    pipeline: &OwnedPipeline,
    from: &gst::Element,
    mux: &gst::Element,
    template: &str,
) -> Result<(), LiveError> {
    let pad = mux
        .request_pad_simple(template)
        .ok_or_else(|| pipeline.error(format!("mp4mux gave no {template} pad")))?;
    let src = from
        .static_pad("src")
        .ok_or_else(|| pipeline.error("an element without a src pad"))?;
    src.link(&pad)
        .map(|_| ())
        .map_err(|e| pipeline.error(format!("cannot link to mp4mux: {e:?}")))
}

/// `video/mp4; codecs="…"` from the formats the muxer's inputs negotiated.
fn content_type(mux: &gst::Element) -> String {
    let codecs: Vec<String> = mux
        .sink_pads()
        .iter()
        .filter_map(|pad| pad.current_caps())
        .filter_map(|caps| gst_pbutils::functions::codec_utils_caps_get_mime_codec(&caps).ok())
        .map(|codec| codec.to_string())
        .collect();
    format!("video/mp4; codecs=\"{}\"", codecs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn player_codec_lists() {
        let go2rtc =
            "avc1.640029,avc1.64002A,avc1.640033,hvc1.1.6.L153.B0,mp4a.40.2,mp4a.40.5,flac,opus";
        assert_eq!(PlayerCodecs::parse(go2rtc), PlayerCodecs::ALL);
        let chrome_no_hevc = PlayerCodecs::parse("avc1.640029,mp4a.40.2,opus");
        assert!(chrome_no_hevc.h264 && !chrome_no_hevc.h265 && chrome_no_hevc.aac);
        assert_eq!(PlayerCodecs::parse(""), PlayerCodecs::ALL);
        assert!(!PlayerCodecs::parse("avc1.640029,opus").aac);
    }

    #[test]
    fn mp4_audio_is_aac_passed_through_or_transcoded() {
        let check = |audio, player: &str, expected| {
            assert_eq!(
                audio_plan(audio, PlayerCodecs::parse(player)),
                expected,
                "{audio:?} {player}"
            );
        };
        check(Some(AudioCodec::Aac), "avc1,mp4a.40.2", AudioPlan::Aac);
        check(
            Some(AudioCodec::Pcma),
            "avc1,mp4a.40.2,opus",
            AudioPlan::TranscodedAac,
        );
        check(
            Some(AudioCodec::Opus),
            "avc1,mp4a.40.2,opus",
            AudioPlan::TranscodedAac,
        );
        check(Some(AudioCodec::Pcmu), "avc1,opus", AudioPlan::None);
        check(None, "avc1,mp4a.40.2", AudioPlan::None);
    }
}
