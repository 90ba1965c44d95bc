//! The detector's branch of a camera pipeline: the camera's encoded audio decoded to mono 16 kHz
//! f32 and handed to cry detection as [`PcmChunk`]s on a bounded channel.
//!
//! This is the only place camera audio is decoded; video never is. Runs on GStreamer streaming
//! threads: a chunk the detector has no room for is dropped and counted, never waited for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use tokio::sync::mpsc;

use crate::audio::{DETECTOR_SAMPLE_RATE, PcmChunk};

/// Chunks the detector may have queued (an AAC frame is 64 ms, a G.711 packet 20 ms: a few
/// seconds either way).
pub const PCM_CHANNEL_CHUNKS: usize = 128;

/// How long the main stream's audio may pause before the sub stream's takes over.
const MAIN_AUDIO_GRACE: Duration = Duration::from_secs(1);

/// Which of a camera's streams a [`PcmOutput`] carries: the detector hears the main stream's
/// audio, and the sub stream's only while the main stream sends none (no audio track, or
/// offline), so one camera is one detector however many streams it has. Main first because it
/// is the simplest rule to predict, and preferring the sub stream would save nothing: both
/// streams carry the same microphone on the cameras we know (Tapo, Reolink), and both streams'
/// audio is decoded anyway (each pipeline has this branch, so a fail-over is immediate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Main,
    Sub,
}

/// Where one camera's decoded audio goes; shared by every ingest session of the camera.
#[derive(Clone)]
pub struct PcmOutput {
    tx: mpsc::Sender<PcmChunk>,
    role: Role,
    timeline: Arc<Mutex<PcmTimeline>>,
    dropped: Arc<AtomicU64>,
}

impl PcmOutput {
    /// An output and the detector's end of it.
    pub fn channel() -> (Self, mpsc::Receiver<PcmChunk>) {
        let (tx, rx) = mpsc::channel(PCM_CHANNEL_CHUNKS);
        let output = Self {
            tx,
            role: Role::Main,
            timeline: Arc::new(Mutex::new(PcmTimeline::new())),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (output, rx)
    }

    /// The output for the camera's sub stream: the same detector, heard only while the main
    /// stream sends no audio.
    pub fn for_sub_stream(&self) -> Self {
        Self {
            role: Role::Sub,
            ..self.clone()
        }
    }

    /// A new ingest session begins: its running time starts afresh.
    pub fn begin_session(&self) {
        self.timeline.lock().unwrap().begin_session(self.role);
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
        let Some(pts) = self
            .timeline
            .lock()
            .unwrap()
            .place(self.role, running_time, duration)
        else {
            return;
        };
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
    let make = |factory: &str, role: &str| super::make_element(factory, format!("{prefix}-{role}"));
    let decode = make(decoder, "pcm-decode")?;
    // audiobuffersplit takes interleaved audio only; FFmpeg's AAC decoder gives planar (without
    // this the link failed and AAC cameras were never heard).
    let interleave = (decoder == "avdec_aac")
        .then(|| make("audioconvert", "pcm-interleave"))
        .transpose()?;
    // Cameras send 20 ms packets; the detector looks at ~1 s windows. Grouping the decoded audio
    // makes every element after it (and the channel) work five times less often.
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
/// the camera was away, and without overlaps. A camera's two streams share it, each with its
/// own session clock; the sub stream's chunks are placed only while the main stream is silent.
#[derive(Debug)]
struct PcmTimeline {
    started: Instant,
    /// Added to a session's running time, per stream (main, sub); set by its first chunk.
    offsets: [Option<i128>; 2],
    /// Where the last chunk ended.
    end: Duration,
    /// When the main stream's last chunk came.
    main_heard: Option<Instant>,
}

impl PcmTimeline {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            offsets: [None; 2],
            end: Duration::ZERO,
            main_heard: None,
        }
    }

    fn begin_session(&mut self, role: Role) {
        self.offsets[role as usize] = None;
    }

    /// Where a chunk goes, or `None` for a sub stream chunk while the main stream is heard.
    fn place(
        &mut self,
        role: Role,
        running_time: Duration,
        duration: Duration,
    ) -> Option<Duration> {
        let now = Instant::now();
        match role {
            Role::Main => self.main_heard = Some(now),
            Role::Sub => {
                if self
                    .main_heard
                    .is_some_and(|at| now - at < MAIN_AUDIO_GRACE)
                {
                    return None;
                }
            }
        }
        let elapsed = (now - self.started).as_nanos() as i128;
        let offset =
            *self.offsets[role as usize].get_or_insert(elapsed - running_time.as_nanos() as i128);
        let at = (running_time.as_nanos() as i128 + offset).max(0) as u64;
        let pts = Duration::from_nanos(at).max(self.end);
        self.end = pts + duration;
        Some(pts)
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
        let mut place = |rt| timeline.place(Role::Main, rt, d).unwrap();
        let a = place(Duration::from_secs(100));
        let b = place(Duration::from_secs(100) + d);
        assert_eq!(b - a, d);
        timeline.begin_session(Role::Main);
        std::thread::sleep(Duration::from_millis(30));
        // The new session's clock starts at zero again; its chunks still come after.
        let c = timeline.place(Role::Main, Duration::ZERO, d).unwrap();
        assert!(c >= b + d, "{a:?} {b:?} {c:?}");
        // A late chunk never overlaps the one before.
        let e = timeline.place(Role::Main, Duration::ZERO, d).unwrap();
        assert_eq!(e, c + d);
    }

    #[test]
    fn the_sub_stream_is_heard_only_while_the_main_stream_is_silent() {
        let mut timeline = PcmTimeline::new();
        let d = Duration::from_millis(100);
        // Only the sub stream has audio: it is heard.
        let a = timeline
            .place(Role::Sub, Duration::from_secs(7), d)
            .unwrap();
        // The main stream speaks up: it wins, and the sub stream's chunks are left out.
        let b = timeline
            .place(Role::Main, Duration::from_secs(50), d)
            .unwrap();
        assert!(b >= a + d);
        assert_eq!(
            timeline.place(Role::Sub, Duration::from_secs(7) + d, d),
            None
        );
        // A second of silence from the main stream hands the detector back to the sub stream,
        // still after what was heard.
        timeline.main_heard = Some(Instant::now() - MAIN_AUDIO_GRACE);
        let c = timeline
            .place(Role::Sub, Duration::from_secs(8), d)
            .unwrap();
        assert!(c >= b + d, "{b:?} {c:?}");
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
