//! Reolink's own streams: HTTP-FLV (`http://IP/flv?…&user=U&password=P`) and RTMP
//! (`rtmp://IP/bcs/…?…&user=U&password=P`), served by the fake camera (H.264 + AAC, as Reolink
//! sends), through the real binary: online, restreamed over RTSP (video and audio), played as
//! `stream.mp4`, snapshotted, heard by the detector, healing after the camera stops, a wrong
//! login shown as unauthorized and retried slowly, garbage and H.265 refused with words, and the
//! password in the query string never in the log or the API.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cry::clip;
use common::fake_camera::FakeCamera;
use common::rtsp_client::{ClientOptions, RtspClient};
use common::{Ports, Vigil, http_get, jpeg_size, producer, wait_until};

const USER: &str = "camadmin";
const PASSWORD: &str = "Flv-S3cret-99";

/// Prints Vigil's log when a test fails.
struct LogOnFailure<'a>(&'a Vigil);

impl Drop for LogOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- vigil log ---\n{}", self.0.output());
        }
    }
}

/// A fake Reolink camera serving `serve` (`flv-http` or `rtmp`) with the login, and `extra`.
fn reolink(serve: &str, extra: &[&str]) -> FakeCamera {
    let mut args = vec![
        "--serve",
        serve,
        "--path",
        "/flv",
        "--audio",
        "aac",
        "--gop",
        "15",
        "--username",
        USER,
        "--password",
        PASSWORD,
    ];
    args.extend_from_slice(extra);
    FakeCamera::start(&args)
}

/// The camera's URL with `password` in its query string, as a Reolink URL carries it.
fn url_with(camera: &FakeCamera, password: &str) -> String {
    format!("{}&user={USER}&password={password}", camera.ready_url())
}

/// Vigil with `cameras` (name, url); `extra` options after them.
fn start(cameras: &[(&str, String)], extra: &str) -> (Vigil, Ports) {
    let ports = Ports::free();
    let mut options = String::from("cameras:\n");
    for (name, url) in cameras {
        options.push_str(&format!("  - {{name: {name}, url: '{url}'}}\n"));
    }
    options.push_str(extra);
    let mut vigil = Vigil::start(&ports.options(&options));
    vigil.wait_for_log("panel listening", Duration::from_secs(20));
    (vigil, ports)
}

fn state(ports: &Ports, camera: &str) -> String {
    producer(ports.web, camera)["state"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

fn reason(ports: &Ports, camera: &str) -> String {
    producer(ports.web, camera)["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// `seconds` of an endless HTTP answer (`stream.mp4`), or a whole one, as bytes (curl: the
/// answer is binary and chunked).
fn fetch(url: &str, seconds: u32, into: &Path) -> Vec<u8> {
    let _ = Command::new("curl")
        .args(["-s", "--max-time", &seconds.to_string(), "-o"])
        .arg(into)
        .arg(url)
        .status()
        .expect("curl is installed by scripts/install-deps.sh");
    std::fs::read(into).unwrap_or_default()
}

/// Every "next attempt in …" delay Vigil logged (debug), in seconds.
fn retry_delays(log: &str, camera: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| {
            l.contains(&format!("camera={camera}")) || l.contains(&format!("camera=\"{camera}\""))
        })
        .filter_map(|l| l.split("next attempt in ").nth(1))
        .filter_map(|d| {
            let d = d.split_whitespace().next()?;
            match d.strip_suffix("ms") {
                Some(ms) => ms.parse::<f64>().ok().map(|ms| ms / 1000.0),
                None => d.strip_suffix('s')?.parse().ok(),
            }
        })
        .collect()
}

#[test]
fn flv_and_rtmp_cameras_restream_play_snapshot_and_are_heard() {
    let mut cameras = [
        ("porch", reolink("flv-http", &[])),
        ("garden", reolink("rtmp", &[])),
    ];
    let urls: Vec<(&str, String)> = cameras
        .iter()
        .map(|(name, camera)| (*name, url_with(camera, PASSWORD)))
        .collect();
    let (vigil, ports) = start(&urls, "");
    let _log = LogOnFailure(&vigil);
    let dir = common::TempDir::new("flv");

    for (name, _) in &cameras {
        wait_until(&format!("{name} online"), Duration::from_secs(30), || {
            state(&ports, name) == "online"
        });
        let status = producer(ports.web, name);
        assert_eq!(status["video"]["codec"], "H.264", "{status}");
        assert_eq!(status["audio"]["codec"], "AAC", "{status}");

        // The RTSP restream: video and audio.
        let client = RtspClient::start(&ports.restream(name), ClientOptions::default());
        client.wait(
            &format!("{name}: restreamed video and audio"),
            Duration::from_secs(15),
            |c| c.au_count() > 10 && c.audio_buffers() > 10,
        );
        assert!(client.error().is_none(), "{name}: {:?}", client.error());
        assert!(
            client.aus().iter().any(|au| au.keyframe),
            "{name}: no keyframe"
        );

        // stream.mp4: H.264 and AAC, as a player sees them.
        let mp4 = dir.path().join(format!("{name}.mp4"));
        let data = fetch(
            &format!("http://127.0.0.1:{}/api/stream.mp4?src={name}", ports.api),
            4,
            &mp4,
        );
        assert!(
            data.len() > 10_000,
            "{name}: {} bytes of stream.mp4",
            data.len()
        );
        let probe = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height",
            ])
            .args(["-of", "csv=p=0"])
            .arg(&mp4)
            .output()
            .expect("ffprobe");
        let streams = String::from_utf8_lossy(&probe.stdout);
        assert!(streams.contains("h264,640,360"), "{name}: {streams}");
        assert!(streams.contains("aac"), "{name}: {streams}");

        // A snapshot.
        let jpeg = fetch(
            &format!("http://127.0.0.1:{}/api/frame.jpeg?src={name}", ports.api),
            10,
            &dir.path().join(format!("{name}.jpg")),
        );
        assert_eq!(jpeg_size(&jpeg), Some((640, 360)), "{name}: snapshot");
    }

    // A cry into each camera's microphone is heard: an episode in the panel's history.
    for (name, camera) in &mut cameras {
        camera.play(&clip());
        wait_until(
            &format!("{name}: the cry heard"),
            Duration::from_secs(30),
            || {
                let (status, body) =
                    http_get(ports.web, &format!("/api/panel/history?camera={name}"));
                status == 200
                    && serde_json::from_str::<serde_json::Value>(&body)
                        .is_ok_and(|h| h["episodes"].as_array().is_some_and(|e| !e.is_empty()))
            },
        );
    }

    // The login in the query string is nowhere.
    let (_, streams) = http_get(ports.web, "/api/streams");
    let (_, api_streams) = http_get(ports.api, "/api/streams");
    let (_, panel) = http_get(ports.web, "/api/panel/state");
    for (what, text) in [
        ("the log", vigil.output()),
        ("/api/streams", streams.clone()),
        ("/api/streams (api port)", api_streams),
        ("the panel", panel),
    ] {
        assert!(!text.contains(PASSWORD), "the password in {what}: {text}");
        assert!(
            !text.contains(&format!("user={USER}")),
            "the user in {what}: {text}"
        );
    }
    assert!(streams.contains("user=***&password=***"), "{streams}");
}

#[test]
fn flv_and_rtmp_cameras_that_stop_mid_stream_come_back() {
    let mut cameras = [
        ("porch", reolink("flv-http", &[])),
        ("garden", reolink("rtmp", &[])),
    ];
    let urls: Vec<(&str, String)> = cameras
        .iter()
        .map(|(name, camera)| (*name, url_with(camera, PASSWORD)))
        .collect();
    let (vigil, ports) = start(&urls, "log_level: debug\n");
    let _log = LogOnFailure(&vigil);
    for (name, camera) in &mut cameras {
        wait_until(&format!("{name} online"), Duration::from_secs(30), || {
            state(&ports, name) == "online"
        });
        let client = RtspClient::start(&ports.restream(name), ClientOptions::default());
        client.wait("frames", Duration::from_secs(15), |c| c.au_count() > 10);

        camera.stop();
        wait_until(
            &format!("{name} seen offline"),
            Duration::from_secs(15),
            || state(&ports, name) != "online",
        );
        // While it is away, its port refuses: unreachable (souphttpsrc says only "internal
        // data stream error" then), retried on the fast schedule.
        wait_until(
            &format!("{name} unreachable"),
            Duration::from_secs(5),
            || reason(&ports, name).starts_with("unreachable"),
        );
        std::thread::sleep(Duration::from_secs(2));
        camera.restart();
        wait_until(
            &format!("{name} back online"),
            Duration::from_secs(15),
            || state(&ports, name) == "online",
        );
        let before = client.au_count();
        client.wait(
            &format!("{name}: frames after the outage"),
            Duration::from_secs(15),
            |c| c.au_count() > before + 10,
        );
        assert!(client.error().is_none(), "{name}: {:?}", client.error());
        assert_eq!(producer(ports.web, name)["reconnects"], 1, "{name}");
    }
}

#[test]
fn a_wrong_login_in_the_query_is_unauthorized_and_retried_slowly() {
    let cameras = [
        ("porch", reolink("flv-http", &[])),
        ("garden", reolink("rtmp", &[])),
    ];
    let urls: Vec<(&str, String)> = cameras
        .iter()
        .map(|(name, camera)| (*name, url_with(camera, "Wrong-Pa55word")))
        .collect();
    let (vigil, ports) = start(&urls, "log_level: debug\n");
    let _log = LogOnFailure(&vigil);
    for (name, _) in &cameras {
        wait_until(
            &format!("{name} unauthorized"),
            Duration::from_secs(15),
            || reason(&ports, name).starts_with("unauthorized (401)"),
        );
        let reason = reason(&ports, name);
        assert!(reason.contains("user=***&password=***"), "{reason}");
        assert!(
            reason.contains("check the user name and password"),
            "{reason}"
        );
    }
    std::thread::sleep(Duration::from_secs(6));
    let log = vigil.output();
    for (name, _) in &cameras {
        let delays = retry_delays(&log, name);
        assert!(!delays.is_empty(), "{name}: no retry logged");
        // The fast schedule retries every 0.5 s; a wrong password starts at 2.25 s (±20 %).
        assert!(delays.iter().all(|d| *d >= 1.5), "{name}: {delays:?}");
    }
    assert!(!log.contains("Wrong-Pa55word"), "the password in the log");
    assert!(!log.contains(PASSWORD));
}

#[test]
fn garbage_and_h265_over_flv_are_refused_with_words_and_retried_slowly() {
    let garbage = FakeCamera::start(&["--serve", "flv-http", "--path", "/flv", "--garbage"]);
    let h265 = FakeCamera::start(&["--serve", "flv-http", "--path", "/flv", "--video", "h265"]);
    let good = reolink("flv-http", &[]);
    let (vigil, ports) = start(
        &[
            ("junk", garbage.ready_url()),
            ("attic", h265.ready_url()),
            ("porch", url_with(&good, PASSWORD)),
        ],
        "log_level: debug\n",
    );
    let _log = LogOnFailure(&vigil);
    wait_until("junk refused", Duration::from_secs(15), || {
        reason(&ports, "junk").starts_with("bad stream")
    });
    let junk = reason(&ports, "junk");
    assert!(junk.contains("not an FLV stream"), "{junk}");
    wait_until("attic refused", Duration::from_secs(15), || {
        reason(&ports, "attic").starts_with("unsupported codec in FLV")
    });
    let attic = reason(&ports, "attic");
    assert!(attic.contains("H.265"), "{attic}");
    assert!(attic.contains("use the camera's RTSP URL"), "{attic}");
    wait_until("porch online", Duration::from_secs(30), || {
        state(&ports, "porch") == "online"
    });
    std::thread::sleep(Duration::from_secs(6));
    let log = vigil.output();
    for name in ["junk", "attic"] {
        let delays = retry_delays(&log, name);
        assert!(delays.len() >= 2, "{name}: {delays:?}");
        assert!(delays.iter().all(|d| *d >= 1.5), "{name}: {delays:?}");
        assert_ne!(state(&ports, name), "online");
    }
    // Still running, the good camera with it.
    assert_eq!(state(&ports, "porch"), "online");
    assert!(!log.contains("panicked"), "{log}");
}

/// FLV carries one access unit per tag: a frame cut into 4 slices reaches the hub (and so every
/// output) as one frame, not four. `stream.mp4` has a sample per hub frame: its video packets
/// come at the camera's 15 fps, each decoding without error.
#[test]
fn a_frame_cut_into_slices_stays_one_frame_over_flv_and_rtmp() {
    let cameras = [
        ("porch", reolink("flv-http", &["--slices", "4"])),
        ("garden", reolink("rtmp", &["--slices", "4"])),
    ];
    let urls: Vec<(&str, String)> = cameras
        .iter()
        .map(|(name, camera)| (*name, url_with(camera, PASSWORD)))
        .collect();
    let (vigil, ports) = start(&urls, "");
    let _log = LogOnFailure(&vigil);
    let dir = common::TempDir::new("slices");
    for (name, _) in &cameras {
        wait_until(&format!("{name} online"), Duration::from_secs(30), || {
            state(&ports, name) == "online"
        });
        let mp4 = dir.path().join(format!("{name}.mp4"));
        fetch(
            &format!("http://127.0.0.1:{}/api/stream.mp4?src={name}", ports.api),
            5,
            &mp4,
        );
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
            .args(["packet=pts_time", "-of", "csv=p=0"])
            .arg(&mp4)
            .output()
            .expect("ffprobe");
        let times: Vec<f64> = String::from_utf8_lossy(&probe.stdout)
            .lines()
            .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
            .collect();
        assert!(times.len() > 20, "{name}: {} video packets", times.len());
        let span = times.last().unwrap() - times.first().unwrap();
        let rate = (times.len() - 1) as f64 / span;
        assert!(
            (10.0..=20.0).contains(&rate),
            "{name}: {rate:.1} frames/s, not 15"
        );
        let decoded = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&mp4)
            .args(["-map", "0:v", "-f", "null", "-"])
            .output()
            .expect("ffmpeg");
        let errors = String::from_utf8_lossy(&decoded.stderr);
        // The last fragment may be cut off by the fetch's end; nothing else may fail.
        let bad: Vec<&str> = errors
            .lines()
            .filter(|l| !l.contains("Invalid data found") && !l.contains("truncat"))
            .collect();
        assert!(bad.is_empty(), "{name}: {errors}");
    }
}
