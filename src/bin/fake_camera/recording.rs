//! `--play FILE`: the fake camera serves a recording instead of encoding a test pattern, so a
//! benchmark's cameras cost next to no CPU while Vigil is measured beside them.
//!
//! The recording (Matroska: H.264 or H.265, with AAC, G.711 or Opus sound, or none) is read
//! into memory once at start. Each shared media gets a thread that pushes it into the media's
//! `appsrc`s at the pace of the wall clock, again and again: every lap's timestamps follow the
//! last lap's (the first lap starts at the pipeline's running time then), so they only grow, as
//! a camera's do. The recording should start with a keyframe, as an encoder's output does.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use gst::prelude::*;

/// A recording held in memory, in the order it is sent.
pub struct Recording {
    /// The tracks' formats; track `i` is payloaded by `pay{i}`.
    tracks: Vec<gst::Caps>,
    /// Every buffer of every track, by time from the recording's start.
    buffers: Vec<Timed>,
    /// One lap: the time from the first picture to the one after the last.
    lap: gst::ClockTime,
}

struct Timed {
    track: usize,
    /// From the recording's start.
    at: gst::ClockTime,
    buffer: gst::Buffer,
}

/// A track's buffers as the demuxer gives them (video parsed into access units).
#[derive(Default)]
struct Collected {
    caps: Option<gst::Caps>,
    buffers: Vec<gst::Buffer>,
}

impl Recording {
    /// Reads `path` whole. Video comes out as byte-stream access units with the parameter sets
    /// in front of every keyframe, sound as the file holds it.
    pub fn load(path: &Path) -> anyhow::Result<Recording> {
        let pipeline = gst::Pipeline::new();
        let source = gst::ElementFactory::make("filesrc")
            .property("location", path)
            .build()?;
        let demux = gst::ElementFactory::make("matroskademux").build()?;
        pipeline.add_many([&source, &demux])?;
        source.link(&demux)?;
        let video = Arc::new(Mutex::new(Collected::default()));
        let audio = Arc::new(Mutex::new(Collected::default()));
        let failure = Arc::new(Mutex::new(None::<String>));
        {
            let (bin, video, audio, failure) = (
                pipeline.clone(),
                video.clone(),
                audio.clone(),
                failure.clone(),
            );
            demux.connect_pad_added(move |_, pad| {
                let name = pad.name();
                let linked = if name.starts_with("video") {
                    collect(&bin, pad, true, video.clone())
                } else if name.starts_with("audio") {
                    collect(&bin, pad, false, audio.clone())
                } else {
                    Ok(())
                };
                if let Err(e) = linked {
                    *failure.lock().unwrap() = Some(format!("track {name}: {e:#}"));
                }
            });
        }
        pipeline.set_state(gst::State::Playing)?;
        let bus = pipeline.bus().context("no bus")?;
        let ended = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        let _ = pipeline.set_state(gst::State::Null);
        match ended.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => {}
            Some(gst::MessageView::Error(e)) => {
                bail!("cannot read {}: {}", path.display(), e.error())
            }
            _ => bail!("reading {} took over 2 minutes", path.display()),
        }
        if let Some(failure) = failure.lock().unwrap().take() {
            bail!("cannot read {}: {failure}", path.display());
        }
        let take =
            |collected: &Arc<Mutex<Collected>>| std::mem::take(&mut *collected.lock().unwrap());
        Self::from_tracks(vec![take(&video), take(&audio)])
            .with_context(|| format!("cannot play {}", path.display()))
    }

    /// Lays the tracks' buffers out in time (tracks without buffers are left out; the first
    /// with buffers, the video if there is one, sets the lap).
    fn from_tracks(tracks: Vec<Collected>) -> anyhow::Result<Recording> {
        let tracks: Vec<(gst::Caps, Vec<gst::Buffer>)> = tracks
            .into_iter()
            .filter_map(|t| Some((t.caps?, t.buffers)).filter(|(_, b)| !b.is_empty()))
            .collect();
        let Some((_, leading)) = tracks.first() else {
            bail!("the recording has no picture and no sound");
        };
        let start = tracks
            .iter()
            .filter_map(|(_, buffers)| buffers.first()?.pts())
            .min()
            .context("the recording has no timestamps")?;
        let lap = lap_of(leading).context("the recording is too short to loop")?;
        let mut buffers = Vec::new();
        for (track, (_, track_buffers)) in tracks.iter().enumerate() {
            for buffer in track_buffers {
                let Some(at) = buffer.pts().map(|pts| pts.saturating_sub(start)) else {
                    continue;
                };
                // Sound past the picture's end would overlap the next lap.
                if at < lap {
                    buffers.push(Timed {
                        track,
                        at,
                        buffer: buffer.clone(),
                    });
                }
            }
        }
        buffers.sort_by_key(|t| (t.at, t.track));
        Ok(Recording {
            tracks: tracks.into_iter().map(|(caps, _)| caps).collect(),
            buffers,
            lap,
        })
    }

    /// The shared media's launch description: an `appsrc` and a payloader per track.
    pub fn launch_description(&self) -> anyhow::Result<String> {
        let mut description = String::from("(");
        for (index, caps) in self.tracks.iter().enumerate() {
            let name = caps.structure(0).map_or("", |s| s.name().as_str());
            let pay = payloader(name).ok_or_else(|| anyhow!("cannot serve {name}"))?;
            description.push_str(&format!(
                " appsrc name={} is-live=true format=time ! {pay} name=pay{index}",
                source_name(index)
            ));
        }
        description.push_str(" )");
        Ok(description)
    }

    /// Sets the `appsrc`s' formats in a new shared media and starts the thread that feeds
    /// them, until the media stops taking buffers.
    pub fn start_feeding(self: &Arc<Self>, media: &gst_rtsp_server::RTSPMedia) {
        use gst_rtsp_server::prelude::*;
        let Ok(bin) = media.element().downcast::<gst::Bin>() else {
            eprintln!("error: the media is not a bin");
            return;
        };
        let sources: Option<Vec<gst_app::AppSrc>> = (0..self.tracks.len())
            .map(|i| bin.by_name(&source_name(i))?.downcast().ok())
            .collect();
        let Some(sources) = sources else {
            eprintln!("error: the media lacks a track's appsrc");
            return;
        };
        for (source, caps) in sources.iter().zip(&self.tracks) {
            source.set_caps(Some(caps));
        }
        let recording = self.clone();
        std::thread::spawn(move || recording.feed(&sources));
    }

    fn feed(&self, sources: &[gst_app::AppSrc]) {
        // The timestamps start at the running time when the media first plays (a live media
        // plays while it is prepared).
        let waiting_since = Instant::now();
        let base = loop {
            if let Some(now) = sources[0].current_running_time() {
                break now;
            }
            if waiting_since.elapsed() > Duration::from_secs(60) {
                return; // never played
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let started = Instant::now();
        for lap in 0u64.. {
            for timed in &self.buffers {
                let at = self.lap * lap + timed.at;
                let due = started + Duration::from_nanos(at.nseconds());
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                // Decoding may run ahead of display (B-frames): keep the recording's gap.
                let ahead = timed
                    .buffer
                    .pts()
                    .zip(timed.buffer.dts())
                    .map_or(gst::ClockTime::ZERO, |(pts, dts)| pts.saturating_sub(dts));
                let mut buffer = timed.buffer.copy();
                {
                    let buffer = buffer.make_mut();
                    buffer.set_pts(base + at);
                    buffer.set_dts((base + at).saturating_sub(ahead));
                }
                if sources[timed.track].push_buffer(buffer).is_err() {
                    return; // the media stopped
                }
            }
        }
    }
}

/// Name of track `index`'s `appsrc` in the media.
fn source_name(index: usize) -> String {
    format!("track{index}")
}

/// The payloader (with its options) for a track of this format.
fn payloader(caps_name: &str) -> Option<&'static str> {
    Some(match caps_name {
        "video/x-h264" => "rtph264pay pt=96 config-interval=-1",
        "video/x-h265" => "rtph265pay pt=96 config-interval=-1",
        "audio/mpeg" => "rtpmp4gpay pt=97 max-ptime=64000000",
        "audio/x-alaw" => "rtppcmapay",
        "audio/x-mulaw" => "rtppcmupay",
        "audio/x-opus" => "rtpopuspay pt=98",
        _ => return None,
    })
}

/// One lap of a track: from its first buffer to one frame after its last.
fn lap_of(buffers: &[gst::Buffer]) -> Option<gst::ClockTime> {
    let first = buffers.first()?.pts()?;
    let last = buffers.last()?.pts()?;
    let frames = u64::try_from(buffers.len()).ok()?.checked_sub(1)?;
    let span = last.checked_sub(first)?;
    (frames > 0 && !span.is_zero()).then(|| span + span / frames)
}

/// Links a demuxer pad to an appsink that keeps every buffer in `into`.
fn collect(
    bin: &gst::Pipeline,
    pad: &gst::Pad,
    video: bool,
    into: Arc<Mutex<Collected>>,
) -> anyhow::Result<()> {
    let mut chain = vec![gst::ElementFactory::make("queue").build()?];
    if video {
        let caps = pad.current_caps().context("a video track without caps")?;
        let (parser, format) = match caps.structure(0).map(|s| s.name().as_str()) {
            Some("video/x-h264") => ("h264parse", "video/x-h264"),
            Some("video/x-h265") => ("h265parse", "video/x-h265"),
            other => bail!("cannot serve video {other:?}"),
        };
        chain.push(
            gst::ElementFactory::make(parser)
                .property("config-interval", -1i32)
                .build()?,
        );
        let caps = gst::Caps::builder(format)
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build();
        chain.push(
            gst::ElementFactory::make("capsfilter")
                .property("caps", caps)
                .build()?,
        );
    }
    let sink = gst_app::AppSink::builder().sync(false).build();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let mut collected = into.lock().unwrap();
                if collected.caps.is_none() {
                    collected.caps = sample.caps_owned();
                }
                if let Some(buffer) = sample.buffer_owned() {
                    collected.buffers.push(buffer);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    chain.push(sink.upcast());
    bin.add_many(&chain)?;
    gst::Element::link_many(&chain)?;
    for element in &chain {
        element.sync_state_with_parent()?;
    }
    pad.link(&chain[0].static_pad("sink").context("no sink pad")?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffers(every_ms: u64, count: u64) -> Vec<gst::Buffer> {
        (0..count)
            .map(|i| {
                let mut buffer = gst::Buffer::new();
                buffer
                    .get_mut()
                    .unwrap()
                    .set_pts(gst::ClockTime::from_mseconds(1000 + i * every_ms));
                buffer
            })
            .collect()
    }

    fn track(caps: &str, buffers: Vec<gst::Buffer>) -> Collected {
        Collected {
            caps: Some(caps.parse().unwrap()),
            buffers,
        }
    }

    #[test]
    fn a_lap_ends_one_frame_after_the_last_picture_and_sound_past_it_is_left_out() {
        gst::init().unwrap();
        let recording = Recording::from_tracks(vec![
            track("video/x-h264", buffers(40, 50)),
            // 20 ms blocks running 60 ms longer than the picture.
            track("audio/x-alaw", buffers(20, 103)),
        ])
        .unwrap();
        assert_eq!(recording.lap, gst::ClockTime::from_mseconds(2000));
        assert_eq!(recording.buffers.len(), 50 + 100);
        assert!(recording.buffers.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(recording.buffers[0].at, gst::ClockTime::ZERO);
        assert_eq!(
            recording.launch_description().unwrap(),
            "( appsrc name=track0 is-live=true format=time ! rtph264pay pt=96 config-interval=-1 \
             name=pay0 appsrc name=track1 is-live=true format=time ! rtppcmapay name=pay1 )"
        );
    }

    #[test]
    fn a_recording_without_sound_is_picture_only_and_an_empty_one_is_refused() {
        gst::init().unwrap();
        let recording = Recording::from_tracks(vec![
            track("video/x-h265", buffers(40, 10)),
            Collected::default(),
        ])
        .unwrap();
        assert_eq!(recording.tracks.len(), 1);
        assert!(Recording::from_tracks(vec![Collected::default(), Collected::default()]).is_err());
        assert!(payloader("video/x-vp8").is_none());
    }
}
