//! Live view in a real headless Chromium, inside a private network namespace: the WebRTC page
//! and the MSE page each play the demo camera (frames decoded, time advancing); its PCMA audio
//! arrives as Opus over WebRTC and as AAC over MSE. A PCMA camera and an AAC camera both play
//! Opus over WebRTC (`unify_audio`); without `unify_audio`, a G.711 camera's audio reaches the
//! browser as G.711, never transcoded.

mod common;

use std::time::Duration;

use common::chromium::{self, Chromium, GRAB_PICTURE, Page};
use common::fake_camera::FakeCamera;
use common::picture::Picture;
use common::{Ports, Vigil, cameras_yaml, free_port, netns};
use serde_json::Value;

/// What the page's peer connection receives, per kind: frames decoded, packets, codec.
const WEBRTC_STATS: &str = r#"(async () => {
  const pc = window.vigil && vigil.pc;
  if (!pc) return null;
  const out = {};
  const stats = await pc.getStats();
  stats.forEach(s => {
    if (s.type === 'inbound-rtp') out[s.kind] = {
      framesDecoded: s.framesDecoded || 0, packetsReceived: s.packetsReceived || 0,
      codecId: s.codecId, frameWidth: s.frameWidth || 0 };
  });
  stats.forEach(s => {
    for (const kind in out) if (s.type === 'codec' && out[kind].codecId === s.id) out[kind].mimeType = s.mimeType;
  });
  return out;
})()"#;

/// Prints Vigil's log when a test fails, after the fact.
struct LogOnFailure(Vigil);

impl Drop for LogOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- vigil log ---\n{}", self.0.output());
        }
    }
}

fn start_vigil() -> (LogOnFailure, u16) {
    let web_port = free_port();
    let mut vigil = Vigil::start(&format!(
        "web_port: {web_port}\napi_port: {}\nrtsp_port: {}\nlog_level: debug\n",
        free_port(),
        free_port()
    ));
    vigil.wait_for_log("demo camera online", Duration::from_secs(20));
    (LogOnFailure(vigil), web_port)
}

async fn open(chromium: &mut Chromium, web_port: u16, mode: &str) -> (Page, f64) {
    chromium
        .open_playing(&format!(
            "http://127.0.0.1:{web_port}/live?src=demo&mode={mode}"
        ))
        .await
}

#[test]
fn webrtc_plays_in_chromium_with_opus_audio() {
    if !netns::enter("webrtc_plays_in_chromium_with_opus_audio") {
        return;
    }
    let (mut vigil, web_port) = start_vigil();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut chromium = Chromium::launch().await;
        let (page, first) = open(&mut chromium, web_port, "webrtc").await;
        let stats = webrtc_stats_playing(&mut chromium, &page).await;
        assert_eq!(stats["video"]["mimeType"], "video/H264", "{stats}");
        assert_eq!(stats["audio"]["mimeType"], "audio/opus", "{stats}");
        assert_eq!(stats["video"]["frameWidth"], 640, "{stats}");
        // Still live a moment later: more frames decoded.
        let before = stats["video"]["framesDecoded"].as_u64().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let later = chromium.eval(&page, WEBRTC_STATS).await;
        let after = later["video"]["framesDecoded"].as_u64().unwrap();
        assert!(after >= before + 15, "{before} -> {after}: not playing on");
        // A High-profile stream on the offer's Constrained Baseline payload type, answered with
        // the offer's own profile-level-id: Chromium offers no High, and decodes it anyway.
        let answer = chromium.eval(&page, "vigil.pc.remoteDescription.sdp").await;
        let answer = answer.as_str().unwrap_or_default();
        let payload = stats["video"]["codecId"].as_str().unwrap_or_default();
        assert!(payload.contains("profile-level-id=42e01f"), "{payload}");
        assert!(
            answer.lines().any(|l| l.starts_with("a=fmtp:")
                && l.contains("packetization-mode=1")
                && l.contains("profile-level-id=42e01f")),
            "{answer}"
        );
        let errors = chromium.eval(&page, "vigil.errors").await;
        assert_eq!(errors, Value::Array(vec![]), "page errors");
        let transports = chromium.eval(&page, "vigil.transports").await;
        assert!(
            transports
                .as_array()
                .unwrap()
                .contains(&Value::from("webrtc")),
            "{transports}"
        );
        println!("WebRTC first frame after {first} ms; {stats}");
        // Stopping with a WebRTC viewer connected is as quick and clean as without.
        let (status, took) = vigil.0.terminate();
        assert!(
            status.success() && took < Duration::from_secs(5),
            "{status} after {took:?}"
        );
    });
}

/// Waits until the page's WebRTC receives video and audio; returns its stats.
async fn webrtc_stats_playing(chromium: &mut Chromium, page: &Page) -> Value {
    let playing = format!(
        "(async () => {{ const s = await {WEBRTC_STATS}; \
         return s && s.video && s.audio && s.video.framesDecoded > 10 && s.audio.packetsReceived > 10 ? s : null; }})()"
    );
    chromium
        .wait_for(page, &playing, Duration::from_secs(30))
        .await
}

#[test]
fn a_pcma_camera_and_an_aac_camera_both_play_opus_over_webrtc() {
    if !netns::enter("a_pcma_camera_and_an_aac_camera_both_play_opus_over_webrtc") {
        return;
    }
    let tapo = FakeCamera::start(&["--audio", "pcma"]);
    let reolink = FakeCamera::start(&["--audio", "aac"]);
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&format!(
        "log_level: debug\n{}",
        cameras_yaml(&[("nursery", &tapo.url()), ("playroom", &reolink.url())])
    )));
    vigil.wait_for_log("panel listening", Duration::from_secs(20));
    for camera in ["nursery", "playroom"] {
        common::wait_until(&format!("{camera} online"), Duration::from_secs(20), || {
            common::producer(ports.web, camera)["state"] == "online"
        });
    }
    let vigil = LogOnFailure(vigil);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut chromium = Chromium::launch().await;
        for camera in ["nursery", "playroom"] {
            let url = format!(
                "http://127.0.0.1:{}/live?src={camera}&mode=webrtc",
                ports.web
            );
            let (page, _) = chromium.open_playing(&url).await;
            let stats = webrtc_stats_playing(&mut chromium, &page).await;
            assert_eq!(
                stats["audio"]["mimeType"], "audio/opus",
                "{camera}: {stats}"
            );
            assert_eq!(
                stats["video"]["mimeType"], "video/H264",
                "{camera}: {stats}"
            );
        }
    });
    // Each camera's Opus comes from one transcoder, fed with the AAC both cameras now send.
    let log = vigil.0.output();
    for camera in ["nursery", "playroom"] {
        let started = log
            .lines()
            .filter(|l| l.contains("audio transcoder starting") && l.contains(camera))
            .count();
        assert_eq!(started, 1, "{camera}'s transcoders:\n{log}");
    }
}

/// Vigil with `camera` as `nursery`, online, and `unify_audio: false`: the hub carries the
/// camera's own audio (G.711 stays G.711).
fn vigil_with_camera_audio_as_sent(camera: &FakeCamera) -> (Vigil, Ports) {
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&format!(
        "log_level: debug\nunify_audio: false\n{}",
        cameras_yaml(&[("nursery", &camera.url())])
    )));
    vigil.wait_for_log("panel listening", Duration::from_secs(20));
    common::wait_until("nursery online", Duration::from_secs(20), || {
        common::producer(ports.web, "nursery")["state"] == "online"
    });
    (vigil, ports)
}

#[test]
fn a_g711_camera_is_heard_untranscoded_over_webrtc() {
    if !netns::enter("a_g711_camera_is_heard_untranscoded_over_webrtc") {
        return;
    }
    let camera = FakeCamera::start(&["--audio", "pcmu"]);
    let (vigil, ports) = vigil_with_camera_audio_as_sent(&camera);
    let vigil = LogOnFailure(vigil);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut chromium = Chromium::launch().await;
        let url = format!(
            "http://127.0.0.1:{}/live?src=nursery&mode=webrtc",
            ports.web
        );
        let (page, _) = chromium.open_playing(&url).await;
        let stats = webrtc_stats_playing(&mut chromium, &page).await;
        assert_eq!(stats["audio"]["mimeType"], "audio/PCMU", "{stats}");
        assert_eq!(stats["video"]["mimeType"], "video/H264", "{stats}");
        // Still heard a moment later, in 60 ms packets (the camera's 20 ms frames joined):
        // about 33 in 2 s, where 20 ms packets would be 100.
        let before = stats["audio"]["packetsReceived"].as_u64().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let later = chromium.eval(&page, WEBRTC_STATS).await;
        let after = later["audio"]["packetsReceived"].as_u64().unwrap();
        assert!(
            (before + 25..=before + 60).contains(&after),
            "{before} -> {after} audio packets in 2 s"
        );
    });
    let log = vigil.0.output();
    assert!(
        !log.contains("audio transcoder starting"),
        "a transcoder ran for a G.711 viewer:\n{log}"
    );
}

/// WebRTC viewers are fed by the hub on the camera's thread: one joining a camera that others
/// watch must still start at once from the cached GOP (not at the camera's next keyframe, 4 s
/// away here), with a whole picture, while the others play on.
#[test]
fn a_webrtc_viewer_joining_a_watched_camera_starts_at_once_with_a_whole_picture() {
    if !netns::enter("a_webrtc_viewer_joining_a_watched_camera_starts_at_once_with_a_whole_picture")
    {
        return;
    }
    let camera = FakeCamera::start(&[
        "--pattern",
        "pinwheel",
        "--gop",
        "60",
        "--slices",
        "2",
        "--audio",
        "pcma",
    ]);
    let (vigil, ports) = vigil_with_camera_audio_as_sent(&camera);
    let _vigil = LogOnFailure(vigil);
    let reference = Picture::pattern("pinwheel", 640, 360);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use base64::Engine;
        let mut chromium = Chromium::launch().await;
        let url = format!(
            "http://127.0.0.1:{}/live?src=nursery&mode=webrtc",
            ports.web
        );
        let (watching, _) = chromium.open_playing(&url).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for joiner in 0..2 {
            let (page, first_ms) = chromium.open_playing(&url).await;
            // The very first picture shown: the newest of the cached GOP, decoded through it.
            let png = chromium.eval(&page, GRAB_PICTURE).await;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(png.as_str().unwrap_or_default())
                .unwrap();
            let picture = Picture::from_bytes(&bytes).unwrap();
            let psnr = picture.psnr(&reference);
            eprintln!("joining viewer {joiner}: first frame {first_ms:.0} ms, {psnr:.1} dB");
            assert!(psnr >= 35.0, "joining viewer {joiner}: {psnr:.1} dB");
            assert!(
                first_ms < 1000.0,
                "joining viewer {joiner}: first frame after {first_ms:.0} ms (GOP 4 s)"
            );
            let stats = webrtc_stats_playing(&mut chromium, &page).await;
            assert_eq!(stats["audio"]["mimeType"], "audio/PCMA", "{stats}");
        }
        // The first viewer played on all along.
        let before = chromium.eval(&watching, WEBRTC_STATS).await["video"]["framesDecoded"]
            .as_u64()
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = chromium.eval(&watching, WEBRTC_STATS).await["video"]["framesDecoded"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            after >= before + 10,
            "watching viewer: {before} -> {after} frames in 1 s"
        );
    });
}

#[test]
fn mse_plays_in_chromium_with_aac_audio() {
    if !netns::enter("mse_plays_in_chromium_with_aac_audio") {
        return;
    }
    let (vigil, web_port) = start_vigil();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut chromium = Chromium::launch().await;
        let (page, first) = open(&mut chromium, web_port, "mse").await;
        let t1 = chromium
            .wait_for(
                &page,
                "document.getElementById('video').currentTime",
                Duration::from_secs(10),
            )
            .await
            .as_f64()
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let media = chromium
            .eval(
                &page,
                "(() => { const v = document.getElementById('video'); return { t: v.currentTime, \
                 frames: v.getVideoPlaybackQuality().totalVideoFrames, \
                 audioBytes: v.webkitAudioDecodedByteCount, width: v.videoWidth }; })()",
            )
            .await;
        let t2 = media["t"].as_f64().unwrap();
        assert!(t2 > t1 + 1.0, "video time {t1} -> {t2}: not advancing");
        assert!(media["frames"].as_u64().unwrap() > 10, "{media}");
        assert!(
            media["audioBytes"].as_u64().unwrap() > 0,
            "no audio decoded: {media}"
        );
        assert_eq!(media["width"], 640, "{media}");
        let transports = chromium.eval(&page, "vigil.transports").await;
        assert!(
            transports.as_array().unwrap().contains(&Value::from("mse")),
            "{transports}"
        );
        println!("MSE first frame after {first} ms; {media}");
    });
    drop(vigil);
}

#[test]
fn an_offer_posted_to_api_webrtc_gets_a_complete_answer_that_plays() {
    if !netns::enter("an_offer_posted_to_api_webrtc_gets_a_complete_answer_that_plays") {
        return;
    }
    let (vigil, web_port) = start_vigil();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut chromium = Chromium::launch().await;
        let page = chromium.open("about:blank").await;
        let offer = chromium.eval(&page, chromium::RECVONLY_OFFER).await;
        let offer = offer.as_str().unwrap().to_string();
        let url = format!("http://127.0.0.1:{web_port}/api/webrtc?src=demo");
        let client = reqwest::Client::new();

        // WHEP: SDP in, 201 and SDP out.
        let whep = client
            .post(&url)
            .header("content-type", "application/sdp")
            .body(offer.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(whep.status(), 201);
        assert_eq!(whep.headers()["content-type"], "application/sdp");
        assert!(whep.text().await.unwrap().contains("a=candidate:"));

        // JSON, as Home Assistant's client sends it; this answer is the one played.
        let json: Value = client
            .post(&url)
            .header("content-type", "application/json")
            .body(serde_json::json!({ "type": "offer", "sdp": offer }).to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(json["type"], "answer");
        let answer = json["sdp"].as_str().unwrap();
        assert!(answer.contains("a=candidate:"), "no candidates in {answer}");
        let answer = serde_json::to_string(answer).unwrap();
        chromium
            .eval(
                &page,
                &format!(
                    "pc.setRemoteDescription({{type: 'answer', sdp: {answer}}}).then(() => true)"
                ),
            )
            .await;
        let decoded = chromium
            .wait_for(&page, chromium::FRAMES_DECODED, Duration::from_secs(30))
            .await;
        println!("POST /api/webrtc: {decoded} frames decoded");

        // A viewer ends with its browser tab, and one that never connects ends on its own,
        // each freeing its slot.
        chromium.close(page).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while vigil.0.output().matches("WebRTC viewer ended").count() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the viewers did not end:\n{}",
                vigil.0.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}
