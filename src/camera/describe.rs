//! What a camera sends, in the words of its status: codec names, resolution, frame rate and
//! audio format, read from the caps its parsers found. Pure functions.

use super::{AudioStatus, VideoStatus};

/// The video track's status from its caps (`video/x-h264` or `video/x-h265`).
pub fn video_status(caps: &gst::CapsRef) -> Option<VideoStatus> {
    let s = caps.structure(0)?;
    let codec = match s.name().as_str() {
        "video/x-h264" => "H.264",
        "video/x-h265" => "H.265",
        _ => return None,
    };
    let fps = s
        .get::<gst::Fraction>("framerate")
        .ok()
        .filter(|f| f.numer() > 0 && f.denom() > 0)
        .map_or(0.0, |f| f.numer() as f32 / f.denom() as f32);
    Some(VideoStatus {
        codec: codec.into(),
        profile: s.get::<String>("profile").ok(),
        width: s.get::<i32>("width").map_or(0, |w| w.max(0) as u32),
        height: s.get::<i32>("height").map_or(0, |h| h.max(0) as u32),
        fps,
    })
}

/// The audio track's status from its caps (as the camera sends it).
pub fn audio_status(caps: &gst::CapsRef) -> Option<AudioStatus> {
    let s = caps.structure(0)?;
    let codec = match s.name().as_str() {
        "audio/mpeg" => "AAC",
        "audio/x-alaw" => "PCMA",
        "audio/x-mulaw" => "PCMU",
        "audio/x-opus" => "Opus",
        _ => return None,
    };
    Some(AudioStatus {
        codec: codec.into(),
        sample_rate: s.get::<i32>("rate").map_or(0, |r| r.max(0) as u32),
        channels: s.get::<i32>("channels").map_or(1, |c| c.max(0) as u32),
        restreamed_as: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(text: &str) -> gst::Caps {
        let _ = gst::init();
        text.parse().unwrap()
    }

    #[test]
    fn video_caps_become_codec_resolution_and_fps() {
        let v = video_status(&caps(
            "video/x-h264, stream-format=byte-stream, alignment=au, width=1920, height=1080, \
             framerate=25/1, profile=high",
        ))
        .unwrap();
        assert_eq!(
            (
                v.codec.as_str(),
                v.profile.as_deref(),
                v.width,
                v.height,
                v.fps
            ),
            ("H.264", Some("high"), 1920, 1080, 25.0)
        );
        let v = video_status(&caps("video/x-h265, width=640, height=360, framerate=0/1")).unwrap();
        assert_eq!((v.codec.as_str(), v.fps), ("H.265", 0.0));
        assert!(video_status(&caps("image/jpeg")).is_none());
    }

    #[test]
    fn audio_caps_become_codec_and_format() {
        let a = audio_status(&caps("audio/x-alaw, rate=8000, channels=1")).unwrap();
        assert_eq!(
            (a.codec.as_str(), a.sample_rate, a.channels),
            ("PCMA", 8000, 1)
        );
        let a = audio_status(&caps("audio/mpeg, mpegversion=4, rate=16000, channels=1")).unwrap();
        assert_eq!(a.codec, "AAC");
        assert_eq!(
            audio_status(&caps("audio/x-opus, rate=48000"))
                .unwrap()
                .channels,
            1
        );
    }
}
