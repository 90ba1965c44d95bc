//! The camera-variety matrix: cameras as real ones differ (several slices per frame, H.264 and
//! H.265, parameter sets in the SDP, in band or both, SEI on every frame, long GOPs, RTP
//! timestamps wrapping past 2^32, a resolution change while streaming, and every audio format),
//! each end to end through every output: the RTSP restream, `stream.mp4`, snapshots, and MSE and
//! WebRTC in a real Chromium.
//!
//! A case passes when every output's picture is the camera's own: the fake camera draws a still
//! test pattern, and each output's decoded picture must be within 35 dB PSNR (luma) of that
//! pattern as drawn before encoding (see tests/common/picture.rs). A frame cut into one "frame"
//! per slice shows green blocks in a browser, far below that bar.
//!
//! The cry pictures are made by the snapshot code from the same last keyframe (src/cry_pictures.rs
//! calls `live::snapshot`), so the snapshot check covers them.

mod common;

use std::time::Duration;

use common::chromium::{Chromium, GRAB_PICTURE, Page};
use common::fake_camera::FakeCamera;
use common::picture::Picture;
use common::rtsp_client::{ClientOptions, RtspClient};
use common::{Ports, Vigil, netns, producer, wait_for_panel, wait_until};

/// The still pattern every case's camera draws.
const PATTERN: &str = "pinwheel";
/// How close an output's picture must be to the camera's own.
const MIN_PSNR_DB: f64 = 35.0;
/// The same for a snapshot: a JPEG is a second lossy encoding of the camera's keyframe (at
/// jpegenc's quality 85; measured 35.8-41 dB). A limited-range JPEG measured 23 dB, a picture
/// missing slices under 15 dB.
const MIN_SNAPSHOT_PSNR_DB: f64 = 32.0;

/// Whether Chromium can decode a codec here (no H.265 without a hardware decoder).
const CAN_PLAY: &str = r#"((codec) => {
  const MS = window.ManagedMediaSource || window.MediaSource;
  return !!MS && MS.isTypeSupported(`video/mp4; codecs="${codec}"`);
})"#;

/// Audio a WebRTC viewer received (packets) and video frames it decoded.
const WEBRTC_COUNTS: &str = r#"(async () => {
  const out = { audio: 0, video: 0 };
  if (!window.vigil || !vigil.pc) return out;
  (await vigil.pc.getStats()).forEach(s => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') out.audio = s.packetsReceived || 0;
    if (s.type === 'inbound-rtp' && s.kind === 'video') out.video = s.framesDecoded || 0;
  });
  return out;
})()"#;

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    /// The fake camera's options (besides the pattern and size).
    args: &'static [&'static str],
    width: u32,
    height: u32,
    /// `avc1` or `hvc1`: what a browser must decode.
    browser_codec: &'static str,
    /// The status's audio codec, sample rate and channels as the camera sends them.
    audio: Option<(&'static str, u32, u32)>,
}

const CASES: &[Case] = &[
    Case {
        name: "h264_slices2",
        args: &["--slices", "2", "--audio", "pcma"],
        width: 640,
        height: 360,
        browser_codec: "avc1.640029",
        audio: Some(("PCMA", 8000, 1)),
    },
    Case {
        name: "h264_slices4_sei",
        args: &["--slices", "4", "--sei", "--audio", "pcmu"],
        width: 1280,
        height: 720,
        browser_codec: "avc1.640029",
        audio: Some(("PCMU", 8000, 1)),
    },
    Case {
        name: "h264_sdp_only",
        args: &["--slices", "4", "--parameter-sets", "sdp", "--audio", "aac"],
        width: 640,
        height: 360,
        browser_codec: "avc1.640029",
        audio: Some(("AAC", 16000, 1)),
    },
    Case {
        name: "h264_in_band_only",
        args: &[
            "--slices",
            "4",
            "--parameter-sets",
            "in-band",
            "--audio",
            "aac",
            "--audio-rate",
            "48000",
            "--audio-channels",
            "2",
        ],
        width: 640,
        height: 360,
        browser_codec: "avc1.640029",
        audio: Some(("AAC", 48000, 2)),
    },
    Case {
        name: "h264_long_gop_30fps",
        args: &["--gop", "240", "--fps", "30", "--audio", "none"],
        width: 640,
        height: 360,
        browser_codec: "avc1.640029",
        audio: None,
    },
    Case {
        name: "h264_long_gop_10fps",
        args: &[
            "--gop", "80", "--fps", "10", "--slices", "2", "--audio", "pcma",
        ],
        width: 640,
        height: 360,
        browser_codec: "avc1.640029",
        audio: Some(("PCMA", 8000, 1)),
    },
    Case {
        name: "h265_slices2",
        args: &["--video", "h265", "--slices", "2", "--audio", "aac"],
        width: 640,
        height: 360,
        browser_codec: "hvc1.1.6.L153.B0",
        audio: Some(("AAC", 16000, 1)),
    },
    Case {
        name: "h265_slices4_in_band",
        args: &[
            "--video",
            "h265",
            "--slices",
            "4",
            "--parameter-sets",
            "in-band",
            "--audio",
            "pcmu",
        ],
        width: 640,
        height: 360,
        browser_codec: "hvc1.1.6.L153.B0",
        audio: Some(("PCMU", 8000, 1)),
    },
    Case {
        name: "h265_sdp_only",
        args: &[
            "--video",
            "h265",
            "--parameter-sets",
            "sdp",
            "--audio",
            "none",
        ],
        width: 640,
        height: 360,
        browser_codec: "hvc1.1.6.L153.B0",
        audio: None,
    },
];

/// The camera whose RTP timestamps wrap past 2^32 while a player watches.
const WRAP: Case = Case {
    name: "h264_rtp_wrap",
    args: &["--slices", "2", "--rtp-wrap-after", "12", "--audio", "pcma"],
    width: 640,
    height: 360,
    browser_codec: "avc1.640029",
    audio: Some(("PCMA", 8000, 1)),
};

fn start_camera(case: &Case) -> FakeCamera {
    let size = [case.width.to_string(), case.height.to_string()];
    let mut args = vec![
        "--pattern",
        PATTERN,
        "--width",
        &size[0],
        "--height",
        &size[1],
    ];
    args.extend_from_slice(case.args);
    FakeCamera::start(&args)
}

/// Prints Vigil's log when a test fails.
struct LogOnFailure(Vigil);

impl Drop for LogOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- vigil log ---\n{}", self.0.output());
        }
    }
}

/// Vigil with `cameras` (detection off: this is about pictures), each online.
fn start_vigil(cameras: &[(&Case, &FakeCamera)]) -> (LogOnFailure, Ports) {
    let ports = Ports::free();
    let mut yaml = String::from("log_level: debug\ncameras:\n");
    for (case, camera) in cameras {
        yaml.push_str(&format!(
            "  - name: {}\n    url: {}\n    detection: false\n",
            case.name,
            camera.url()
        ));
    }
    let vigil = LogOnFailure(Vigil::start(&ports.options(&yaml)));
    wait_for_panel(ports.web);
    for (case, _) in cameras {
        wait_until(
            &format!("{} online", case.name),
            Duration::from_secs(30),
            || producer(ports.web, case.name)["state"] == "online",
        );
    }
    (vigil, ports)
}

/// What went wrong with one case's outputs, collected so that one run shows them all.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn picture(&mut self, case: &Case, output: &str, got: Result<Picture, String>) {
        let reference = Picture::pattern(PATTERN, case.width, case.height);
        match got {
            Ok(picture) => {
                let psnr = picture.psnr(&reference);
                let min = if output == "snapshot" {
                    MIN_SNAPSHOT_PSNR_DB
                } else {
                    MIN_PSNR_DB
                };
                eprintln!("{} {output}: {picture:?}, {psnr:.1} dB", case.name);
                if psnr < min {
                    self.0.push(format!(
                        "{} {output}: {picture:?} is {psnr:.1} dB from the camera's own \
                         {}x{} picture (at least {min} dB)",
                        case.name, case.width, case.height
                    ));
                }
            }
            Err(e) => self
                .0
                .push(format!("{} {output}: no picture: {e}", case.name)),
        }
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} failures:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

/// The camera's status: codec, size and audio as it sends them.
fn check_status(failures: &mut Failures, ports: &Ports, case: &Case) {
    let status = producer(ports.web, case.name);
    let codec = if case.browser_codec.starts_with("hvc1") {
        "H.265"
    } else {
        "H.264"
    };
    failures.check(
        status["video"]["codec"] == codec
            && status["video"]["width"] == case.width
            && status["video"]["height"] == case.height,
        || format!("{} status video: {}", case.name, status["video"]),
    );
    let audio = &status["audio"];
    failures.check(
        match case.audio {
            Some((codec, rate, channels)) => {
                audio["codec"] == codec
                    && audio["sample_rate"] == rate
                    && audio["channels"] == channels
            }
            None => audio.is_null(),
        },
        || {
            format!(
                "{} status audio: {audio} (want {:?})",
                case.name, case.audio
            )
        },
    );
}

/// The outputs a player without a browser uses: RTSP (with its audio), `stream.mp4`, snapshot.
fn check_players(failures: &mut Failures, ports: &Ports, case: &Case) {
    let restream = ports.restream(case.name);
    failures.picture(case, "rtsp", Picture::from_rtsp(&restream, 15));
    let client = RtspClient::start(&restream, ClientOptions::default());
    let heard = wait_for(Duration::from_secs(10), || client.audio_buffers() > 5);
    failures.check(heard == case.audio.is_some(), || {
        format!(
            "{} rtsp audio: {} buffers (camera audio {:?}); sdp {:?}",
            case.name,
            client.audio_buffers(),
            case.audio,
            client.sdp()
        )
    });
    // A player joining while another plays is sent the GOP's cached packets first: its very
    // first picture (the GOP's keyframe, out of the cache) must be whole too.
    failures.picture(case, "rtsp joining", Picture::from_rtsp(&restream, 1));
    let api = format!("http://127.0.0.1:{}/api", ports.api);
    failures.picture(
        case,
        "stream.mp4",
        Picture::from_http(&format!("{api}/stream.mp4?src={}", case.name), 15),
    );
    failures.picture(
        case,
        "snapshot",
        Picture::from_http(&format!("{api}/frame.jpeg?src={}", case.name), 1),
    );
}

/// MSE and WebRTC in Chromium, for the codecs this Chromium decodes; returns whether it could.
async fn check_browser(
    failures: &mut Failures,
    chromium: &mut Chromium,
    ports: &Ports,
    case: &Case,
) -> bool {
    let probe = chromium.open("about:blank").await;
    let playable = chromium
        .eval(&probe, &format!("{CAN_PLAY}('{}')", case.browser_codec))
        .await
        .as_bool()
        .unwrap_or(false);
    chromium.close(probe).await;
    if !playable {
        eprintln!(
            "{}: this Chromium cannot decode {}",
            case.name, case.browser_codec
        );
        return false;
    }
    for mode in ["mse", "webrtc"] {
        let url = format!(
            "http://127.0.0.1:{}/live?src={}&mode={mode}",
            ports.web, case.name
        );
        let page = chromium.open(&url).await;
        let grabbed = grab(chromium, &page).await;
        failures.picture(case, mode, grabbed);
        if mode == "webrtc" {
            let counts = chromium.eval(&page, WEBRTC_COUNTS).await;
            let heard = counts["audio"].as_u64().unwrap_or(0) > 0;
            failures.check(heard == case.audio.is_some(), || {
                format!(
                    "{} webrtc audio: {counts} (camera audio {:?})",
                    case.name, case.audio
                )
            });
        }
        chromium.close(page).await;
    }
    true
}

/// The picture `page` shows a second after its first frame.
async fn grab(chromium: &mut Chromium, page: &Page) -> Result<Picture, String> {
    use base64::Engine;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let first_frame = "window.vigil && vigil.firstFrameMs";
    while chromium.eval(page, first_frame).await.is_null() {
        if std::time::Instant::now() > deadline {
            let state = chromium
                .eval(page, "JSON.stringify(window.vigil || null)")
                .await;
            return Err(format!("no first frame in 20 s: {state}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let png = chromium.eval(page, GRAB_PICTURE).await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap_or_default())
        .map_err(|e| e.to_string())?;
    Picture::from_bytes(&bytes)
}

fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
fn every_output_shows_every_camera_whole() {
    if !netns::enter("every_output_shows_every_camera_whole") {
        return;
    }
    let mut cases: Vec<Case> = CASES.to_vec();
    cases.push(WRAP);
    let cameras: Vec<FakeCamera> = cases.iter().map(start_camera).collect();
    let pairs: Vec<(&Case, &FakeCamera)> = cases.iter().zip(&cameras).collect();
    let (_vigil, ports) = start_vigil(&pairs);
    // A player that watches the wrapping camera from before its RTP timestamps wrap to after.
    let resident = RtspClient::start(&ports.restream(WRAP.name), ClientOptions::default());

    let mut failures = Failures::default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut chromium = runtime.block_on(Chromium::launch());
    let mut in_browser = Vec::new();
    for case in &cases {
        check_status(&mut failures, &ports, case);
        check_players(&mut failures, &ports, case);
        if runtime.block_on(check_browser(&mut failures, &mut chromium, &ports, case)) {
            in_browser.push(case.name);
        }
    }
    // Every H.264 case must have been seen in the browser.
    for case in cases.iter().filter(|c| c.browser_codec.starts_with("avc1")) {
        failures.check(in_browser.contains(&case.name), || {
            format!("{}: Chromium could not play H.264", case.name)
        });
    }

    // By now the wrapping camera's timestamps have wrapped (12 s after it started): the
    // resident player still gets video, and the camera never stalled.
    let before = resident.au_count();
    std::thread::sleep(Duration::from_secs(2));
    failures.check(resident.au_count() > before + 10, || {
        format!(
            "{} after the wrap: the resident player got {} frames in 2 s",
            WRAP.name,
            resident.au_count() - before
        )
    });
    failures.picture(
        &WRAP,
        "rtsp after the wrap",
        Picture::from_rtsp(&ports.restream(WRAP.name), 15),
    );
    failures.assert_none();
}

#[test]
fn a_resolution_change_while_streaming_reaches_every_output() {
    if !netns::enter("a_resolution_change_while_streaming_reaches_every_output") {
        return;
    }
    let before = Case {
        name: "resized",
        args: &["--slices", "2", "--audio", "pcma"],
        width: 640,
        height: 360,
        browser_codec: "avc1.640029",
        audio: Some(("PCMA", 8000, 1)),
    };
    let mut camera = start_camera(&before);
    let (_vigil, ports) = start_vigil(&[(&before, &camera)]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut chromium = runtime.block_on(Chromium::launch());
    let mut failures = Failures::default();
    // Viewers that watch across the change.
    let pages = runtime.block_on(async {
        let mut pages = Vec::new();
        for mode in ["webrtc", "mse"] {
            let url = format!(
                "http://127.0.0.1:{}/live?src={}&mode={mode}",
                ports.web, before.name
            );
            let page = chromium.open(&url).await;
            failures.picture(&before, mode, grab(&mut chromium, &page).await);
            pages.push((mode, page));
        }
        pages
    });

    camera.resize(480, 272);
    let after = Case {
        width: 480,
        height: 272,
        ..before
    };
    wait_until(
        "the new size in the status",
        Duration::from_secs(15),
        || producer(ports.web, after.name)["video"]["width"] == after.width,
    );
    check_status(&mut failures, &ports, &after);
    check_players(&mut failures, &ports, &after);
    runtime.block_on(async {
        for (mode, page) in &pages {
            // The viewer that was watching now shows the new picture (after reconnecting, for
            // MSE, whose MP4 cannot change size).
            let size = format!(
                "document.getElementById('video').videoWidth === {}",
                after.width
            );
            chromium
                .wait_for(page, &size, Duration::from_secs(20))
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let png = chromium
                .wait_for(page, GRAB_PICTURE, Duration::from_secs(10))
                .await;
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(png.as_str().unwrap_or_default())
                .unwrap_or_default();
            failures.picture(
                &after,
                &format!("{mode} across the change"),
                Picture::from_bytes(&bytes),
            );
        }
        check_browser(&mut failures, &mut chromium, &ports, &after).await;
    });
    failures.assert_none();
}

#[test]
fn a_camera_whose_audio_stops_keeps_its_picture_on_every_output() {
    let case = Case {
        name: "muted",
        args: &["--audio", "pcma"],
        width: 640,
        height: 360,
        browser_codec: "avc1.640029",
        audio: Some(("PCMA", 8000, 1)),
    };
    let mut camera = start_camera(&case);
    let (_vigil, ports) = start_vigil(&[(&case, &camera)]);
    let resident = RtspClient::start(&ports.restream(case.name), ClientOptions::default());
    resident.wait("video", Duration::from_secs(10), |c| c.au_count() > 10);

    // The camera's microphone goes off while its video goes on (an MP4 muxer waiting for the
    // audio gave no picture at all).
    camera.command("mute", "muted");
    wait_until("the status without audio", Duration::from_secs(15), || {
        producer(ports.web, case.name)["audio"].is_null()
    });
    let mut failures = Failures::default();
    let silent = Case {
        audio: None,
        ..case
    };
    check_status(&mut failures, &ports, &silent);
    check_players(&mut failures, &ports, &silent);
    let before = resident.au_count();
    std::thread::sleep(Duration::from_secs(1));
    failures.check(resident.au_count() > before + 5, || {
        "the resident RTSP player stopped getting video when the audio stopped".into()
    });

    camera.command("unmute", "unmuted");
    wait_until(
        "the status with audio again",
        Duration::from_secs(15),
        || producer(ports.web, case.name)["audio"]["codec"] == "PCMA",
    );
    check_status(&mut failures, &ports, &case);
    check_players(&mut failures, &ports, &case);
    failures.assert_none();
}
