//! WAV files into the detector's audio (16 kHz mono f32), for `vigil detect`.
//!
//! `hound` reads the file; channels are averaged to mono (as `audioconvert` does for stereo),
//! and GStreamer's `audioresample` (the element the camera path uses) resamples when the file is
//! not already at 16 kHz. The audio is streamed through in chunks, so a night-long recording
//! never sits in memory whole.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use gst::prelude::*;

use super::DETECTOR_SAMPLE_RATE;

/// Frames read from the file per push (0.25 s at 48 kHz).
const CHUNK_FRAMES: usize = 12_000;

/// What was in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WavInfo {
    pub sample_rate: u32,
    pub channels: u16,
    pub bits_per_sample: u16,
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a WAV file ({reason}); give a .wav recording (any rate and channels)")]
    NotWav { path: PathBuf, reason: String },
    #[error(
        "{path} is truncated: its header promises {expected:.1} s of audio but the file ends \
         after {read:.1} s (was the recording cut off?)"
    )]
    Truncated {
        path: PathBuf,
        expected: f64,
        read: f64,
    },
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot resample {path} to 16 kHz mono: {reason}")]
    Resample { path: PathBuf, reason: String },
}

/// Reads `path` and hands its audio, as 16 kHz mono f32 in [-1, 1], to `sink` in chunks.
pub fn decode(path: &Path, mut sink: impl FnMut(&[f32])) -> Result<WavInfo, WavError> {
    let file = std::fs::File::open(path).map_err(|source| WavError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader =
        hound::WavReader::new(std::io::BufReader::new(file)).map_err(|e| WavError::NotWav {
            path: path.to_path_buf(),
            reason: if ends_early(&e) {
                "it ends inside its header".to_string()
            } else {
                e.to_string()
            },
        })?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(WavError::NotWav {
            path: path.to_path_buf(),
            reason: format!(
                "header says {} channels at {} Hz",
                spec.channels, spec.sample_rate
            ),
        });
    }
    let info = WavInfo {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        bits_per_sample: spec.bits_per_sample,
        duration: Duration::from_secs_f64(
            f64::from(reader.duration()) / f64::from(spec.sample_rate),
        ),
    };
    let channels = usize::from(spec.channels);
    let frames =
        read_frames(&mut reader, path, info).map(move |chunk| chunk.map(|c| downmix(&c, channels)));
    if spec.sample_rate == DETECTOR_SAMPLE_RATE {
        for chunk in frames {
            sink(&chunk?);
        }
        return Ok(info);
    }
    let mut resampler = Resampler::new(spec.sample_rate).map_err(|reason| WavError::Resample {
        path: path.to_path_buf(),
        reason,
    })?;
    let resample_error = |reason| WavError::Resample {
        path: path.to_path_buf(),
        reason,
    };
    for chunk in frames {
        resampler.push(&chunk?).map_err(resample_error)?;
        resampler.drain(&mut sink, false).map_err(resample_error)?;
    }
    resampler.finish().map_err(resample_error)?;
    resampler.drain(&mut sink, true).map_err(resample_error)?;
    Ok(info)
}

/// The file's samples as f32 in [-1, 1], interleaved, `CHUNK_FRAMES` frames at a time.
fn read_frames<'r, R: std::io::Read + 'r>(
    reader: &'r mut hound::WavReader<R>,
    path: &'r Path,
    info: WavInfo,
) -> impl Iterator<Item = Result<Vec<f32>, WavError>> + 'r {
    let spec = reader.spec();
    let chunk_len = CHUNK_FRAMES * usize::from(spec.channels);
    let expected = reader.len();
    let mut read = 0u32;
    let mut samples: Box<dyn Iterator<Item = hound::Result<f32>> + 'r> = match spec.sample_format {
        hound::SampleFormat::Float => Box::new(reader.samples::<f32>()),
        hound::SampleFormat::Int => {
            let scale = 1.0 / f64::from(1u32 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            Box::new(
                reader
                    .samples::<i32>()
                    .map(move |s| s.map(|v| v as f32 * scale)),
            )
        }
    };
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let mut chunk = Vec::with_capacity(chunk_len);
        for sample in samples.by_ref().take(chunk_len) {
            match sample {
                Ok(s) => chunk.push(s),
                Err(e) => {
                    failed = true;
                    let seconds_of = |n: u32| {
                        f64::from(n) / f64::from(spec.channels) / f64::from(info.sample_rate)
                    };
                    return Some(Err(if ends_early(&e) {
                        WavError::Truncated {
                            path: path.to_path_buf(),
                            expected: seconds_of(expected),
                            read: seconds_of(read),
                        }
                    } else {
                        WavError::Read {
                            path: path.to_path_buf(),
                            reason: e.to_string(),
                        }
                    }));
                }
            }
            read += 1;
        }
        (!chunk.is_empty()).then_some(Ok(chunk))
    })
}

/// True when hound stopped because the file ended (it says so in two ways).
fn ends_early(e: &hound::Error) -> bool {
    match e {
        hound::Error::IoError(io) => {
            io.kind() == std::io::ErrorKind::UnexpectedEof
                || io.to_string().contains("read enough bytes")
        }
        _ => false,
    }
}

/// Averages interleaved frames of `channels` samples into one.
fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels == 1 {
        return interleaved.to_vec();
    }
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect()
}

/// `appsrc ! audioresample ! appsink`, mono F32 from the file's rate to 16 kHz.
struct Resampler {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    rate: u32,
    pushed: u64,
    out: mpsc::Receiver<Option<Vec<f32>>>,
    bus: gst::Bus,
}

impl Resampler {
    fn new(rate: u32) -> Result<Resampler, String> {
        gst::init().map_err(|e| format!("cannot initialise GStreamer: {e}"))?;
        let in_caps = gst_audio_caps(rate, 1);
        let out_caps = gst_audio_caps(DETECTOR_SAMPLE_RATE, 1);
        let src = gst_app::AppSrc::builder()
            .name("wav-src")
            .caps(&in_caps)
            .format(gst::Format::Time)
            .block(true)
            .max_bytes(1 << 20)
            .build();
        let resample = make("audioresample", "wav-resample")?;
        let (tx, out) = mpsc::channel();
        let eos_tx = tx.clone();
        let sink = gst_app::AppSink::builder()
            .name("wav-sink")
            .caps(&out_caps)
            .sync(false)
            .callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let Some(buffer) = sample.buffer() else {
                            return Ok(gst::FlowSuccess::Ok);
                        };
                        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                        let floats = map
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect();
                        tx.send(Some(floats))
                            .map_err(|_| gst::FlowError::Flushing)?;
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .eos(move |_| {
                        let _ = eos_tx.send(None);
                    })
                    .build(),
            )
            .build();
        let pipeline = gst::Pipeline::with_name("wav-resample");
        pipeline
            .add_many([src.upcast_ref(), &resample, sink.upcast_ref()])
            .and_then(|_| gst::Element::link_many([src.upcast_ref(), &resample, sink.upcast_ref()]))
            .map_err(|e| format!("cannot build the pipeline: {e}"))?;
        let bus = pipeline.bus().ok_or("the pipeline has no bus")?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("cannot start the pipeline: {e}"))?;
        Ok(Resampler {
            pipeline,
            src,
            rate,
            pushed: 0,
            out,
            bus,
        })
    }

    fn push(&mut self, mono: &[f32]) -> Result<(), String> {
        let bytes: Vec<u8> = mono.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut buffer = gst::Buffer::from_mut_slice(bytes);
        let at = |frames: u64| {
            gst::ClockTime::from_nseconds(frames * 1_000_000_000 / u64::from(self.rate))
        };
        let start = at(self.pushed);
        self.pushed += mono.len() as u64;
        if let Some(buffer) = buffer.get_mut() {
            buffer.set_pts(start);
            buffer.set_duration(at(self.pushed) - start);
        }
        self.src
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| self.bus_error().unwrap_or_else(|| e.to_string()))
    }

    fn finish(&mut self) -> Result<(), String> {
        self.src
            .end_of_stream()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Hands what has come out so far to `sink`; with `until_eos`, waits for the end.
    fn drain(&mut self, sink: &mut impl FnMut(&[f32]), until_eos: bool) -> Result<(), String> {
        loop {
            let next = if until_eos {
                match self.out.recv_timeout(Duration::from_millis(200)) {
                    Ok(next) => next,
                    Err(mpsc::RecvTimeoutError::Timeout) => match self.bus_error() {
                        Some(e) => return Err(e),
                        None => continue,
                    },
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                }
            } else {
                match self.out.try_recv() {
                    Ok(next) => next,
                    Err(_) => return Ok(()),
                }
            };
            match next {
                Some(samples) => sink(&samples),
                None => return Ok(()),
            }
        }
    }

    fn bus_error(&self) -> Option<String> {
        let message = self.bus.pop_filtered(&[gst::MessageType::Error])?;
        match message.view() {
            gst::MessageView::Error(e) => Some(format!(
                "{} ({})",
                e.error(),
                e.debug().map(|d| d.to_string()).unwrap_or_default()
            )),
            _ => None,
        }
    }
}

impl Drop for Resampler {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn gst_audio_caps(rate: u32, channels: i32) -> gst::Caps {
    gst::Caps::builder("audio/x-raw")
        .field("format", "F32LE")
        .field("layout", "interleaved")
        .field("rate", rate as i32)
        .field("channels", channels)
        .build()
}

fn make(factory: &str, name: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory)
        .name(name)
        .build()
        .map_err(|_| {
            format!("the GStreamer element {factory} is missing (gstreamer1.0-plugins-base)")
        })
}
