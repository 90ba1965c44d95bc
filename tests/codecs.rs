//! Every codec a camera may send: H.264 and H.265 video; AAC, G.711 A-law and µ-law, Opus or no
//! audio. Each camera comes online with the right status and plays through the restream (as it
//! sends it, with `unify_audio` off; tests/unify_audio.rs has the AAC it becomes otherwise).

mod common;

use std::time::Duration;

use common::fake_camera::FakeCamera;
use common::rtsp_client::{
    ClientOptions, RtspClient, assert_video_untouched, camera_client_a_gop_ahead,
};
use common::{Ports, Vigil, cameras_yaml, producer, wait_until};

#[test]
fn every_audio_codec_and_no_audio() {
    let cases = [
        ("aac", Some(("AAC", 16000)), "MPEG4-GENERIC"),
        ("pcmu", Some(("PCMU", 8000)), "PCMU/8000"),
        ("opus", Some(("Opus", 16000)), "OPUS/48000"),
        ("none", None, ""),
    ];
    let cameras: Vec<FakeCamera> = cases
        .iter()
        .map(|(audio, _, _)| FakeCamera::start(&["--audio", audio]))
        .collect();
    let names: Vec<String> = cases
        .iter()
        .map(|(audio, _, _)| format!("cam_{audio}"))
        .collect();
    let urls: Vec<String> = cameras.iter().map(FakeCamera::url).collect();
    let entries: Vec<(&str, &str)> = names
        .iter()
        .map(String::as_str)
        .zip(urls.iter().map(String::as_str))
        .collect();
    let ports = Ports::free();
    let mut vigil =
        Vigil::start(&ports.options(&format!("unify_audio: false\n{}", cameras_yaml(&entries))));
    vigil.wait_for_log("panel listening", Duration::from_secs(20));

    for ((_, expected, rtp), name) in cases.iter().zip(&names) {
        wait_until(&format!("{name} online"), Duration::from_secs(20), || {
            producer(ports.web, name)["state"] == "online"
        });
        let status = producer(ports.web, name);
        assert_eq!(status["video"]["codec"], "H.264", "{status}");
        match expected {
            Some((codec, rate)) => {
                assert_eq!(status["audio"]["codec"], *codec, "{status}");
                assert_eq!(status["audio"]["sample_rate"], *rate, "{status}");
            }
            None => assert!(status["audio"].is_null(), "{status}"),
        }
        let client = RtspClient::start(&ports.restream(name), ClientOptions::default());
        client.wait("video", Duration::from_secs(10), |c| c.au_count() > 10);
        if expected.is_some() {
            client.wait("audio", Duration::from_secs(10), |c| c.audio_buffers() > 5);
            assert!(client.sdp().unwrap().contains(rtp), "{:?}", client.sdp());
        } else {
            assert!(
                !client.sdp().unwrap().contains("m=audio"),
                "{:?}",
                client.sdp()
            );
        }
    }
    assert!(vigil.output().contains("cam_none") && vigil.output().contains("no audio"));
}

#[test]
fn h265_cameras_are_restreamed_as_they_are() {
    let camera = FakeCamera::start(&["--video", "h265", "--audio", "pcma", "--gop", "15"]);
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&cameras_yaml(&[("nursery", &camera.url())])));
    vigil.wait_for_log("camera online", Duration::from_secs(20));
    assert_eq!(producer(ports.web, "nursery")["video"]["codec"], "H.265");
    let direct = camera_client_a_gop_ahead(&camera.url(), Duration::from_secs(1));
    let relayed = RtspClient::start(
        &ports.restream("nursery"),
        ClientOptions {
            decode: true,
            ..ClientOptions::untouched_check()
        },
    );
    relayed.wait("decoded frames", Duration::from_secs(15), |c| {
        c.decoded().len() > 20
    });
    let sdp = relayed.sdp().unwrap();
    assert!(
        sdp.contains("H265/90000") && sdp.contains("sprop-vps="),
        "{sdp}"
    );
    assert_video_untouched(&direct, &relayed, 0);
}
