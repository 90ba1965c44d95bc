//! One clip's pipeline: the camera's video as it sent it (parsed, never re-encoded) and its audio
//! as AAC (the camera's own AAC passed through; PCMA, PCMU or Opus decoded and encoded to AAC
//! here, with the settings `unify_audio` uses) into `mp4mux` with `faststart` (the index at the
//! front, so a phone plays the clip while it downloads), written to a hidden `.partial` file
//! and renamed once the muxer has finished.
//!
//! A pipeline per clip, fed from one camera's hub frames only; its timestamps start at the
//! clip's first keyframe. A write error (disk full, read-only folder) comes out of
//! [`ClipWriter::failed`]; the caller abandons the clip, which deletes the partial file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use gst::prelude::*;

use super::paths;
use crate::camera::unify;
use crate::camera::{Frame, StreamInfo, Track};
use crate::live::feed;
use crate::live::pipeline::OwnedPipeline;
use crate::live::{AudioCodec, VideoCodec};

/// How long the muxer may take to finish a clip (write its index and copy its media behind it).
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

/// A clip being written.
pub struct ClipWriter {
    pipeline: OwnedPipeline,
    video: gst_app::AppSrc,
    audio: Option<gst_app::AppSrc>,
    bus: gst::bus::BusStream,
    /// The camera-timeline position of the clip's first frame (a keyframe).
    start: Duration,
    /// Where the clip is written, and its final name.
    partial: PathBuf,
    final_path: PathBuf,
    faststart_file: PathBuf,
    first: [bool; 2],
}

impl ClipWriter {
    /// Starts a clip of `camera` in the formats `info` describes, written to `final_path`'s
    /// partial file, its timeline starting at `start` (the first keyframe's position).
    pub fn open(
        camera: &str,
        info: &StreamInfo,
        final_path: &Path,
        start: Duration,
    ) -> Result<ClipWriter, String> {
        let video_caps = info.video.as_ref().ok_or("the camera sends no video yet")?;
        let parser = match VideoCodec::of(video_caps) {
            Some(VideoCodec::H264) => "h264parse",
            Some(VideoCodec::H265) => "h265parse",
            None => {
                return Err(format!(
                    "the camera's video ({video_caps}) is not H.264 or H.265"
                ));
            }
        };
        let partial = paths::partial_path(final_path);
        let faststart_file = partial.with_file_name(format!(
            "{}.faststart{}",
            partial
                .file_name()
                .map(|n| n
                    .to_string_lossy()
                    .trim_end_matches(paths::PARTIAL_SUFFIX)
                    .to_string())
                .unwrap_or_default(),
            paths::PARTIAL_SUFFIX
        ));
        let name = format!("{camera}-clip");
        let pipeline = OwnedPipeline::new(&name, "clip");
        let text = |e: crate::live::LiveError| e.to_string();
        let video = feed::appsrc(&format!("{name}-video"), video_caps);
        pipeline.adopt(&video).map_err(text)?;
        let video_parse = pipeline
            .add(parser, &format!("{name}-vparse"))
            .map_err(text)?;
        let mux = pipeline
            .add("mp4mux", &format!("{name}-mux"))
            .map_err(text)?;
        mux.set_property("faststart", true);
        mux.set_property("faststart-file", faststart_file.to_string_lossy().as_ref());
        let sink = pipeline
            .add("filesink", &format!("{name}-file"))
            .map_err(text)?;
        sink.set_property("location", partial.to_string_lossy().as_ref());
        // A clip is finished by the muxer at EOS; no need to wait on the disk for each buffer.
        sink.set_property("async", false);
        pipeline
            .link(&[video.upcast_ref(), &video_parse])
            .map_err(text)?;
        link_to_mux(&video_parse, &mux, "video_%u")?;

        let audio = match &info.audio {
            Some(caps) => {
                let src = feed::appsrc(&format!("{name}-audio"), caps);
                pipeline.adopt(&src).map_err(text)?;
                let mut chain: Vec<gst::Element> = vec![src.clone().upcast()];
                match AudioCodec::of(caps) {
                    Some(AudioCodec::Aac) => {}
                    Some(codec) => {
                        let decoders: &[&str] = match codec {
                            AudioCodec::Pcma => &["alawdec"],
                            AudioCodec::Pcmu => &["mulawdec"],
                            _ => &["opusparse", "opusdec"],
                        };
                        for (i, factory) in decoders.iter().enumerate() {
                            chain.push(
                                pipeline
                                    .add(factory, &format!("{name}-adec{i}"))
                                    .map_err(text)?,
                            );
                        }
                        chain.push(
                            pipeline
                                .add("audioconvert", &format!("{name}-aconvert"))
                                .map_err(text)?,
                        );
                        chain.push(
                            pipeline
                                .add("audioresample", &format!("{name}-aresample"))
                                .map_err(text)?,
                        );
                        let raw = pipeline
                            .add("capsfilter", &format!("{name}-araw"))
                            .map_err(text)?;
                        let rate = caps
                            .structure(0)
                            .and_then(|s| s.get::<i32>("rate").ok())
                            .unwrap_or(16_000);
                        raw.set_property(
                            "caps",
                            gst::Caps::builder("audio/x-raw")
                                .field("rate", unify::aac_rate_for(rate))
                                .field("channels", 1i32)
                                .build(),
                        );
                        chain.push(raw);
                        let encoder = unify::aac_encoder(&format!("{name}-aenc")).map_err(|e| {
                            format!("cannot create avenc_aac (gstreamer1.0-libav): {e}")
                        })?;
                        pipeline.adopt(&encoder).map_err(text)?;
                        chain.push(encoder);
                    }
                    None => {
                        return Err(format!(
                            "the camera's audio ({caps}) cannot be written as AAC"
                        ));
                    }
                }
                chain.push(
                    pipeline
                        .add("aacparse", &format!("{name}-aparse"))
                        .map_err(text)?,
                );
                pipeline
                    .link(&chain.iter().collect::<Vec<_>>())
                    .map_err(text)?;
                link_to_mux(chain.last().unwrap_or(&video_parse), &mux, "audio_%u")?;
                Some(src)
            }
            None => None,
        };
        pipeline.link(&[&mux, &sink]).map_err(text)?;
        let bus = pipeline
            .get()
            .bus()
            .ok_or("the clip pipeline has no bus")?
            .stream();
        if let Some(parent) = partial.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        pipeline.play().map_err(text)?;
        Ok(ClipWriter {
            pipeline,
            video,
            audio,
            bus,
            start,
            partial,
            final_path: final_path.to_path_buf(),
            faststart_file,
            first: [true, true],
        })
    }

    /// Where the clip will be once finished.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// How much of the camera's timeline the clip covers up to `frame`.
    pub fn length_at(&self, frame: &Frame) -> Duration {
        frame.pts.saturating_sub(self.start)
    }

    /// Adds one hub frame (audio before the clip's first picture is left out).
    pub fn push(&mut self, frame: &Frame) -> Result<(), String> {
        let Some(pts) = frame.pts.checked_sub(self.start) else {
            return Ok(());
        };
        let (src, index) = match frame.track {
            Track::Video => (&self.video, 0),
            Track::Audio => match &self.audio {
                Some(src) => (src, 1),
                None => return Ok(()),
            },
        };
        let mut buffer = frame.buffer.clone();
        let writable = buffer.make_mut();
        let pts = gst::ClockTime::from_nseconds(pts.as_nanos() as u64);
        writable.set_pts(pts);
        writable.set_dts(pts);
        if std::mem::take(&mut self.first[index]) {
            writable.set_flags(gst::BufferFlags::DISCONT);
        }
        src.push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| format!("the clip pipeline refused a frame: {e:?}"))
    }

    /// Resolves with the pipeline's first error (such as the disk being full); never otherwise.
    pub async fn failed(&mut self) -> String {
        while let Some(message) = self.bus.next().await {
            if let gst::MessageView::Error(e) = message.view() {
                return format!("{} ({})", e.error(), e.debug().unwrap_or_default());
            }
        }
        std::future::pending().await
    }

    /// Ends the clip: the muxer writes its index, then the file takes its final name.
    pub async fn finish(mut self) -> Result<PathBuf, String> {
        let _ = self.video.end_of_stream();
        if let Some(audio) = &self.audio {
            let _ = audio.end_of_stream();
        }
        let bus = &mut self.bus;
        let ended = tokio::time::timeout(FINISH_TIMEOUT, async {
            while let Some(message) = bus.next().await {
                match message.view() {
                    gst::MessageView::Eos(_) => return Ok(()),
                    gst::MessageView::Error(e) => {
                        return Err(format!("{} ({})", e.error(), e.debug().unwrap_or_default()));
                    }
                    _ => {}
                }
            }
            Err("the clip pipeline's bus closed".to_string())
        })
        .await
        .unwrap_or_else(|_| Err(format!("the muxer did not finish in {FINISH_TIMEOUT:?}")));
        let _ = self.pipeline.get().set_state(gst::State::Null);
        let _ = std::fs::remove_file(&self.faststart_file);
        if let Err(e) = ended {
            let _ = std::fs::remove_file(&self.partial);
            return Err(e);
        }
        match std::fs::rename(&self.partial, &self.final_path) {
            Ok(()) => Ok(self.final_path.clone()),
            Err(e) => {
                let _ = std::fs::remove_file(&self.partial);
                Err(format!("cannot rename the finished clip: {e}"))
            }
        }
    }

    /// Gives the clip up (after an error): stops the pipeline and deletes what was written.
    pub fn abandon(self) {
        let _ = self.pipeline.get().set_state(gst::State::Null);
        let _ = std::fs::remove_file(&self.partial);
        let _ = std::fs::remove_file(&self.faststart_file);
    }
}

fn link_to_mux(from: &gst::Element, mux: &gst::Element, template: &str) -> Result<(), String> {
    let pad = mux
        .request_pad_simple(template)
        .ok_or_else(|| format!("mp4mux gave no {template} pad"))?;
    let src = from
        .static_pad("src")
        .ok_or("an element without a src pad")?;
    src.link(&pad)
        .map(|_| ())
        .map_err(|e| format!("cannot link to mp4mux: {e:?}"))
}
