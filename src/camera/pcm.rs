//! The detector's branch of a camera pipeline: the camera's encoded audio decoded to mono 16 kHz
//! f32 and handed to cry detection as [`PcmChunk`]s on a bounded channel.
//!
//! This is the only place camera audio is decoded; video never is. Runs on GStreamer streaming
//! threads: a chunk the detector has no room for is dropped and counted, never waited for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use gst::prelude::*;
use tokio::sync::mpsc;

use crate::audio::{DETECTOR_SAMPLE_RATE, PcmChunk};

/// Chunks the detector may have queued (an AAC frame is 64 ms, a G.711 packet 20 ms: a few
/// seconds either way).
pub const PCM_CHANNEL_CHUNKS: usize = 128;

/// Where one camera's decoded audio goes; shared by every ingest session of the camera.
#[derive(Clone)]
pub struct PcmOutput {
    tx: mpsc::Sender<PcmChunk>,
    timeline: Arc<Mutex<PcmTimeline>>,
    dropped: Arc<AtomicU64>,
}

impl PcmOutput {
    /// An output and the detector's end of it.
    pub fn channel() -> (Self, mpsc::Receiver<PcmChunk>) {
        let (tx, rx) = mpsc::channel(PCM_CHANNEL_CHUNKS);
        let output = Self {
            tx,
            timeline: Arc::new(Mutex::new(PcmTimeline::new())),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (output, rx)
    }

    /// A new ingest session begins: its running time starts afresh.
    pub fn begin_session(&self) {
        self.timeline.lock().unwrap().begin_session();
    }

    /// Chunks dropped so far because the detector was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// True when nobody listens any more (detection stopped).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn send(&self, running_time: Duration, samples: Vec<f32>) {
        let duration = Duration::from_secs_f64(samples.len() as f64 / DETECTOR_SAMPLE_RATE as f64);
        let pts = self.timeline.lock().unwrap().place(running_time, duration);
        if self.tx.try_send(PcmChunk { pts, samples }).is_err() && !self.tx.is_closed() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::debug!(dropped = n, "detector behind: audio chunks dropped");
            }
        }
    }
}

/// The decoder for a camera's audio caps, or `None` for a format we do not decode.
pub fn decoder_for(caps: &gst::CapsRef) -> Option<&'static str> {
    Some(match caps.structure(0)?.name().as_str() {
        "audio/mpeg" => "avdec_aac",
        "audio/x-alaw" => "alawdec",
        "audio/x-mulaw" => "mulawdec",
        "audio/x-opus" => "opusdec",
        _ => return None,
    })
}

/// Adds `decoder ! audioconvert ! audioresample ! F32LE mono 16 kHz ! appsink` to `bin`, fed
/// from `tee`, sending what comes out to `output`. The elements are named `<prefix>-…`.
pub fn link_decoder(
    bin: &gst::Bin,
    tee: &gst::Element,
    decoder: &str,
    prefix: &str,
    output: PcmOutput,
) -> anyhow::Result<()> {
    let make = |factory: &str, role: &str| {
        gst::ElementFactory::make(factory)
            .name(format!("{prefix}-{role}"))
            .build()
            .with_context(|| {
                format!("cannot create {factory} (is the GStreamer plugin installed?)")
            })
    };
    let decode = make(decoder, "pcm-decode")?;
    // audiobuffersplit takes interleaved audio only; FFmpeg's AAC decoder gives planar (without
    // this the link failed and AAC cameras were never heard).
    let interleave = (decoder == "avdec_aac")
        .then(|| make("audioconvert", "pcm-interleave"))
        .transpose()?;
    // Cameras send 20 ms packets; the detector looks at ~1 s windows. Grouping the decoded audio
    // first makes every element after it (and the channel) work five times less often.
    let group = make("audiobuffersplit", "pcm-group")?;
    group.set_property("output-buffer-duration", gst::Fraction::new(1, 10));
    let convert = make("audioconvert", "pcm-convert")?;
    let resample = make("audioresample", "pcm-resample")?;
    let caps = gst::Caps::builder("audio/x-raw")
        .field("format", "F32LE")
        .field("layout", "interleaved")
        .field("channels", 1i32)
        .field("rate", DETECTOR_SAMPLE_RATE as i32)
        .build();
    let sink = gst_app::AppSink::builder()
        .name(format!("{prefix}-pcm"))
        .caps(&caps)
        .sync(false)
        .async_(false)
        .build();
    let elements: Vec<&gst::Element> = [Some(&decode), interleave.as_ref()]
        .into_iter()
        .flatten()
        .chain([&group, &convert, &resample, sink.upcast_ref()])
        .collect();
    bin.add_many(&elements)?;
    gst::Element::link_many(&elements)?;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some((running_time, samples)) = samples_of(&sample) {
                    output.send(running_time, samples);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    for element in &elements {
        element.sync_state_with_parent()?;
    }
    tee.link(&decode)?;
    Ok(())
}

/// The running time and the samples of a decoded buffer.
fn samples_of(sample: &gst::Sample) -> Option<(Duration, Vec<f32>)> {
    let buffer = sample.buffer()?;
    let running_time = sample
        .segment()
        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
        .and_then(|s| s.to_running_time(buffer.pts()))
        .or(buffer.pts())?;
    let map = buffer.map_readable().ok()?;
    let samples = map
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Some((Duration::from_nanos(running_time.nseconds()), samples))
}

/// Places each session's chunks on the camera's own audio timeline: monotonic, with a gap where
/// the camera was away, and without overlaps.
#[derive(Debug)]
struct PcmTimeline {
    started: Instant,
    /// Added to a session's running time; set by its first chunk.
    offset: Option<i128>,
    /// Where the last chunk ended.
    end: Duration,
}

impl PcmTimeline {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            offset: None,
            end: Duration::ZERO,
        }
    }

    fn begin_session(&mut self) {
        self.offset = None;
    }

    fn place(&mut self, running_time: Duration, duration: Duration) -> Duration {
        let now = self.started.elapsed().as_nanos() as i128;
        let offset = *self
            .offset
            .get_or_insert(now - running_time.as_nanos() as i128);
        let at = (running_time.as_nanos() as i128 + offset).max(0) as u64;
        let pts = Duration::from_nanos(at).max(self.end);
        self.end = pts + duration;
        pts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audio formats cameras send.
    const CAMERA_AUDIO: [&str; 4] = [
        "audio/mpeg",
        "audio/x-alaw",
        "audio/x-mulaw",
        "audio/x-opus",
    ];

    #[test]
    fn chunks_stay_monotonic_across_sessions() {
        let mut timeline = PcmTimeline::new();
        let d = Duration::from_millis(20);
        let a = timeline.place(Duration::from_secs(100), d);
        let b = timeline.place(Duration::from_secs(100) + d, d);
        assert_eq!(b - a, d);
        timeline.begin_session();
        std::thread::sleep(Duration::from_millis(30));
        // The new session's clock starts at zero again; its chunks still come after.
        let c = timeline.place(Duration::ZERO, d);
        assert!(c >= b + d, "{a:?} {b:?} {c:?}");
        // A late chunk never overlaps the one before.
        let e = timeline.place(Duration::ZERO, d);
        assert_eq!(e, c + d);
    }

    #[test]
    fn every_camera_audio_codec_has_a_decoder() {
        let _ = gst::init();
        for name in CAMERA_AUDIO {
            let caps = gst::Caps::new_empty_simple(name);
            let decoder = decoder_for(&caps).unwrap();
            assert!(
                gst::ElementFactory::find(decoder).is_some(),
                "{decoder} is not installed"
            );
        }
        assert_eq!(
            decoder_for(&gst::Caps::new_empty_simple("audio/x-g726")),
            None
        );
    }

    #[test]
    fn every_decoder_links_into_the_detector_branch() {
        let _ = gst::init();
        for name in CAMERA_AUDIO {
            let decoder = decoder_for(&gst::Caps::new_empty_simple(name)).unwrap();
            let bin = gst::Bin::new();
            let tee = gst::ElementFactory::make("tee").build().unwrap();
            bin.add(&tee).unwrap();
            let (output, _rx) = PcmOutput::channel();
            link_decoder(&bin, &tee, decoder, "test", output)
                .unwrap_or_else(|e| panic!("{decoder}: {e:#}"));
        }
    }
}
