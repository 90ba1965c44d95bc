//! The built-in demo camera: a GStreamer test pattern with a clock and a quiet tone, fed into a
//! camera hub like a real camera's stream, so that a newcomer who starts Vigil with no camera
//! configured sees every part working at once.
//!
//! This is the one place where Vigil encodes video: the demo *is* the camera. Camera streams are
//! never re-encoded.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow};
use futures::StreamExt;
use gst::prelude::*;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::describe::{audio_status, video_status};
use super::hub::{Hub, Track};
use super::pcm::{self, PcmOutput};
use super::sink::Session;
use super::unify;
use super::{AudioStatus, CameraState, CameraStatus};

pub use crate::config::DEMO_CAMERA_NAME;

/// The demo pipeline as a launch description: H.264 High profile video at 640×360, 15 fps, one
/// keyframe a second, and an 8 kHz A-law tone in 20 ms packets, like a cheap IP camera sends.
/// `format=I420` keeps the video 4:2:0 as cameras send it (otherwise x264 encodes the test
/// pattern as High 4:4:4, which browsers cannot play), and `dct8x8` makes it High as most
/// cameras' main streams are (x264's ultrafast preset alone gives Constrained Baseline).
pub const DEMO_PIPELINE: &str = "\
    videotestsrc is-live=true pattern=ball name=demo-video \
    ! video/x-raw,format=I420,width=640,height=360,framerate=15/1 \
    ! clockoverlay time-format=\"%H:%M:%S\" halignment=right valignment=top font-desc=\"Sans 18\" \
    ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bitrate=800 dct8x8=true \
    ! video/x-h264,profile=high \
    ! h264parse config-interval=-1 \
    ! video/x-h264,stream-format=byte-stream,alignment=au \
    ! appsink name=video sync=false max-buffers=64 drop=true \
    audiotestsrc is-live=true wave=sine freq=440 volume=0.05 samplesperbuffer=160 name=demo-audio \
    ! audio/x-raw,rate=8000,channels=1 ! alawenc ! tee name=audio-tee allow-not-linked=true \
    ! appsink name=audio sync=false max-buffers=64 drop=true";

/// Runs the demo camera into `hub` until `shutdown`, reporting on `status` and decoding its
/// tone for the detector into `pcm`; with `unify_audio` its A-law reaches the hub as AAC, as a
/// real camera's would. The pipeline reaches `Null` on every exit.
pub async fn run(
    hub: Arc<Hub>,
    status: watch::Sender<CameraStatus>,
    pcm: PcmOutput,
    unify_audio: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pipeline = gst::parse::launch(DEMO_PIPELINE)
        .context("cannot build the demo camera (are the GStreamer plugins installed?)")?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("the demo description is not a pipeline"))?;
    let _null_on_exit = NullOnDrop(pipeline.clone());
    let session = Session::begin(hub.clone(), true, true);
    let tee = pipeline
        .by_name("audio-tee")
        .context("the demo pipeline has no audio tee")?;
    pcm.begin_session();
    pcm::link_decoder(
        pipeline.upcast_ref(),
        &tee,
        "alawdec",
        DEMO_CAMERA_NAME,
        pcm,
    )?;
    let camera_audio = match unify_audio {
        true => Some(transcode_to_aac(&pipeline, &tee)?),
        false => None,
    };
    for (name, track) in [("video", Track::Video), ("audio", Track::Audio)] {
        let sink = pipeline
            .by_name(name)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .with_context(|| format!("the demo pipeline has no appsink '{name}'"))?;
        session.connect(&sink, track);
    }
    let bus = pipeline.bus().context("pipeline without a bus")?;
    let mut messages = bus.stream();
    pipeline
        .set_state(gst::State::Playing)
        .context("cannot start the demo camera")?;
    tracing::info!(camera = DEMO_CAMERA_NAME, "demo camera started");

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let received = session.received();
                let kbps = (received.bytes.saturating_sub(last.1) * 8) as f64
                    / last.0.elapsed().as_secs_f64().max(0.001) / 1000.0;
                last = (Instant::now(), received.bytes);
                if received.video_frames > 0 {
                    status.send_if_modified(|s| {
                        let was = s.state;
                        s.bitrate_kbps = kbps.round() as u32;
                        if was != CameraState::Online {
                            *s = demo_status(&hub, kbps, camera_audio.clone());
                            tracing::info!(camera = DEMO_CAMERA_NAME, "demo camera online");
                        }
                        true
                    });
                }
            }
            message = messages.next() => {
                let Some(message) = message else { return Ok(()) };
                if let gst::MessageView::Error(e) = message.view() {
                    let reason = format!("demo camera failed: {}", e.error());
                    status.send_modify(|s| {
                        s.state = CameraState::Offline;
                        s.reason = Some(reason.clone());
                        s.since = SystemTime::now();
                    });
                    return Err(anyhow!("{reason} ({})", e.debug().unwrap_or_default()));
                }
            }
        }
    }
}

/// Puts the AAC chain between the demo's audio tee and its hub appsink; returns the demo's own
/// audio, for the status.
fn transcode_to_aac(pipeline: &gst::Pipeline, tee: &gst::Element) -> anyhow::Result<AudioStatus> {
    let sink = pipeline
        .by_name("audio")
        .context("the demo pipeline has no audio appsink")?;
    tee.unlink(&sink);
    let chain = unify::aac_chain("alawdec", Some(8_000), DEMO_CAMERA_NAME)?;
    pipeline.add_many(&chain)?;
    let mut linked: Vec<&gst::Element> = vec![tee];
    linked.extend(chain.iter());
    linked.push(&sink);
    gst::Element::link_many(linked)?;
    Ok(AudioStatus {
        codec: "PCMA".into(),
        sample_rate: 8_000,
        channels: 1,
        restreamed_as: Some("AAC".into()),
    })
}

fn demo_status(hub: &Hub, kbps: f64, camera_audio: Option<AudioStatus>) -> CameraStatus {
    let info = hub.info();
    CameraStatus {
        state: CameraState::Online,
        reason: None,
        since: SystemTime::now(),
        video: info.as_ref().and_then(|i| video_status(i.video.as_ref()?)),
        audio: camera_audio.or_else(|| info.as_ref().and_then(|i| audio_status(i.audio.as_ref()?))),
        bitrate_kbps: kbps.round() as u32,
        reconnects: 0,
    }
}

/// Sets a pipeline to `Null` when dropped, whatever path the owner leaves by.
pub(crate) struct NullOnDrop(pub gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}
