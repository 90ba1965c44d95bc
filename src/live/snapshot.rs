//! JPEG snapshots: the camera's last keyframe decoded by a small GStreamer pipeline
//! (appsrc → parser → decoder → scale → jpegenc → appsink), in this process, on a blocking
//! thread. The result is cached per keyframe and size, so a dashboard polling stills costs one
//! decode per GOP.
//!
//! The only place where Vigil decodes video. Starts no process and subscribes to nothing: the
//! hub keeps the last keyframe for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use gst::prelude::*;

use super::pipeline::OwnedPipeline;
use super::{LiveError, VideoCodec};
use crate::camera::CameraHandle;

/// The largest side a snapshot may be scaled to.
pub const MAX_SNAPSHOT_SIDE: u32 = 7680;

/// How long one decode may take before the request fails.
const DECODE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sizes cached per camera (a dashboard asks for one or two).
const CACHED_SIZES: usize = 4;

/// The size a snapshot is asked for: `None` keeps the camera's size (or its aspect ratio when
/// only the other side is given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SnapshotSize {
    pub width: Option<u32>,
    pub height: Option<u32>,
}

impl SnapshotSize {
    /// Checks the requested sides, with an error naming the parameter.
    pub fn new(width: Option<u32>, height: Option<u32>) -> Result<Self, LiveError> {
        for (name, side) in [("width", width), ("height", height)] {
            if let Some(side) = side
                && !(1..=MAX_SNAPSHOT_SIDE).contains(&side)
            {
                return Err(LiveError::BadRequest(format!(
                    "{name}={side} is out of range; use 1 to {MAX_SNAPSHOT_SIDE}, or leave it out \
                     for the camera's own size"
                )));
            }
        }
        Ok(Self { width, height })
    }

    /// The output size for a picture of `native` size: a missing side keeps the aspect ratio,
    /// rounded to an even number (what the encoder's chroma subsampling wants).
    pub fn resolve(self, native: (u32, u32)) -> (u32, u32) {
        let (w, h) = (native.0.max(1), native.1.max(1));
        let even = |x: f64| ((x / 2.0).round() as u32 * 2).max(2);
        match (self.width, self.height) {
            (None, None) => (w, h),
            (Some(width), Some(height)) => (width, height),
            (Some(width), None) => (width, even(f64::from(h) * f64::from(width) / f64::from(w))),
            (None, Some(height)) => (
                even(f64::from(w) * f64::from(height) / f64::from(h)),
                height,
            ),
        }
    }
}

/// A JPEG with the camera-timeline time of the keyframe it shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub jpeg: bytes::Bytes,
    pub width: u32,
    pub height: u32,
    /// True when it came from the cache.
    pub cached: bool,
}

#[derive(Clone)]
struct CacheEntry {
    keyframe_pts: Duration,
    size: SnapshotSize,
    snapshot: Snapshot,
}

/// The snapshot service with its per-camera cache.
#[derive(Default)]
pub struct Snapshots {
    cache: Mutex<HashMap<String, Vec<CacheEntry>>>,
}

impl Snapshots {
    /// A JPEG of `camera`'s last keyframe at `size`.
    pub async fn take(
        &self,
        camera: &CameraHandle,
        size: SnapshotSize,
    ) -> Result<Snapshot, LiveError> {
        let Some((info, keyframe)) = camera.last_keyframe() else {
            return Err(LiveError::NoPicture {
                camera: camera.name().to_string(),
                why: "no keyframe has arrived since the camera connected".into(),
            });
        };
        if let Some(hit) = self.cached(camera.name(), keyframe.pts, size) {
            return Ok(hit);
        }
        let caps = info.video.clone().ok_or_else(|| LiveError::NoPicture {
            camera: camera.name().to_string(),
            why: "the camera sends no video".into(),
        })?;
        let name = camera.name().to_string();
        let buffer = keyframe.buffer.clone();
        let snapshot = tokio::task::spawn_blocking(move || decode(&name, &caps, buffer, size))
            .await
            .map_err(|e| LiveError::Pipeline {
                what: "snapshot",
                detail: e.to_string(),
            })??;
        self.store(camera.name(), keyframe.pts, size, &snapshot);
        Ok(snapshot)
    }

    fn cached(&self, camera: &str, pts: Duration, size: SnapshotSize) -> Option<Snapshot> {
        let cache = self.cache.lock().unwrap();
        let entry = cache
            .get(camera)?
            .iter()
            .find(|e| e.keyframe_pts == pts && e.size == size)?;
        Some(Snapshot {
            cached: true,
            ..entry.snapshot.clone()
        })
    }

    fn store(&self, camera: &str, pts: Duration, size: SnapshotSize, snapshot: &Snapshot) {
        let mut cache = self.cache.lock().unwrap();
        let entries = cache.entry(camera.to_string()).or_default();
        // Entries of older keyframes are of no use any more.
        entries.retain(|e| e.keyframe_pts == pts && e.size != size);
        entries.truncate(CACHED_SIZES - 1);
        entries.insert(
            0,
            CacheEntry {
                keyframe_pts: pts,
                size,
                snapshot: snapshot.clone(),
            },
        );
    }
}

/// Decodes one keyframe to JPEG. Blocking: runs on a blocking thread.
fn decode(
    camera: &str,
    caps: &gst::Caps,
    keyframe: gst::Buffer,
    size: SnapshotSize,
) -> Result<Snapshot, LiveError> {
    let (parser, decoder) = match VideoCodec::of(caps) {
        Some(VideoCodec::H264) => ("h264parse", "avdec_h264"),
        Some(VideoCodec::H265) => ("h265parse", "avdec_h265"),
        None => {
            return Err(LiveError::Unsupported(format!(
                "cannot decode {caps} for a snapshot"
            )));
        }
    };
    let native = caps
        .structure(0)
        .map(|s| {
            (
                s.get::<i32>("width").unwrap_or(0).max(0) as u32,
                s.get::<i32>("height").unwrap_or(0).max(0) as u32,
            )
        })
        .unwrap_or_default();
    let (width, height) = size.resolve(native);

    let pipeline = OwnedPipeline::new(&format!("{camera}-snapshot"), "snapshot");
    let src = gst_app::AppSrc::builder()
        .name(format!("{camera}-snapshot-src"))
        .caps(caps)
        .format(gst::Format::Time)
        .build();
    pipeline.adopt(&src)?;
    let parse = pipeline.add(parser, &format!("{camera}-snapshot-parse"))?;
    let decode = pipeline.add(decoder, &format!("{camera}-snapshot-decode"))?;
    let convert = pipeline.add("videoconvert", &format!("{camera}-snapshot-convert"))?;
    let scale = pipeline.add("videoscale", &format!("{camera}-snapshot-scale"))?;
    let sized = pipeline.add("capsfilter", &format!("{camera}-snapshot-size"))?;
    // A JPEG (JFIF) is full-range; a camera's video is limited range (16-235). From I420,
    // jpegenc would keep the camera's levels (black as dark grey) and videoconvert does not
    // change the range alone, so the picture goes to jpegenc as RGB, which it turns into
    // full-range YCbCr itself.
    sized.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("width", width as i32)
            .field("height", height as i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    );
    let encode = pipeline.add("jpegenc", &format!("{camera}-snapshot-jpeg"))?;
    let sink = pipeline.add_appsink(&format!("{camera}-snapshot-sink"))?;
    pipeline.link(&[
        src.upcast_ref(),
        &parse,
        &decode,
        &convert,
        &scale,
        &sized,
        &encode,
        sink.upcast_ref(),
    ])?;
    pipeline.play()?;

    let mut keyframe = keyframe;
    {
        let writable = keyframe.make_mut();
        writable.set_pts(gst::ClockTime::ZERO);
        writable.set_dts(gst::ClockTime::ZERO);
    }
    src.push_buffer(keyframe)
        .map_err(|e| pipeline.error(format!("the decoder refused the keyframe: {e:?}")))?;
    let _ = src.end_of_stream();
    let sample = sink
        .try_pull_sample(gst::ClockTime::from_nseconds(
            DECODE_TIMEOUT.as_nanos() as u64
        ))
        .ok_or_else(|| {
            pipeline.error(
                pipeline
                    .pending_error()
                    .unwrap_or_else(|| "no picture came out of the decoder".into()),
            )
        })?;
    let buffer = sample
        .buffer()
        .ok_or_else(|| pipeline.error("the encoder gave an empty sample"))?;
    let map = buffer
        .map_readable()
        .map_err(|e| pipeline.error(e.to_string()))?;
    Ok(Snapshot {
        jpeg: bytes::Bytes::copy_from_slice(map.as_slice()),
        width,
        height,
        cached: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_keep_the_aspect_ratio_when_one_side_is_given() {
        let check = |w: Option<u32>, h: Option<u32>, expected: (u32, u32)| {
            assert_eq!(
                SnapshotSize::new(w, h).unwrap().resolve((640, 360)),
                expected
            );
        };
        check(None, None, (640, 360));
        check(Some(320), None, (320, 180));
        check(None, Some(90), (160, 90));
        check(Some(100), Some(100), (100, 100));
        check(Some(301), None, (301, 170));
        assert!(SnapshotSize::new(Some(0), None).is_err());
        assert!(SnapshotSize::new(None, Some(MAX_SNAPSHOT_SIDE + 1)).is_err());
    }
}
