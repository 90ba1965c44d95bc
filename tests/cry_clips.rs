//! Cry clips through the real binary: the fake camera plays a labelled cry and a clip appears
//! in the clips folder, listed in its episode, that ffprobe reads (H.264 and AAC, the index in
//! front), that covers the seconds before the onset, the cry and the tail, in which `vigil
//! detect` finds the cry about 5 s in, and that the panel serves with Range requests. A quiet
//! camera beside it gets no clip. On a nearly full or read-only disk no clip is written, the
//! clip status says why, and the camera and detection go on; with room again, clips come back.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::cry::clip;
use common::fake_camera::FakeCamera;
use common::{Ports, TempDir, Vigil, http_get, vigil_bin, wait_for_panel, wait_until};

fn panel_camera(web_port: u16, camera: &str) -> serde_json::Value {
    let (status, body) = http_get(web_port, "/api/panel/state");
    assert_eq!(status, 200, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    state["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == camera)
        .cloned()
        .unwrap_or_else(|| panic!("no camera {camera} in {body}"))
}

fn episodes(web_port: u16, camera: &str) -> Vec<serde_json::Value> {
    let (status, body) = http_get(web_port, &format!("/api/panel/history?camera={camera}"));
    assert_eq!(status, 200, "{body}");
    let history: serde_json::Value = serde_json::from_str(&body).unwrap();
    history["episodes"].as_array().cloned().unwrap_or_default()
}

/// Every finished clip under `root`, as paths relative to it.
fn clips_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    found.sort();
    found
}

/// ffprobe's `codec_type=codec_name` per stream and the container's duration in seconds.
fn probe(path: &Path) -> (Vec<String>, f64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name",
        ])
        .args(["-show_entries", "format=duration", "-of", "default=nw=1"])
        .arg(path)
        .output()
        .expect("ffprobe is installed by scripts/install-deps.sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {text}",
        path.display()
    );
    let mut streams = Vec::new();
    let mut codec = String::new();
    let mut duration = 0.0;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("codec_name=") {
            codec = name.to_string();
        } else if let Some(kind) = line.strip_prefix("codec_type=") {
            streams.push(format!("{kind}={codec}"));
        } else if let Some(d) = line.strip_prefix("duration=") {
            duration = d.parse().unwrap_or(0.0);
        }
    }
    (streams, duration)
}

/// Where `vigil detect` finds the first cry in the clip's sound (seconds from its start).
fn cry_offset_in(clip: &Path, scratch: &TempDir) -> f64 {
    let wav = scratch.path().join("clip.wav");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(clip)
        .args(["-vn", "-ac", "1", "-ar", "16000"])
        .arg(&wav)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg could not read the clip's sound");
    let out = Command::new(vigil_bin())
        .arg("detect")
        .arg("--json")
        .arg(&wav)
        .env_remove("VIGIL_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("vigil detect: {e}: {text}"));
    report["episodes"][0]["start_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("vigil detect finds no cry in the clip: {text}"))
}

/// A GET with extra headers: (status, headers in lower case, body bytes).
fn get_raw(port: u16, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, raw[split + 4..].to_vec())
}

/// Waits for the finished clip at `path`; panics with Vigil's log.
fn wait_for_file(vigil: &Vigil, path: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no clip at {} after 20 s:\n{}",
            path.display(),
            vigil.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Plays the cry on `camera` and waits for its episode to end; returns the episode.
fn cry_and_wait(camera: &mut FakeCamera, web_port: u16, name: &str) -> serde_json::Value {
    let before = episodes(web_port, name).len();
    camera.play(&clip());
    let mut episode = serde_json::Value::Null;
    wait_until("the cry's episode to end", Duration::from_secs(60), || {
        let found = episodes(web_port, name);
        match found.get(before) {
            Some(e) if e["ended_ms"].is_u64() => {
                episode = e.clone();
                true
            }
            _ => false,
        }
    });
    episode
}

/// The clips an episode (as the panel's API gives it) lists, relative to the clips folder.
fn listed_clips(episode: &serde_json::Value) -> Vec<String> {
    episode["clips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Vigil with the cameras `nursery` and `playroom` (each hub carrying the camera's own sound:
/// no `unify_audio`), once clips are on and both cameras online.
fn start_with_two_cameras(nursery: &FakeCamera, playroom: &FakeCamera) -> (Vigil, Ports) {
    let ports = Ports::free();
    let options = ports.options(&format!(
        "unify_audio: false\ncameras:\n  - {{name: nursery, url: '{}'}}\n  - {{name: playroom, \
         url: '{}'}}\n",
        nursery.url(),
        playroom.url()
    ));
    let mut vigil = Vigil::start(&options);
    wait_for_panel(ports.web);
    vigil.wait_for_log("cry clips on", Duration::from_secs(20));
    wait_until("both cameras online", Duration::from_secs(20), || {
        ["nursery", "playroom"]
            .iter()
            .all(|c| panel_camera(ports.web, c)["status"]["state"] == "online")
    });
    (vigil, ports)
}

#[test]
fn a_cry_becomes_a_clip_with_the_seconds_before_and_after() {
    let mut nursery = FakeCamera::start(&["--audio", "pcma"]);
    let playroom = FakeCamera::start(&["--audio", "aac"]);
    // Without unify_audio the nursery's hub sound is the camera's own A-law: the clip encodes
    // it to AAC itself.
    let (vigil, ports) = start_with_two_cameras(&nursery, &playroom);
    assert_eq!(
        panel_camera(ports.web, "nursery")["clips"]["state"],
        "ready"
    );
    // The room's quiet first, longer than the pre-roll.
    std::thread::sleep(Duration::from_secs(10));

    let episode = cry_and_wait(&mut nursery, ports.web, "nursery");
    let listed = listed_clips(&episode);
    assert_eq!(listed.len(), 1, "one clip listed in the episode: {episode}");
    let relative = &listed[0];
    assert!(
        relative.starts_with("nursery/") && relative.ends_with(".mp4"),
        "{relative}"
    );
    let root = vigil.data_dir.path().join("clips");
    let path = root.join(relative);
    wait_for_file(&vigil, &path);
    wait_until(
        "the clip status back to ready",
        Duration::from_secs(10),
        || panel_camera(ports.web, "nursery")["clips"]["state"] == "ready",
    );
    assert_eq!(
        clips_under(&root),
        vec![relative.clone()],
        "only the crying camera's clip, and no partial file left"
    );

    let (streams, duration) = probe(&path);
    assert_eq!(streams, ["video=h264", "audio=aac"], "{}", path.display());
    let cry_secs = (episode["ended_ms"].as_u64().unwrap() - episode["started_ms"].as_u64().unwrap())
        as f64
        / 1000.0;
    eprintln!("clip {relative}: {duration:.1} s for a cry of {cry_secs:.1} s");
    assert!(
        duration >= cry_secs + 10.0 - 1.0,
        "the clip ({duration:.1} s) covers 5 s before, the cry ({cry_secs:.1} s) and 5 s after"
    );
    assert!(
        duration <= 120.0 + 2.0,
        "capped at 2 minutes: {duration:.1} s"
    );
    let bytes = std::fs::read(&path).unwrap();
    let moov = bytes.windows(4).position(|w| w == b"moov").unwrap();
    let mdat = bytes.windows(4).position(|w| w == b"mdat").unwrap();
    assert!(moov < mdat, "the index is in front (faststart)");

    let scratch = TempDir::new("clip-sound");
    let offset = cry_offset_in(&path, &scratch);
    eprintln!("vigil detect finds the cry {offset:.1} s into the clip");
    assert!(
        (4.0..=8.5).contains(&offset),
        "the cry starts {offset:.1} s into the clip; about 5 s expected (a GOP is 2 s)"
    );

    // The panel serves it, with Range requests, and nothing else.
    let url = format!("/api/clips/{relative}");
    let (status, head, body) = get_raw(ports.web, &url, "");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: video/mp4"), "{head}");
    assert_eq!(body, bytes);
    let (status, head, body) = get_raw(ports.web, &url, "Range: bytes=100-1123\r\n");
    assert_eq!(status, 206, "{head}");
    assert_eq!(body, bytes[100..1124]);
    assert!(
        head.contains(&format!("content-range: bytes 100-1123/{}", bytes.len())),
        "{head}"
    );
    for bad in [
        "/api/clips/nursery/../../options.yaml".to_string(),
        "/api/clips/%2e%2e/options.yaml".to_string(),
        "/api/clips/nursery/2000-01-01/00-00-00.mp4".to_string(),
        format!("/api/clips/{}", relative.replace(".mp4", ".mp4.partial")),
    ] {
        let (status, head, _) = get_raw(ports.web, &bad, "");
        assert_eq!(status, 404, "{bad}: {head}");
    }
    let (status, _) = http_get(ports.web, "/api/clips/..%2Foptions.yaml");
    assert_eq!(status, 404);
}

/// Set inside the mount namespace: the tmpfs the clips go to.
const TMPFS: &str = "VIGIL_TEST_CLIPS_TMPFS";

/// Re-runs `name` inside a private mount namespace with a 480 MiB tmpfs at a new folder (less
/// than the 500 MiB a clip needs free); returns true inside it.
fn enter_small_disk(name: &str) -> bool {
    if std::env::var_os(TMPFS).is_some() {
        return true;
    }
    let dir = TempDir::new("clips-tmpfs");
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=480m vigil-clips \"$VIGIL_TEST_CLIPS_TMPFS\" && exec \"$@\"")
        .arg("sh")
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(TMPFS, dir.path())
        .output()
        .expect("cannot run unshare (util-linux)");
    common::netns::assert_rerun_passed(
        name,
        &output,
        "its mount namespace; unshare and mount need root",
    );
    false
}

fn remount(dir: &Path, options: &str) {
    let status = Command::new("mount")
        .args(["-o", &format!("remount,{options}")])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "mount -o remount,{options}");
}

#[test]
fn a_nearly_full_or_read_only_disk_pauses_clips_without_harm() {
    if !enter_small_disk("a_nearly_full_or_read_only_disk_pauses_clips_without_harm") {
        return;
    }
    let root = PathBuf::from(std::env::var_os(TMPFS).unwrap());
    let mut camera = FakeCamera::start(&["--audio", "aac"]);
    let ports = Ports::free();
    let options = ports.options(&format!(
        "cry_hold: 2\nclips_dir: {}\ncameras:\n  - {{name: nursery, url: '{}'}}\n",
        root.display(),
        camera.url()
    ));
    let mut vigil = Vigil::start(&options);
    wait_for_panel(ports.web);
    vigil.wait_for_log("cry clips on", Duration::from_secs(20));
    wait_until("the camera online", Duration::from_secs(20), || {
        panel_camera(ports.web, "nursery")["status"]["state"] == "online"
    });
    std::thread::sleep(Duration::from_secs(6));

    // 480 MiB free: the cry is heard, no clip is written, and the status says why.
    let episode = cry_and_wait(&mut camera, ports.web, "nursery");
    assert!(
        episode["clips"].as_array().is_none_or(|c| c.is_empty()),
        "{episode}"
    );
    let view = panel_camera(ports.web, "nursery");
    assert_eq!(view["clips"]["state"], "paused", "{view}");
    let reason = view["clips"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("less than 500 MiB free") && reason.contains(&root.display().to_string()),
        "{reason}"
    );
    assert_eq!(view["status"]["state"], "online", "the camera goes on");
    assert!(clips_under(&root).is_empty(), "{:?}", clips_under(&root));
    // Twice: still one warning.
    cry_and_wait(&mut camera, ports.web, "nursery");
    assert_eq!(
        vigil
            .output()
            .matches("clips paused: less than 500 MiB")
            .count(),
        1,
        "{}",
        vigil.output()
    );

    // Room, but read-only: said as such.
    remount(&root, "size=700m,ro");
    let episode = cry_and_wait(&mut camera, ports.web, "nursery");
    assert!(
        episode["clips"].as_array().is_none_or(|c| c.is_empty()),
        "{episode}"
    );
    let view = panel_camera(ports.web, "nursery");
    let reason = view["clips"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("Read-only file system"), "{view}");
    assert_eq!(view["status"]["state"], "online");

    // Writable with room: clips are back, and the stream never stopped.
    remount(&root, "rw");
    let episode = cry_and_wait(&mut camera, ports.web, "nursery");
    let relative = episode["clips"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{episode}"));
    let path = root.join(relative);
    wait_for_file(&vigil, &path);
    let (streams, _) = probe(&path);
    assert_eq!(streams, ["video=h264", "audio=aac"]);
    assert_eq!(
        panel_camera(ports.web, "nursery")["status"]["reconnects"],
        0
    );
    vigil.terminate();
}

/// Plays the cry on `camera` and waits until its episode lists a clip (the clip is being
/// written); returns the clip's relative path.
fn cry_until_a_clip_opens(
    vigil: &Vigil,
    camera: &mut FakeCamera,
    web_port: u16,
    name: &str,
) -> String {
    let before = episodes(web_port, name).len();
    camera.play(&clip());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(clip) = episodes(web_port, name)
            .get(before)
            .and_then(|e| e["clips"][0].as_str().map(String::from))
        {
            return clip;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: no clip listed in a new episode within 30 s: {:?}\n{}",
            episodes(web_port, name),
            vigil.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_camera_gone_or_vigil_stopping_mid_clip_leaves_a_clip_that_plays() {
    // An Opus camera, its sound as it sends it on the hub (no unify_audio): the clip encodes
    // it to AAC.
    let mut nursery = FakeCamera::start(&["--audio", "opus"]);
    // An H.265 camera: its video goes into the clip as it is, too.
    let mut playroom = FakeCamera::start(&["--audio", "aac", "--video", "h265"]);
    let (mut vigil, ports) = start_with_two_cameras(&nursery, &playroom);
    std::thread::sleep(Duration::from_secs(6));
    let root = vigil.data_dir.path().join("clips");

    // The camera loses power while its clip is being written.
    let gone = cry_until_a_clip_opens(&vigil, &mut nursery, ports.web, "nursery");
    std::thread::sleep(Duration::from_secs(2));
    nursery.stop();
    wait_for_file(&vigil, &root.join(&gone));
    let (streams, duration) = probe(&root.join(&gone));
    assert_eq!(streams, ["video=h264", "audio=aac"]);
    assert!(
        duration >= 5.0,
        "{duration:.1} s: the pre-roll and the cry so far"
    );

    // Vigil is stopped (SIGTERM, as the Supervisor does) while the other camera's clip is
    // being written: the clip is finished, not left half written.
    let stopped = cry_until_a_clip_opens(&vigil, &mut playroom, ports.web, "playroom");
    std::thread::sleep(Duration::from_secs(2));
    let (status, took) = vigil.terminate();
    assert!(status.success(), "{status}: {}", vigil.output());
    eprintln!("stopped in {took:?} with a clip open");
    let (streams, _) = probe(&root.join(&stopped));
    assert_eq!(streams, ["video=hevc", "audio=aac"]);
    let mut left = clips_under(&root);
    left.sort();
    let mut expected = vec![gone, stopped];
    expected.sort();
    assert_eq!(left, expected, "no partial file left");
}

#[test]
fn a_long_cry_goes_on_in_the_next_clip_after_two_minutes() {
    let mut camera = FakeCamera::start(&["--audio", "aac"]);
    let ports = Ports::free();
    let options = ports.options(&format!(
        "cameras:\n  - {{name: nursery, url: '{}'}}\n",
        camera.url()
    ));
    let mut vigil = Vigil::start(&options);
    wait_for_panel(ports.web);
    vigil.wait_for_log("cry clips on", Duration::from_secs(20));
    wait_until("the camera online", Duration::from_secs(20), || {
        panel_camera(ports.web, "nursery")["status"]["state"] == "online"
    });
    std::thread::sleep(Duration::from_secs(6));
    // Crying for about 2 minutes 20 seconds without a pause longer than the hold.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(140) {
        camera.play(&clip());
        std::thread::sleep(Duration::from_secs(5));
    }
    let mut episode = serde_json::Value::Null;
    wait_until("the long episode to end", Duration::from_secs(60), || {
        episode = episodes(ports.web, "nursery")
            .first()
            .cloned()
            .unwrap_or_default();
        episode["ended_ms"].is_u64()
    });
    assert_eq!(episodes(ports.web, "nursery").len(), 1, "one episode");
    let clips = listed_clips(&episode);
    assert_eq!(clips.len(), 2, "two clips in the episode: {episode}");
    let root = vigil.data_dir.path().join("clips");
    let mut total = 0.0;
    for (i, relative) in clips.iter().enumerate() {
        let path = root.join(relative);
        wait_for_file(&vigil, &path);
        let (streams, duration) = probe(&path);
        assert_eq!(streams, ["video=h264", "audio=aac"], "{relative}");
        eprintln!("{relative}: {duration:.1} s");
        if i == 0 {
            // Cut at the first keyframe after 2 minutes (a GOP is 2 s).
            assert!(
                (120.0..=122.5).contains(&duration),
                "the first clip is cut at 2 minutes: {duration:.1} s"
            );
        }
        total += duration;
    }
    let cry_secs = (episode["ended_ms"].as_u64().unwrap() - episode["started_ms"].as_u64().unwrap())
        as f64
        / 1000.0;
    assert!(
        total >= cry_secs + 10.0 - 1.5,
        "the clips ({total:.1} s) cover the episode ({cry_secs:.1} s) and 5 s on each side"
    );
}

#[test]
fn at_start_unfinished_and_old_clips_are_deleted_and_the_rest_kept() {
    let clips = TempDir::new("clips-at-start");
    let night = clips.path().join("nursery/2026-11-20");
    let today = clips.path().join("nursery/2026-12-04");
    std::fs::create_dir_all(&night).unwrap();
    std::fs::create_dir_all(&today).unwrap();
    let old = night.join("02-00-00.mp4");
    let kept = today.join("03-12-05.mp4");
    // What a run killed while writing (SIGKILL, power loss) leaves behind.
    let partial = today.join(".03-20-00.mp4.partial");
    let faststart = today.join(".03-20-00.mp4.faststart.partial");
    for path in [&old, &kept, &partial, &faststart] {
        std::fs::write(path, b"clip bytes").unwrap();
    }
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(8 * 24 * 3600))
        .unwrap();
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&format!(
        "clips_dir: {}\nclip_retention_days: 7\n",
        clips.path().display()
    )));
    vigil.wait_for_log("cry clips on", Duration::from_secs(20));
    let log = vigil.output();
    assert!(
        log.contains("deleted 2 clip(s) left unfinished") && log.contains("deleted 1 old clip(s)"),
        "{log}"
    );
    assert!(!partial.exists() && !faststart.exists());
    assert!(
        !old.exists() && !night.exists(),
        "the old clip and its empty day"
    );
    assert!(kept.exists(), "a clip of this week stays");
    assert_eq!(
        clips_under(clips.path()),
        vec!["nursery/2026-12-04/03-12-05.mp4".to_string()]
    );
}
