//! One connection to a camera, parsed into access units for the [`Hub`], never decoded (only
//! the audio copy for the detector is, in [`super::pcm`]).
//!
//! An [`Ingest`] is one attempt; the actor makes a new one after every failure. Its source is
//! picked by the URL's scheme: RTSP ([`super::rtsp`]) or FLV over HTTP or RTMP
//! ([`super::flv`]); both link their tracks through the same chains ([`super::tracks`]) into
//! one [`Session`]. Pad and signal callbacks run on GStreamer threads and never block.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use gst::prelude::*;

use super::AudioStatus;
use super::failure::FailureKind;
use super::hub::Hub;
use super::pcm::PcmOutput;
use super::sink::{Received, Session};
use crate::config::{CameraUrl, StreamProtocol};

/// Settings shared by every camera's ingest.
#[derive(Debug, Clone, Copy)]
pub struct IngestOptions {
    /// The jitter buffer's latency (`camera_latency_ms`).
    pub latency: Duration,
    /// No frame for this long restarts the connection (`stall_timeout`); also the time the
    /// camera has to answer a request.
    pub stall_timeout: Duration,
    /// Audio other than AAC is transcoded to AAC before the hub (`unify_audio`).
    pub unify_audio: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(crate::config::DEFAULT_CAMERA_LATENCY_MS as u64),
            stall_timeout: Duration::from_secs(crate::config::DEFAULT_STALL_TIMEOUT as u64),
            unify_audio: true,
        }
    }
}

/// What the camera offered (its SDP, or its FLV header and tags) and what was taken.
#[derive(Debug, Default, Clone)]
pub struct Offer {
    /// The camera described its stream (DESCRIBE answered, or the FLV header arrived).
    pub described: bool,
    /// The encoding of the video and audio tracks taken (`H264`, `PCMA`, …).
    pub video: Option<String>,
    pub audio: Option<String>,
    /// Tracks offered but not taken, as `media/ENCODING` (or FLV's caps name).
    pub ignored: Vec<String>,
    /// The camera's own audio when the hub gets it transcoded to AAC (`unify_audio`).
    pub transcoded_audio: Option<AudioStatus>,
    /// Why the stream cannot be used, when the source found out before any element failed
    /// (garbage, or a codec `flvdemux` cannot read): the actor ends the attempt with it.
    pub refused: Option<(FailureKind, String)>,
}

/// A running attempt; dropping it stops the pipeline.
pub struct Ingest {
    pipeline: gst::Pipeline,
    session: Arc<Session>,
    offer: Arc<Mutex<Offer>>,
}

impl Ingest {
    /// Builds the pipeline for `url` and starts it; the connection itself happens on
    /// GStreamer's threads, its outcome arrives on the bus.
    pub fn start(
        camera: &str,
        url: &CameraUrl,
        options: IngestOptions,
        hub: Arc<Hub>,
        pcm: PcmOutput,
    ) -> anyhow::Result<Self> {
        let pipeline = gst::Pipeline::with_name(&format!("{camera}-ingest"));
        let session = Session::begin(hub, true, true);
        pcm.begin_session();
        let offer = Arc::new(Mutex::new(Offer::default()));
        let add_source = match url.protocol() {
            StreamProtocol::Rtsp => super::rtsp::add_source,
            StreamProtocol::HttpFlv | StreamProtocol::Rtmp => super::flv::add_source,
        };
        add_source(&pipeline, camera, url, options, &session, &offer, pcm)?;

        pipeline
            .set_state(gst::State::Playing)
            .context("cannot start the camera's pipeline")?;
        Ok(Self {
            pipeline,
            session,
            offer,
        })
    }

    /// The pipeline's messages (errors, end of stream).
    pub fn bus(&self) -> Option<gst::Bus> {
        self.pipeline.bus()
    }

    /// What arrived so far.
    pub fn received(&self) -> Received {
        self.session.received()
    }

    /// Which tracks have their format so far (video, audio).
    pub fn negotiated(&self) -> (bool, bool) {
        self.session.negotiated()
    }

    /// What the camera offered, once it described its stream.
    pub fn offer(&self) -> Offer {
        self.offer.lock().unwrap().clone()
    }

    /// The camera's audio stopped while its video goes on: the hub carries video alone
    /// until audio comes again.
    pub fn pause_audio(&self) {
        self.session.pause_audio();
    }

    /// True while the audio is paused after it stopped.
    pub fn audio_paused(&self) -> bool {
        self.session.audio_paused()
    }

    /// Stops waiting for a track the camera announced but does not send.
    pub fn give_up_audio(&self) {
        self.offer.lock().unwrap().audio = None;
        self.session.expect(true, false);
    }

    /// Stops the pipeline off the async runtime (an `rtspsrc` may take a moment to tear down).
    pub async fn stop(self) {
        let pipeline = self.pipeline.clone();
        let stopped = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null));
        if tokio::time::timeout(Duration::from_secs(5), stopped)
            .await
            .is_err()
        {
            tracing::warn!(pipeline = %self.pipeline.name(), "the camera's pipeline is slow to stop");
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
