//! WebRTC viewers: one `webrtcbin` per viewer, its appsrcs pushed by the camera's hub on the
//! camera's thread ([`crate::live::feed::direct`]). H.264 (or H.265) passes through untouched;
//! audio goes as the camera sends it where the browser takes it (G.711 at 8 kHz, joined into
//! 60 ms packets; Opus), otherwise as Opus from the camera's shared transcoder.
//!
//! Signalling is a few verbs ([`start`] with an offer, [`Remote::add_candidate`], the
//! [`Signal`]s a viewer sends back); this module never sees a WebSocket. A viewer lives until
//! its peer connection fails or closes, the browser stops sending RTCP, or Vigil stops — not
//! until the signalling socket closes (go2rtc's player closes it once WebRTC plays).

mod sdp;
mod session;

pub use sdp::{AnswerPlan, AudioChoice, AudioSend, MediaChoice, h264_profile, parse_offer, plan};

use std::time::Duration;

use tokio::sync::mpsc;

use super::{Live, LiveError, VideoCodec};
use crate::camera::{CameraHandle, ConsumerKind};
use crate::config::IceServer;

/// How long a complete (non-trickle) answer waits for ICE gathering.
const GATHERING_TIMEOUT: Duration = Duration::from_secs(5);

/// A viewer's offer: the SDP and the ICE servers its signalling carried.
#[derive(Debug, Clone)]
pub struct Offer {
    pub sdp: String,
    /// Servers the offer brought (Home Assistant passes its STUN and TURN servers).
    pub ice_servers: Vec<IceServer>,
}

/// What a viewer sends to its peer through signalling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A local ICE candidate (`candidate:…`), for the m-line the answer bundles on.
    Candidate(String),
    /// Every local candidate has been sent.
    GatheringDone,
}

/// The signalling side's handle on a running viewer.
#[derive(Debug, Clone)]
pub struct Remote {
    commands: mpsc::Sender<session::Command>,
}

impl Remote {
    /// Hands the viewer a candidate of the browser's. Empty text (end of candidates) is ignored.
    pub fn add_candidate(&self, candidate: &str) {
        let candidate = candidate.trim();
        let candidate = candidate.strip_prefix("a=").unwrap_or(candidate);
        if candidate.is_empty() {
            return;
        }
        if self
            .commands
            .try_send(session::Command::AddCandidate(candidate.to_string()))
            .is_err()
        {
            tracing::debug!("remote candidate dropped: the viewer has ended or is busy");
        }
    }
}

/// A started viewer: the answer to send, then candidates as they are gathered.
pub struct Started {
    pub answer: String,
    pub signals: mpsc::Receiver<Signal>,
    pub remote: Remote,
}

/// Starts a WebRTC viewer of `camera` for `offer` (trickle ICE: candidates follow the answer).
pub async fn start(live: &Live, camera: &CameraHandle, offer: Offer) -> Result<Started, LiveError> {
    let slot = live.viewer_slot(camera)?;
    // Wait for the camera's formats; frames are taken later, once the peer is connected, so
    // the cached GOP is fresh when it is sent.
    let (_, info) = super::subscribe_with_info(camera, ConsumerKind::WebRtc).await?;
    let message = parse_offer(&offer.sdp)?;
    let video_caps = info.video.clone().ok_or_else(|| LiveError::NoPicture {
        camera: camera.name().to_string(),
        why: "the camera sends no video".into(),
    })?;
    let codec = VideoCodec::of(&video_caps)
        .ok_or_else(|| LiveError::Unsupported(format!("cannot send {video_caps} over WebRTC")))?;
    let profile = h264_profile(&video_caps);
    let plan = plan(
        &message,
        camera.name(),
        codec,
        profile.as_deref(),
        info.audio.as_ref(),
    )?;
    let mut ice_servers = live.options().ice_servers.clone();
    ice_servers.extend(offer.ice_servers);
    session::Session::start(live, camera, info, message, plan, &ice_servers, slot).await
}

/// Starts a viewer and waits until ICE gathering is done: the answer then carries every local
/// candidate (for `POST /api/webrtc`, which has no channel for candidates).
pub async fn start_complete(
    live: &Live,
    camera: &CameraHandle,
    offer: Offer,
) -> Result<String, LiveError> {
    let mut started = start(live, camera, offer).await?;
    let gathered = tokio::time::timeout(GATHERING_TIMEOUT, async {
        while let Some(signal) = started.signals.recv().await {
            if signal == Signal::GatheringDone {
                break;
            }
        }
    })
    .await;
    if gathered.is_err() {
        tracing::debug!(
            camera = camera.name(),
            "ICE gathering still running after {GATHERING_TIMEOUT:?}; answering with what there is"
        );
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    let _ = started
        .remote
        .commands
        .send(session::Command::LocalDescription(reply))
        .await;
    Ok(answer.await.ok().flatten().unwrap_or(started.answer))
}
