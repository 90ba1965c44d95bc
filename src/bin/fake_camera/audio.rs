//! The fake camera's microphone: silence, or a WAV clip when asked, pushed in 20 ms blocks into
//! the audio track's `appsrc` at the pace of the wall clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use gst::prelude::*;
use gst_rtsp_server::prelude::*;

/// Name of the audio `appsrc` in the media's launch description.
pub const SOURCE_NAME: &str = "audio-src";

/// How much audio each push carries, as a camera's audio packets do.
const BLOCK: Duration = Duration::from_millis(20);

/// Clips waiting to be played, shared by the stdin reader and the media's feeder.
#[derive(Default)]
pub struct ClipQueue {
    clips: Mutex<VecDeque<Clip>>,
    /// The microphone sends nothing (`mute`), as a camera whose audio stops while its video
    /// goes on.
    muted: std::sync::atomic::AtomicBool,
}

struct Clip {
    name: String,
    samples: Vec<i16>,
    position: usize,
}

impl ClipQueue {
    /// Stops or restarts the audio track's packets.
    pub fn set_muted(&self, muted: bool) {
        self.muted
            .store(muted, std::sync::atomic::Ordering::Relaxed);
    }

    fn muted(&self) -> bool {
        self.muted.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn push(&self, name: String, samples: Vec<i16>) {
        self.clips.lock().unwrap().push_back(Clip {
            name,
            samples,
            position: 0,
        });
    }

    /// Fills `block` with the next clip samples, silence where there are none.
    fn fill(&self, block: &mut [i16]) {
        block.fill(0);
        let mut clips = self.clips.lock().unwrap();
        let mut filled = 0;
        while filled < block.len() {
            let Some(clip) = clips.front_mut() else { break };
            if clip.position == 0 {
                println!("clip-start {} {}", unix_ms(), clip.name);
            }
            let n = (clip.samples.len() - clip.position).min(block.len() - filled);
            block[filled..filled + n]
                .copy_from_slice(&clip.samples[clip.position..clip.position + n]);
            clip.position += n;
            filled += n;
            if clip.position >= clip.samples.len() {
                println!("clip-end {} {}", unix_ms(), clip.name);
                clips.pop_front();
            }
        }
    }
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Starts the thread that feeds the audio `appsrc` of `media` until the media goes away.
pub fn start_feeding(media: &gst_rtsp_server::RTSPMedia, rate: u32, clips: Arc<ClipQueue>) {
    match media.element().downcast_ref::<gst::Bin>() {
        Some(bin) => feed(bin, rate, clips),
        None => eprintln!("error: the media is not a bin"),
    }
}

/// Starts the thread that feeds the audio `appsrc` named [`SOURCE_NAME`] in `bin` until the
/// pipeline stops taking buffers.
pub fn feed(bin: &gst::Bin, rate: u32, clips: Arc<ClipQueue>) {
    let Some(src) = bin
        .by_name(SOURCE_NAME)
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
    else {
        eprintln!("error: the media has no {SOURCE_NAME}");
        return;
    };
    std::thread::spawn(move || {
        let per_block = (rate as u64 * BLOCK.as_millis() as u64 / 1000) as usize;
        let mut block = vec![0i16; per_block];
        let started = Instant::now();
        for n in 1u32.. {
            clips.fill(&mut block);
            let bytes: Vec<u8> = block.iter().flat_map(|s| s.to_le_bytes()).collect();
            if !clips.muted() && src.push_buffer(gst::Buffer::from_mut_slice(bytes)).is_err() {
                return; // the media stopped
            }
            let due = started + BLOCK * n;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    });
}

/// Decodes a sound file into mono S16 samples at `rate`, with GStreamer doing the conversion.
pub fn load_clip(path: &str, rate: u32) -> anyhow::Result<Vec<i16>> {
    let pipeline = gst::parse::launch(&format!(
        "filesrc name=file ! decodebin ! audioconvert ! audioresample \
         ! audio/x-raw,format=S16LE,layout=interleaved,channels=1,rate={rate} \
         ! appsink name=out sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow!("not a pipeline"))?;
    pipeline
        .by_name("file")
        .context("no filesrc")?
        .set_property("location", path);
    let sink = pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .context("no appsink")?;
    pipeline.set_state(gst::State::Playing)?;
    let mut samples = Vec::new();
    let result = loop {
        match sink.pull_sample() {
            Ok(sample) => {
                if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                    samples.extend(
                        map.chunks_exact(2)
                            .map(|pair| i16::from_le_bytes([pair[0], pair[1]])),
                    );
                }
            }
            Err(_) => break error_of(&pipeline),
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result.with_context(|| format!("cannot play {path}"))?;
    Ok(samples)
}

/// `Ok` at a clean end of stream, the bus error otherwise.
fn error_of(pipeline: &gst::Pipeline) -> anyhow::Result<()> {
    let bus = pipeline.bus().context("no bus")?;
    match bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(1),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    ) {
        Some(msg) => match msg.view() {
            gst::MessageView::Error(e) => Err(anyhow!("{}", e.error())),
            _ => Ok(()),
        },
        None => Err(anyhow!("the decoder stopped without an end of stream")),
    }
}
