//! From a camera hub subscription into one viewer pipeline's appsrcs: each frame is re-timed by
//! the viewer's own [`ConsumerClock`] (the cached GOP squeezed into milliseconds, so the first
//! picture shows at once and the viewer is live) and pushed without copying its data.
//!
//! Runs as a tokio task; `push_buffer` on a non-blocking appsrc never waits. The feed ends on
//! cancellation, when the camera is gone, when the formats change beyond what the pipeline can
//! follow, or when the pipeline refuses data.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::VideoCodec;
use super::transcode::TranscodedAudio;
use crate::camera::{ConsumerClock, Frame, MediaEvent, StreamInfo, Subscription, Track};

/// Where a viewer's audio comes from.
pub enum AudioFrom {
    /// The camera's own audio frames, passed through.
    Camera,
    /// The camera's shared transcoder (its caps are set on the appsrc with its first frame).
    Transcoded(TranscodedAudio),
}

/// The appsrcs of one viewer pipeline.
pub struct FeedTargets {
    pub video: gst_app::AppSrc,
    pub audio: Option<(gst_app::AppSrc, AudioFrom)>,
    /// Follow a new resolution by changing the appsrc's caps (RTP can, an MP4 file cannot).
    pub follow_caps: bool,
}

/// Why a feed ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEnd {
    /// The viewer or Vigil stopped it.
    Cancelled,
    /// The hub dropped this viewer (too slow) or the camera went away.
    Dropped,
    /// The camera's formats changed in a way the pipeline cannot follow.
    FormatChanged,
    /// The pipeline refused a buffer (it is stopping or failed).
    Refused(String),
}

/// The appsrc settings every viewer uses: live, timestamps from us, never blocking.
pub fn appsrc(name: &str, caps: &gst::Caps) -> gst_app::AppSrc {
    gst_app::AppSrc::builder()
        .name(name)
        .caps(caps)
        .format(gst::Format::Time)
        .is_live(true)
        .do_timestamp(false)
        .block(false)
        // The pipeline keeps up with a live camera; this only bounds memory if it stalls.
        .max_bytes(32 * 1024 * 1024)
        .build()
}

/// Moves frames into `targets` until the feed ends.
pub async fn run(
    mut subscription: Subscription,
    targets: FeedTargets,
    built_for: Arc<StreamInfo>,
    token: CancellationToken,
) -> FeedEnd {
    let FeedTargets {
        video,
        audio,
        follow_caps,
    } = targets;
    let (audio_src, mut transcoded) = match audio {
        Some((src, AudioFrom::Camera)) => (Some(src), None),
        Some((src, AudioFrom::Transcoded(sub))) => (Some(src), Some(sub)),
        None => (None, None),
    };
    let camera_audio = audio_src.is_some() && transcoded.is_none();
    let mut clock = ConsumerClock::new();
    let mut first = [true, true];
    loop {
        let frame = tokio::select! {
            _ = token.cancelled() => return FeedEnd::Cancelled,
            event = subscription.recv() => match event {
                None => return FeedEnd::Dropped,
                Some(MediaEvent::Info(info)) => {
                    if !can_follow(&built_for, &info, follow_caps) {
                        return FeedEnd::FormatChanged;
                    }
                    if let Some(caps) = &info.video {
                        video.set_caps(Some(caps));
                    }
                    clock.reset();
                    continue;
                }
                Some(MediaEvent::Frame(frame)) => {
                    if frame.track == Track::Audio && !camera_audio {
                        continue;
                    }
                    frame
                }
            },
            frame = async { transcoded.as_mut()?.recv().await }, if transcoded.is_some() => {
                match frame {
                    Some(frame) => {
                        if let (Some(src), Some(caps)) =
                            (&audio_src, transcoded.as_ref().and_then(|t| t.caps()))
                            && src.caps().as_ref() != Some(&caps)
                        {
                            src.set_caps(Some(&caps));
                        }
                        frame
                    }
                    None => {
                        // The transcoder stopped (its camera's audio went away): video goes on.
                        transcoded = None;
                        continue;
                    }
                }
            }
        };
        let (src, index) = match frame.track {
            Track::Video => (&video, 0),
            Track::Audio => match &audio_src {
                Some(src) => (src, 1),
                None => continue,
            },
        };
        let buffer = retimed(&frame, &mut clock, std::mem::take(&mut first[index]));
        if let Err(e) = src.push_buffer(buffer) {
            return FeedEnd::Refused(format!("{e:?}"));
        }
    }
}

/// A copy of the frame's buffer (sharing its data) stamped with the viewer's own time.
fn retimed(frame: &Frame, clock: &mut ConsumerClock, discont: bool) -> gst::Buffer {
    let pts = gst::ClockTime::from_nseconds(clock.map(frame).as_nanos() as u64);
    let mut buffer = frame.buffer.clone();
    let writable = buffer.make_mut();
    writable.set_pts(pts);
    writable.set_dts(pts);
    if discont {
        writable.set_flags(gst::BufferFlags::DISCONT);
    }
    buffer
}

/// Whether a pipeline built for `old` can go on with `new`: the same formats, or (when it can
/// follow caps) the same video codec and audio.
fn can_follow(old: &StreamInfo, new: &StreamInfo, follow_caps: bool) -> bool {
    if old == new {
        return true;
    }
    let codec = |info: &StreamInfo| info.video.as_ref().and_then(VideoCodec::of);
    follow_caps && codec(old) == codec(new) && old.audio == new.audio
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(video: &str, width: i32, audio: Option<&str>) -> StreamInfo {
        StreamInfo {
            video: Some(gst::Caps::builder(video).field("width", width).build()),
            audio: audio.map(|a| gst::Caps::builder(a).build()),
        }
    }

    #[test]
    fn which_format_changes_a_pipeline_follows() {
        let _ = gst::init();
        let base = info("video/x-h264", 640, Some("audio/x-alaw"));
        let check = |new: StreamInfo, follow: bool, expected: bool| {
            assert_eq!(
                can_follow(&base, &new, follow),
                expected,
                "{new:?} {follow}"
            );
        };
        check(info("video/x-h264", 640, Some("audio/x-alaw")), false, true);
        check(info("video/x-h264", 1280, Some("audio/x-alaw")), true, true);
        check(
            info("video/x-h264", 1280, Some("audio/x-alaw")),
            false,
            false,
        );
        check(info("video/x-h265", 640, Some("audio/x-alaw")), true, false);
        check(info("video/x-h264", 640, None), true, false);
    }
}
