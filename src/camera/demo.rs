//! The built-in demo camera: a GStreamer test pattern with a clock and a quiet tone, so that a
//! newcomer who starts Vigil with no camera configured sees it working at once.
//!
//! This is the one place where Vigil encodes video: the demo *is* the camera. Camera streams are
//! never re-encoded.

use anyhow::{Context, anyhow};
use futures::StreamExt;
use gst::prelude::*;
use tokio_util::sync::CancellationToken;

pub use crate::config::DEMO_CAMERA_NAME;

/// The demo pipeline as a launch description: H.264 video at 640×360, 15 fps, one keyframe a
/// second, and an 8 kHz A-law tone, like a cheap IP camera sends.
pub const DEMO_PIPELINE: &str = "\
    videotestsrc is-live=true pattern=ball name=demo-video \
    ! video/x-raw,width=640,height=360,framerate=15/1 \
    ! clockoverlay time-format=\"%H:%M:%S\" halignment=right valignment=top font-desc=\"Sans 18\" \
    ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bitrate=800 \
    ! h264parse ! fakesink name=demo-video-sink sync=false \
    audiotestsrc is-live=true wave=sine freq=440 volume=0.05 name=demo-audio \
    ! audio/x-raw,rate=8000,channels=1 ! alawenc ! fakesink name=demo-audio-sink sync=false";

/// Runs the demo pipeline until `shutdown`, logging its state changes; the pipeline reaches `Null`
/// on every exit.
pub async fn run(shutdown: CancellationToken) -> anyhow::Result<()> {
    let pipeline = gst::parse::launch(DEMO_PIPELINE)
        .context("cannot build the demo camera (are the GStreamer plugins installed?)")?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("the demo description is not a pipeline"))?;
    let _null_on_exit = NullOnDrop(pipeline.clone());
    let bus = pipeline.bus().context("pipeline without a bus")?;
    let mut messages = bus.stream();
    pipeline
        .set_state(gst::State::Playing)
        .context("cannot start the demo camera")?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            message = messages.next() => {
                let Some(message) = message else { return Ok(()) };
                match message.view() {
                    gst::MessageView::StateChanged(s)
                        if s.src() == Some(pipeline.upcast_ref::<gst::Object>()) =>
                    {
                        tracing::info!(
                            camera = DEMO_CAMERA_NAME,
                            "demo pipeline {:?} -> {:?}",
                            s.old(),
                            s.current()
                        );
                    }
                    gst::MessageView::Error(e) => {
                        return Err(anyhow!(
                            "demo camera failed: {} ({})",
                            e.error(),
                            e.debug().unwrap_or_default()
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Sets a pipeline to `Null` when dropped, whatever path the owner leaves by.
struct NullOnDrop(gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}
