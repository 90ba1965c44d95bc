//! Pictures as a viewer sees them, compared with what the camera drew: any output (RTSP over
//! TCP, `stream.mp4` and snapshots over HTTP, a PNG from a browser's canvas) is decoded by
//! GStreamer in this process, and two pictures are compared by the PSNR of their luma.
//!
//! Luma, because browsers and GStreamer turn YUV into RGB with slightly different matrices and
//! rounding; the fake camera's test patterns are black and white, so luma is all they carry. A
//! missing or misplaced slice (green or grey blocks) costs far more than the 35 dB bar.

use std::time::Duration;

use gst::prelude::*;
use gst_video::prelude::*;

/// A decoded picture: its size and the luma of each pixel.
#[derive(Clone)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    luma: Vec<u8>,
}

impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{} picture", self.width, self.height)
    }
}

impl Picture {
    /// The test pattern as the fake camera draws it (`videotestsrc pattern=…`), before
    /// encoding: the camera's own picture.
    pub fn pattern(pattern: &str, width: u32, height: u32) -> Picture {
        decode(
            &format!(
                "videotestsrc num-buffers=1 pattern={pattern} \
                 ! video/x-raw,width={width},height={height}"
            ),
            1,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("cannot draw {pattern}: {e}"))
    }

    /// The `frames`-th picture an RTSP player gets from `url` (over TCP).
    pub fn from_rtsp(url: &str, frames: usize) -> Result<Picture, String> {
        decode(
            // The video track only: the audio pad stays unlinked (rtspsrc goes on while one
            // track is linked).
            &format!(
                "rtspsrc location={url} protocols=tcp latency=200 \
                 ! application/x-rtp,media=video ! decodebin"
            ),
            frames,
            Duration::from_secs(20),
        )
    }

    /// The `frames`-th picture of what `url` (HTTP: a JPEG, an MP4 stream) serves.
    pub fn from_http(url: &str, frames: usize) -> Result<Picture, String> {
        decode(
            &format!("souphttpsrc location=\"{url}\" is-live=true ! decodebin"),
            frames,
            Duration::from_secs(20),
        )
    }

    /// An encoded picture (PNG, JPEG) in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Picture, String> {
        let dir = super::TempDir::new("picture");
        let path = dir.path().join("picture");
        std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
        decode(
            &format!("filesrc location={} ! decodebin", path.display()),
            1,
            Duration::from_secs(10),
        )
    }

    /// Peak signal-to-noise ratio of `self` against `reference`, in dB (infinite when equal);
    /// pictures of different sizes are 0 dB apart.
    pub fn psnr(&self, reference: &Picture) -> f64 {
        if (self.width, self.height) != (reference.width, reference.height) {
            return 0.0;
        }
        let squared: f64 = self
            .luma
            .iter()
            .zip(&reference.luma)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        let mse = squared / self.luma.len() as f64;
        if mse == 0.0 {
            return f64::INFINITY;
        }
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

/// Runs `source ! videoconvert ! RGBx` and returns the `frames`-th picture.
fn decode(source: &str, frames: usize, timeout: Duration) -> Result<Picture, String> {
    let _ = gst::init();
    let description =
        format!("{source} ! videoconvert ! video/x-raw,format=RGBx ! appsink name=sink sync=false");
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| format!("{description}: {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline".to_string())?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or("no appsink")?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("cannot play {source}: {e}"))?;
    let deadline = std::time::Instant::now() + timeout;
    let mut last = None;
    let mut got = 0;
    let result = loop {
        if got >= frames {
            break last.ok_or_else(|| "no picture".to_string());
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let sample = sink.try_pull_sample(gst::ClockTime::from_nseconds(left.as_nanos() as u64));
        match sample {
            Some(sample) => {
                got += 1;
                last = Some(picture_of(&sample)?);
            }
            None => {
                let error = pipeline.bus().and_then(|bus| {
                    bus.pop_filtered(&[gst::MessageType::Error])
                        .map(|m| match m.view() {
                            gst::MessageView::Error(e) => {
                                format!("{} ({:?})", e.error(), e.debug())
                            }
                            _ => String::new(),
                        })
                });
                break match (error, last) {
                    (Some(error), _) => Err(format!("{source}: {error}")),
                    // The stream ended early (a JPEG has one picture): the last one it had.
                    (None, Some(last)) if sink.is_eos() => Ok(last),
                    (None, _) => Err(format!(
                        "{source}: {got} of {frames} pictures in {timeout:?}"
                    )),
                };
            }
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn picture_of(sample: &gst::Sample) -> Result<Picture, String> {
    let caps = sample.caps().ok_or("a sample without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
    let buffer = sample.buffer().ok_or("a sample without a buffer")?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|e| e.to_string())?;
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data(0).map_err(|e| e.to_string())?;
    let (width, height) = (info.width() as usize, info.height() as usize);
    let mut luma = Vec::with_capacity(width * height);
    for row in data.chunks(stride).take(height) {
        for px in row[..width * 4].chunks_exact(4) {
            let y =
                (299 * u32::from(px[0]) + 587 * u32::from(px[1]) + 114 * u32::from(px[2])) / 1000;
            luma.push(y as u8);
        }
    }
    Ok(Picture {
        width: info.width(),
        height: info.height(),
        luma,
    })
}
