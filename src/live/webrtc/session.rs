//! One WebRTC viewer: its `webrtcbin` pipeline, the offer/answer exchange, and the task that
//! registers it with the camera's hub once the peer is connected (the hub then pushes its
//! frames on the camera's thread) and ends it when the peer is gone.
//!
//! GStreamer callbacks (candidates, state changes, RTCP) reach the task by `try_send` on bounded
//! channels or by atomics; nothing here blocks a GStreamer thread or panics in a callback.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_webrtc::{WebRTCPeerConnectionState, WebRTCRTPTransceiverDirection, WebRTCSDPType};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{AnswerPlan, AudioSend, Remote, Signal, Started};
use crate::camera::{CameraHandle, ConsumerKind, StreamInfo};
use crate::config::{IceKind, IceServer};
use crate::live::feed::{self, AudioFrom, FeedTargets};
use crate::live::pipeline::OwnedPipeline;
use crate::live::transcode::Target;
use crate::live::{AudioCodec, Live, LiveError, ViewerSlot};

/// A peer that has not connected this long after the answer is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// A peer that stays `disconnected` this long is gone.
const DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(8);

/// A connected browser sends RTCP every second or so; this long without any means it is gone
/// (a closed tab sends nothing more, and webrtcbin 1.22 does not notice on its own).
const RTCP_TIMEOUT: Duration = Duration::from_secs(8);

/// What the signalling side asks of a viewer.
#[derive(Debug)]
pub(super) enum Command {
    AddCandidate(String),
    /// The current local description, candidates included.
    LocalDescription(oneshot::Sender<Option<String>>),
}

/// What GStreamer threads tell the viewer task.
#[derive(Debug)]
enum Event {
    State(WebRTCPeerConnectionState),
    /// The browser said goodbye (RTCP BYE).
    Bye,
}

pub(super) struct Session {
    camera: CameraHandle,
    info: Arc<StreamInfo>,
    pipeline: OwnedPipeline,
    webrtcbin: gst::Element,
    video_src: gst_app::AppSrc,
    audio_src: Option<gst_app::AppSrc>,
    /// How the audio is made, when there is audio.
    audio_send: Option<AudioSend>,
    /// How long the camera's G.711 frames are joined into one packet.
    audio_join: Option<Duration>,
    events: mpsc::Receiver<Event>,
    /// `None` once the signalling side is gone; the peer connection may go on without it.
    commands: Option<mpsc::Receiver<Command>>,
    /// Milliseconds since `started` of the last RTCP packet from the browser.
    last_rtcp_ms: Arc<AtomicU64>,
    started: Instant,
    token: CancellationToken,
    _slot: ViewerSlot,
}

impl Session {
    /// Builds the pipeline, answers the offer and starts the viewer task.
    pub(super) async fn start(
        live: &Live,
        camera: &CameraHandle,
        info: Arc<StreamInfo>,
        offer: gst_sdp::SDPMessage,
        plan: AnswerPlan,
        ice_servers: &[IceServer],
        slot: ViewerSlot,
    ) -> Result<Started, LiveError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-webrtc{id}", camera.name());
        let pipeline = OwnedPipeline::new(&name, "WebRTC");
        let webrtcbin = pipeline.add("webrtcbin", &format!("{name}-bin"))?;
        webrtcbin.set_property_from_str("bundle-policy", "max-bundle");
        configure_ice(&webrtcbin, ice_servers);

        let (signals_tx, signals) = mpsc::channel(64);
        let (events_tx, events) = mpsc::channel(16);
        let last_rtcp_ms = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        connect_signals(&webrtcbin, signals_tx, events_tx.clone());
        watch_rtcp(&webrtcbin, last_rtcp_ms.clone(), started, events_tx);

        let video_src = feed::appsrc(&format!("{name}-video"), info.video.as_ref().unwrap());
        let video_pay = pipeline.add(video_payloader(&info)?, &format!("{name}-vpay"))?;
        video_pay.set_property("pt", plan.video.payload);
        video_pay.set_property("config-interval", -1i32);
        video_pay.set_property_from_str("aggregate-mode", "zero-latency");
        pipeline.adopt(&video_src)?;
        pipeline.link(&[video_src.upcast_ref(), &video_pay])?;

        let audio_src = match &plan.audio {
            Some(choice) => {
                // A plan sends the camera's audio only when the camera has audio.
                let own = || info.audio.clone().unwrap_or_else(gst::Caps::new_any);
                let (caps, elements): (gst::Caps, &[&str]) = match choice.send {
                    AudioSend::Camera(AudioCodec::Pcma) => (own(), &["rtppcmapay"]),
                    AudioSend::Camera(AudioCodec::Pcmu) => (own(), &["rtppcmupay"]),
                    AudioSend::Camera(_) => (own(), &["opusparse", "rtpopuspay"]),
                    // The transcoder's caps replace the placeholder with its first frame.
                    AudioSend::Transcoded => (
                        gst::Caps::builder("audio/x-opus")
                            .field("channel-mapping-family", 0i32)
                            .build(),
                        &["opusparse", "rtpopuspay"],
                    ),
                };
                let src = feed::appsrc(&format!("{name}-audio"), &caps);
                pipeline.adopt(&src)?;
                let mut chain: Vec<gst::Element> = vec![src.clone().upcast()];
                for (i, factory) in elements.iter().enumerate() {
                    chain.push(pipeline.add(factory, &format!("{name}-audio{i}"))?);
                }
                let pay = chain.last().cloned().expect("a payloader");
                pay.set_property("pt", choice.media.payload);
                pipeline.link(&chain.iter().collect::<Vec<_>>())?;
                Some((src, pay))
            }
            None => None,
        };
        pipeline.play()?;

        // webrtcbin 1.22 matches the offer's m-lines to existing transceivers by their codec
        // preferences when it answers, so the senders exist before the offer is set.
        send_on(&pipeline, &webrtcbin, &video_pay, &plan.video.caps, true)?;
        if let (Some(choice), Some((_, pay))) = (&plan.audio, &audio_src) {
            send_on(&pipeline, &webrtcbin, pay, &choice.media.caps, false)?;
        }
        let description = gst_webrtc::WebRTCSessionDescription::new(WebRTCSDPType::Offer, offer);
        promise(&webrtcbin, "set-remote-description", Some(&description))
            .await
            .map_err(|e| LiveError::BadOffer(format!("webrtcbin refused it: {e}")))?;

        let reply = promise(&webrtcbin, "create-answer", None)
            .await
            .map_err(|e| pipeline.error(format!("cannot create an answer: {e}")))?;
        let mut answer = reply
            .and_then(|s| s.get::<gst_webrtc::WebRTCSessionDescription>("answer").ok())
            .ok_or_else(|| {
                pipeline.error(
                    pipeline
                        .pending_error()
                        .unwrap_or_else(|| "webrtcbin gave no answer".into()),
                )
            })?;
        // Answer with the offer's own parameters for the payload type: webrtcbin drops its
        // `profile-level-id`, and a browser may refuse an answer whose profile differs from the
        // offer's. Chromium decodes the stream's real High profile either way (tested with no,
        // the offer's and the stream's profile-level-id).
        if let Some(fmtp) = &plan.video.fmtp {
            super::sdp::set_fmtp(answer.sdp_mut(), plan.video.mline, plan.video.payload, fmtp);
        }
        promise(&webrtcbin, "set-local-description", Some(&answer))
            .await
            .map_err(|e| pipeline.error(format!("cannot use its own answer: {e}")))?;
        let answer_text = answer
            .sdp()
            .as_text()
            .map_err(|e| pipeline.error(e.to_string()))?;

        let (commands_tx, commands) = mpsc::channel(64);
        let session = Session {
            camera: camera.clone(),
            info,
            pipeline,
            webrtcbin,
            video_src,
            audio_src: audio_src.map(|(src, _)| src),
            audio_send: plan.audio.as_ref().map(|a| a.send),
            audio_join: plan.audio.as_ref().map(|a| a.packet_span()),
            events,
            commands: Some(commands),
            last_rtcp_ms,
            started,
            token: live.token().child_token(),
            _slot: slot,
        };
        tracing::debug!(
            camera = camera.name(),
            viewer = name,
            "WebRTC viewer answered"
        );
        let live_for_task = live.clone();
        live.spawn(async move { session.run(&live_for_task, name).await });
        Ok(Started {
            answer: answer_text,
            signals,
            remote: Remote {
                commands: commands_tx,
            },
        })
    }

    /// The viewer task: waits for the connection, feeds the pipeline, ends it when the peer is
    /// gone. The pipeline reaches `Null` when the session is dropped.
    async fn run(mut self, live: &Live, name: String) {
        let camera = self.camera.name().to_string();
        let mut connect_deadline = Some(tokio::time::Instant::now() + CONNECT_TIMEOUT);
        let mut disconnected_since: Option<tokio::time::Instant> = None;
        let mut feeding: Option<
            std::pin::Pin<Box<dyn std::future::Future<Output = feed::FeedEnd> + Send>>,
        > = None;
        let mut failed = Box::pin(self.pipeline.first_error());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let reason = loop {
            tokio::select! {
                _ = self.token.cancelled() => break "Vigil is stopping".to_string(),
                error = &mut failed => break format!("pipeline failed: {error}"),
                end = async { feeding.as_mut().unwrap().await }, if feeding.is_some() => {
                    break format!("feed ended: {end:?}");
                }
                command = async { self.commands.as_mut().unwrap().recv().await },
                    if self.commands.is_some() => match command {
                    Some(Command::AddCandidate(candidate)) => {
                        self.webrtcbin
                            .emit_by_name::<()>("add-ice-candidate", &[&0u32, &candidate]);
                    }
                    Some(Command::LocalDescription(reply)) => {
                        let _ = reply.send(self.local_description());
                    }
                    None => self.commands = None,
                },
                event = self.events.recv() => match event {
                    Some(Event::State(WebRTCPeerConnectionState::Connected)) => {
                        disconnected_since = None;
                        if feeding.is_none() {
                            tracing::debug!(
                                camera,
                                viewer = name,
                                after_ms = self.started.elapsed().as_millis() as u64,
                                "WebRTC peer connected"
                            );
                            connect_deadline = None;
                            // The transport's sinks joined after the pipeline started: without
                            // a new latency, rtpbin cannot time its RTCP sender reports.
                            let _ = self.pipeline.get().recalculate_latency();
                            feeding = Some(Box::pin(self.feed(live)));
                        }
                    }
                    Some(Event::State(WebRTCPeerConnectionState::Disconnected)) => {
                        disconnected_since.get_or_insert_with(tokio::time::Instant::now);
                    }
                    Some(Event::State(state @ (WebRTCPeerConnectionState::Failed
                        | WebRTCPeerConnectionState::Closed))) => {
                        break format!("peer connection {state:?}");
                    }
                    Some(Event::State(_)) => {}
                    Some(Event::Bye) => break "the browser closed the connection".into(),
                    None => break "webrtcbin is gone".into(),
                },
                _ = tick.tick() => {
                    let now = tokio::time::Instant::now();
                    if connect_deadline.is_some_and(|d| now >= d) {
                        break format!("the peer did not connect within {CONNECT_TIMEOUT:?}");
                    }
                    if disconnected_since.is_some_and(|s| now - s >= DISCONNECTED_TIMEOUT) {
                        break format!("the peer stayed disconnected for {DISCONNECTED_TIMEOUT:?}");
                    }
                    let last = Duration::from_millis(self.last_rtcp_ms.load(Ordering::Relaxed));
                    if feeding.is_some() && self.started.elapsed().saturating_sub(last) >= RTCP_TIMEOUT {
                        break format!("no RTCP from the browser for {RTCP_TIMEOUT:?}");
                    }
                }
            }
        };
        tracing::debug!(camera, viewer = name, reason, "WebRTC viewer ended");
    }

    /// Registers with the camera's hub at the cached keyframe: the hub pushes into the appsrcs
    /// on the camera's thread. The future the task polls ends with the feed.
    fn feed(
        &self,
        live: &Live,
    ) -> impl std::future::Future<Output = feed::FeedEnd> + Send + 'static {
        let audio = self.audio_src.clone().map(|src| {
            let from = match self.audio_send {
                Some(AudioSend::Camera(_)) => AudioFrom::Camera,
                _ => AudioFrom::Transcoded(live.transcoded(&self.camera, Target::Opus)),
            };
            (src, from)
        });
        let targets = FeedTargets {
            video: self.video_src.clone(),
            audio,
            follow_caps: true,
            join_audio: self.audio_join,
        };
        feed::direct(
            &self.camera,
            ConsumerKind::WebRtc,
            targets,
            self.info.clone(),
            self.token.clone(),
        )
    }

    fn local_description(&self) -> Option<String> {
        self.webrtcbin
            .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
            .and_then(|d| d.sdp().as_text().ok())
    }
}

/// Sends `signal` with an optional description and a promise, and waits for the reply.
async fn promise(
    webrtcbin: &gst::Element,
    signal: &str,
    description: Option<&gst_webrtc::WebRTCSessionDescription>,
) -> Result<Option<gst::Structure>, String> {
    let (promise, reply) = gst::Promise::new_future();
    match description {
        Some(description) => webrtcbin.emit_by_name::<()>(signal, &[description, &promise]),
        None => webrtcbin.emit_by_name::<()>(signal, &[&None::<gst::Structure>, &promise]),
    }
    let reply = reply.await.map_err(|e| format!("{e:?}"))?;
    let reply = reply.map(|s| s.to_owned());
    if let Some(error) = reply
        .as_ref()
        .and_then(|s| s.get::<gst::glib::Error>("error").ok())
    {
        return Err(error.to_string());
    }
    Ok(reply)
}

fn video_payloader(info: &StreamInfo) -> Result<&'static str, LiveError> {
    match info.video.as_ref().and_then(crate::live::VideoCodec::of) {
        Some(crate::live::VideoCodec::H264) => Ok("rtph264pay"),
        Some(crate::live::VideoCodec::H265) => Ok("rtph265pay"),
        None => Err(LiveError::Unsupported(
            "the camera's video is not H.264 or H.265".into(),
        )),
    }
}

/// The first STUN server goes to `stun-server` (webrtcbin takes one); every TURN server is
/// added. Nothing is set when there is none: no external STUN by default.
fn configure_ice(webrtcbin: &gst::Element, servers: &[IceServer]) {
    if let Some(stun) = servers.iter().find(|s| s.kind == IceKind::Stun) {
        webrtcbin.set_property("stun-server", stun.to_webrtcbin_uri());
    }
    for turn in servers.iter().filter(|s| s.kind != IceKind::Stun) {
        if !webrtcbin.emit_by_name::<bool>("add-turn-server", &[&turn.to_webrtcbin_uri()]) {
            tracing::warn!(server = %turn, "webrtcbin refused the TURN server");
        }
    }
}

/// Links `payloader` to a new sink pad of webrtcbin and makes its transceiver send `caps`.
fn send_on(
    pipeline: &OwnedPipeline,
    webrtcbin: &gst::Element,
    payloader: &gst::Element,
    caps: &gst::Caps,
    nack: bool,
) -> Result<(), LiveError> {
    let sink = webrtcbin
        .request_pad_simple("sink_%u")
        .ok_or_else(|| pipeline.error("webrtcbin gave no sink pad"))?;
    let transceiver = sink.property::<gst_webrtc::WebRTCRTPTransceiver>("transceiver");
    transceiver.set_property("direction", WebRTCRTPTransceiverDirection::Sendonly);
    transceiver.set_property("codec-preferences", caps);
    if nack {
        // Retransmissions help over Wi-Fi; browsers offer RTX for every video payload type.
        transceiver.set_property("do-nack", true);
    }
    // The answer must name the SSRC we send (a browser routes an m-line's packets by it, and
    // with RTX the answer lists it anyway), but no data flows before the peer connects. So the
    // SSRC is fixed here (rtpbin accepts any), and webrtcbin hears it through the caps now.
    let ssrc = fastrand::u32(1..);
    let fixed = pipeline.add("capsfilter", &format!("{}-ssrc", payloader.name()))?;
    fixed.set_property(
        "caps",
        gst::Caps::builder("application/x-rtp")
            .field("ssrc", ssrc)
            .build(),
    );
    fixed
        .sync_state_with_parent()
        .map_err(|e| pipeline.error(e.to_string()))?;
    pipeline.link(&[payloader, &fixed])?;
    let src = fixed
        .static_pad("src")
        .ok_or_else(|| pipeline.error("capsfilter without a src pad"))?;
    src.link(&sink)
        .map_err(|e| pipeline.error(format!("cannot link to webrtcbin: {e:?}")))?;
    let mut announced = caps.clone();
    announced.make_mut().set("ssrc", ssrc);
    let stream_id = format!("{}-{ssrc}", payloader.name());
    if !(src.push_event(gst::event::StreamStart::new(&stream_id))
        && src.push_event(gst::event::Caps::new(&announced)))
    {
        tracing::debug!("webrtcbin did not take the announced caps; the answer may lack the SSRC");
    }
    Ok(())
}

/// Local candidates and state changes, from webrtcbin's threads to the viewer.
fn connect_signals(
    webrtcbin: &gst::Element,
    signals: mpsc::Sender<Signal>,
    events: mpsc::Sender<Event>,
) {
    let candidates = signals.clone();
    webrtcbin.connect("on-ice-candidate", false, move |values| {
        if let Some(candidate) = values.get(2).and_then(|v| v.get::<String>().ok()) {
            let _ = candidates.try_send(Signal::Candidate(candidate));
        }
        None
    });
    webrtcbin.connect_notify(Some("ice-gathering-state"), move |bin, _| {
        let state = bin.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state");
        if state == gst_webrtc::WebRTCICEGatheringState::Complete {
            let _ = signals.try_send(Signal::GatheringDone);
        }
    });
    webrtcbin.connect_notify(Some("connection-state"), move |bin, _| {
        let state = bin.property::<WebRTCPeerConnectionState>("connection-state");
        let _ = events.try_send(Event::State(state));
    });
}

/// Records when RTCP last came from the browser, through webrtcbin's internal rtpbin.
fn watch_rtcp(
    webrtcbin: &gst::Element,
    last: Arc<AtomicU64>,
    started: Instant,
    events: mpsc::Sender<Event>,
) {
    let Some(rtpbin) = webrtcbin.downcast_ref::<gst::Bin>().and_then(|bin| {
        bin.iterate_recurse()
            .into_iter()
            .flatten()
            .find(|e| e.factory().is_some_and(|f| f.name() == "rtpbin"))
    }) else {
        tracing::debug!("webrtcbin has no rtpbin: RTCP activity is not watched");
        last.store(u64::MAX / 2, Ordering::Relaxed);
        return;
    };
    rtpbin.connect("on-ssrc-active", false, move |_| {
        last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        None
    });
    rtpbin.connect("on-bye-ssrc", false, move |_| {
        let _ = events.try_send(Event::Bye);
        None
    });
}
