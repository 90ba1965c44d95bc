//! One audio format for every camera (`unify_audio`, on by default): a PCMA camera (a Tapo) and
//! an AAC camera (a Reolink) both come out of the restream as AAC, read by ffprobe as a player
//! would, with the camera's video bytes untouched; turned off, the restream carries the camera's
//! own codec. (WebRTC's Opus from both is in tests/unify_audio_browser.rs.)

mod common;

use std::process::Command;
use std::time::Duration;

use common::fake_camera::FakeCamera;
use common::rtsp_client::{
    ClientOptions, RtspClient, assert_video_untouched, camera_client_a_gop_ahead,
};
use common::{Ports, Vigil, cameras_yaml, producer, wait_until};

/// What ffprobe, as an RTSP client, finds in `url`: one `codec_name,codec_type,sample_rate`
/// line per stream.
fn ffprobe(url: &str) -> String {
    let out = common::die_with_test(&mut Command::new("timeout"))
        .args(["20", "ffprobe", "-v", "error", "-rtsp_transport", "tcp"])
        .args([
            "-show_entries",
            "stream=codec_type,codec_name,sample_rate",
            "-of",
            "csv=p=0",
        ])
        .arg(url)
        .output()
        .expect("ffprobe (ffmpeg) is installed by scripts/install-deps.sh");
    assert!(
        out.status.success(),
        "ffprobe {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn start(cameras: &[(&str, &str)], extra: &str) -> (Vigil, Ports) {
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&format!("{extra}{}", cameras_yaml(cameras))));
    vigil.wait_for_log("panel listening", Duration::from_secs(20));
    for (name, _) in cameras {
        wait_until(&format!("{name} online"), Duration::from_secs(20), || {
            producer(ports.web, name)["state"] == "online"
        });
    }
    (vigil, ports)
}

#[test]
fn a_pcma_camera_and_an_aac_camera_both_restream_aac_with_their_video_untouched() {
    let tapo = FakeCamera::start(&["--audio", "pcma", "--gop", "15"]);
    let reolink = FakeCamera::start(&["--audio", "aac", "--gop", "15"]);
    let (vigil, ports) = start(
        &[("nursery", &tapo.url()), ("playroom", &reolink.url())],
        "",
    );
    for (name, camera, own) in [("nursery", &tapo, "PCMA"), ("playroom", &reolink, "AAC")] {
        let streams = ffprobe(&ports.restream(name));
        assert!(streams.contains("h264,video"), "{name}: {streams}");
        assert!(streams.contains("aac,audio"), "{name}: {streams}");
        assert!(!streams.contains("pcm_alaw"), "{name}: {streams}");

        let direct = camera_client_a_gop_ahead(&camera.url(), Duration::from_secs(1));
        let relayed = RtspClient::start(&ports.restream(name), ClientOptions::untouched_check());
        relayed.wait("video and audio", Duration::from_secs(10), |c| {
            c.au_count() > 40 && c.audio_buffers() > 20
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_video_untouched(&direct, &relayed, 50);
        assert!(
            relayed.sdp().unwrap().contains("MPEG4-GENERIC"),
            "{name}: {:?}",
            relayed.sdp()
        );

        // The status says what the camera sends, and what Vigil makes of it.
        let audio = &producer(ports.web, name)["audio"];
        assert_eq!(audio["codec"], own, "{name}: {audio}");
        let restreamed = if own == "AAC" { None } else { Some("AAC") };
        assert_eq!(
            audio["restreamed_as"].as_str(),
            restreamed,
            "{name}: {audio}"
        );
    }
    assert!(
        vigil.output().contains("PCMA 8000 Hz (restreamed as AAC)"),
        "{}",
        vigil.output()
    );
}

#[test]
fn with_unify_audio_off_the_restream_carries_the_cameras_own_codec() {
    let tapo = FakeCamera::start(&["--audio", "pcma"]);
    let (_vigil, ports) = start(&[("nursery", &tapo.url())], "unify_audio: false\n");
    let streams = ffprobe(&ports.restream("nursery"));
    assert!(streams.contains("pcm_alaw,audio,8000"), "{streams}");
    assert!(!streams.contains("aac"), "{streams}");
    let audio = &producer(ports.web, "nursery")["audio"];
    assert_eq!(audio["codec"], "PCMA", "{audio}");
    assert!(audio.get("restreamed_as").is_none(), "{audio}");
}
