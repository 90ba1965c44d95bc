//! From an ingest pipeline's appsinks into the camera's [`Hub`]: one [`Session`] per pipeline
//! run collects the tracks' formats, announces them once every expected track has negotiated,
//! and pushes each access unit with its running time and keyframe flag. Frames that arrive
//! before the last track negotiated are held (a few seconds' worth) and pushed once it has, so
//! the camera's first keyframe is not lost to a late audio track.
//!
//! Runs on GStreamer streaming threads: nothing here blocks or panics; a callback that cannot
//! make sense of a sample posts an element error and returns a flow error.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::hub::{Hub, StreamInfo, Track};

/// Counts what one session received, for the camera's status.
#[derive(Debug, Default, Clone, Copy)]
pub struct Received {
    pub video_frames: u64,
    pub audio_frames: u64,
    pub bytes: u64,
}

/// One run of an ingest pipeline, feeding one hub.
pub struct Session {
    hub: Arc<Hub>,
    state: Mutex<SessionState>,
}

struct SessionState {
    expect_video: bool,
    expect_audio: bool,
    /// The camera's audio stopped while its video went on ([`Session::pause_audio`]): the
    /// hub carries video alone until an audio frame comes again.
    audio_paused: bool,
    video: Option<gst::Caps>,
    audio: Option<gst::Caps>,
    announced: bool,
    received: Received,
    /// Frames waiting for the formats to be announced, oldest first.
    pending: VecDeque<Pending>,
}

/// A frame held until every expected track has its format.
struct Pending {
    track: Track,
    buffer: gst::Buffer,
    running_time: Duration,
    keyframe: bool,
}

/// How many frames are held before the formats are known (the oldest go first).
const MAX_PENDING: usize = 512;

impl Session {
    /// Starts a session on `hub` (its timeline continues from the last one).
    pub fn begin(hub: Arc<Hub>, expect_video: bool, expect_audio: bool) -> Arc<Self> {
        hub.begin_session();
        Arc::new(Self {
            hub,
            state: Mutex::new(SessionState {
                expect_video,
                expect_audio,
                audio_paused: false,
                video: None,
                audio: None,
                announced: false,
                received: Received::default(),
                pending: VecDeque::new(),
            }),
        })
    }

    /// Changes which tracks to wait for (an RTSP camera says which it has once set up).
    pub fn expect(&self, video: bool, audio: bool) {
        let mut state = self.state.lock().unwrap();
        state.expect_video = video;
        state.expect_audio = audio;
        self.announce_if_ready(&mut state);
    }

    /// The camera's audio stopped while its video goes on: consumers are told the stream has
    /// no audio (an MP4 muxer would wait for it forever), until audio comes again.
    pub fn pause_audio(&self) {
        let mut state = self.state.lock().unwrap();
        if state.expect_audio && !state.audio_paused {
            state.audio_paused = true;
            state.expect_audio = false;
            state.announced = false;
            self.announce_if_ready(&mut state);
        }
    }

    /// True while the camera's audio is paused (see [`Session::pause_audio`]).
    pub fn audio_paused(&self) -> bool {
        self.state.lock().unwrap().audio_paused
    }

    /// Which tracks have their format so far (video, audio).
    pub fn negotiated(&self) -> (bool, bool) {
        let state = self.state.lock().unwrap();
        (state.video.is_some(), state.audio.is_some())
    }

    /// What arrived so far.
    pub fn received(&self) -> Received {
        self.state.lock().unwrap().received
    }

    /// Wires `appsink` as the sink of `track`. Samples before every expected track has its
    /// format are dropped: a consumer must know all formats before its first frame.
    pub fn connect(self: &Arc<Self>, appsink: &gst_app::AppSink, track: Track) {
        let session = Arc::downgrade(self);
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let Some(session) = session.upgrade() else {
                        return Err(gst::FlowError::Flushing);
                    };
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    session.on_sample(sink, track, &sample)
                })
                .build(),
        );
    }

    fn on_sample(
        &self,
        sink: &gst_app::AppSink,
        track: Track,
        sample: &gst::Sample,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let Some(buffer) = sample.buffer_owned() else {
            gst::element_error!(sink, gst::StreamError::Failed, ["sample without a buffer"]);
            return Err(gst::FlowError::Error);
        };
        let running_time = sample
            .segment()
            .and_then(|segment| segment.downcast_ref::<gst::ClockTime>())
            .and_then(|segment| segment.to_running_time(buffer.pts()))
            .or(buffer.pts());
        let Some(running_time) = running_time else {
            // Without a timestamp a frame cannot be placed; parsers always set one.
            return Ok(gst::FlowSuccess::Ok);
        };
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let running_time = Duration::from_nanos(running_time.nseconds());
        let mut state = self.state.lock().unwrap();
        if track == Track::Audio && state.audio_paused {
            // The camera's audio is back: consumers rebuild with it.
            state.audio_paused = false;
            state.expect_audio = true;
            state.announced = false;
        }
        if let Some(caps) = sample.caps() {
            let slot = match track {
                Track::Video => &mut state.video,
                Track::Audio => &mut state.audio,
            };
            if slot.as_ref().is_none_or(|c| c != caps) {
                *slot = Some(caps.to_owned());
                state.announced = false;
            }
        }
        state.pending.push_back(Pending {
            track,
            buffer,
            running_time,
            keyframe,
        });
        if state.pending.len() > MAX_PENDING {
            state.pending.pop_front();
        }
        self.announce_if_ready(&mut state);
        Ok(gst::FlowSuccess::Ok)
    }

    /// Hands the held frames to the hub once the formats are announced.
    fn flush(&self, state: &mut SessionState) {
        while let Some(frame) = state.pending.pop_front() {
            state.received.bytes += frame.buffer.size() as u64;
            match frame.track {
                Track::Video => state.received.video_frames += 1,
                Track::Audio => state.received.audio_frames += 1,
            }
            self.hub.push(
                frame.track,
                frame.buffer,
                frame.running_time,
                frame.keyframe,
            );
        }
    }

    fn announce_if_ready(&self, state: &mut SessionState) {
        if state.announced {
            self.flush(state);
            return;
        }
        let ready = (!state.expect_video || state.video.is_some())
            && (!state.expect_audio || state.audio.is_some());
        if ready {
            self.hub.set_info(StreamInfo {
                video: state.video.clone().filter(|_| state.expect_video),
                audio: state.audio.clone().filter(|_| state.expect_audio),
            });
            state.announced = true;
            // Frames of a track that is not expected (audio given up on) are not passed on.
            let (video, audio) = (state.expect_video, state.expect_audio);
            state.pending.retain(|f| match f.track {
                Track::Video => video,
                Track::Audio => audio,
            });
            self.flush(state);
        }
    }
}
