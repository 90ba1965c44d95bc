//! A camera's main and sub streams (`sub_url`): both pulled once and restreamed
//! (`/<camera>` and `/<camera>_sub`), both in `/api/streams` and the panel's state, both
//! healing on their own after an outage, and the detector hearing the sub stream when only it
//! carries audio. Two fake cameras stand in for a camera's two streams.

mod common;

use std::time::Duration;

use common::fake_camera::FakeCamera;
use common::rtsp_client::{ClientOptions, RtspClient};
use common::{Ports, Vigil, http_get, producer, wait_until};

/// Vigil with one camera `nursery` whose main stream is `main` and sub stream `sub`.
fn start(main: &FakeCamera, sub: &FakeCamera) -> (Vigil, Ports) {
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&format!(
        "cameras:\n  - name: nursery\n    url: {}\n    sub_url: {}\n",
        main.url(),
        sub.url()
    )));
    vigil.wait_for_log("panel listening", Duration::from_secs(20));
    for stream in ["nursery", "nursery_sub"] {
        wait_until(&format!("{stream} online"), Duration::from_secs(20), || {
            producer(ports.web, stream)["state"] == "online"
        });
    }
    (vigil, ports)
}

/// Prints Vigil's log when a test fails.
struct LogOnFailure<'a>(&'a Vigil);

impl Drop for LogOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- vigil log ---\n{}", self.0.output());
        }
    }
}

fn width(client: &RtspClient) -> i32 {
    let caps = client.video_caps().unwrap();
    caps.structure(0).unwrap().get::<i32>("width").unwrap()
}

fn panel_state(web: u16) -> serde_json::Value {
    let (status, body) = http_get(web, "/api/panel/state");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn both_streams_are_restreamed_and_heal_after_an_outage() {
    let mut main = FakeCamera::start(&["--width", "1280", "--height", "720", "--gop", "15"]);
    let mut sub = FakeCamera::start(&["--width", "640", "--height", "360", "--gop", "15"]);
    let (vigil, ports) = start(&main, &sub);
    let _log = LogOnFailure(&vigil);

    let clients: Vec<RtspClient> = ["nursery", "nursery_sub"]
        .iter()
        .map(|s| RtspClient::start(&ports.restream(s), ClientOptions::default()))
        .collect();
    for client in &clients {
        client.wait("frames", Duration::from_secs(10), |c| c.au_count() > 10);
    }
    assert_eq!(width(&clients[0]), 1280);
    assert_eq!(width(&clients[1]), 640);

    // Both in /api/streams, each with its own producer and its player.
    let streams = common::streams(ports.web);
    assert_eq!(streams["nursery"]["producers"][0]["video"]["width"], 1280);
    assert_eq!(
        streams["nursery_sub"]["producers"][0]["video"]["width"],
        640
    );
    for stream in ["nursery", "nursery_sub"] {
        let consumers = streams[stream]["consumers"].as_array().unwrap();
        assert_eq!(consumers.len(), 1, "{stream}: {}", streams[stream]);
    }
    // The live view takes either by name (`src=nursery_sub`), as snapshots show.
    for stream in ["nursery", "nursery_sub"] {
        let (status, _) = http_get(ports.api, &format!("/api/frame.jpeg?src={stream}"));
        assert_eq!(status, 200, "{stream}");
    }
    let (status, body) = http_get(ports.api, "/api/frame.jpeg?src=nursery_main");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("nursery, nursery_sub"), "{body}");
    // The panel shows one camera with both streams' health.
    let state = panel_state(ports.web);
    let cameras = state["cameras"].as_array().unwrap();
    assert_eq!(cameras.len(), 1, "{state}");
    assert_eq!(cameras[0]["sub"]["name"], "nursery_sub", "{state}");
    assert_eq!(cameras[0]["sub"]["status"]["state"], "online", "{state}");
    assert_eq!(
        cameras[0]["sub"]["status"]["video"]["width"], 640,
        "{state}"
    );

    // An outage of both streams (the camera rebooting): each comes back on its own, and the
    // players connected through it play on.
    main.stop();
    sub.stop();
    for stream in ["nursery", "nursery_sub"] {
        wait_until(
            &format!("{stream} offline"),
            Duration::from_secs(10),
            || producer(ports.web, stream)["state"] != "online",
        );
    }
    let before: Vec<usize> = clients.iter().map(RtspClient::au_count).collect();
    main.restart();
    sub.restart();
    for (client, before) in clients.iter().zip(before) {
        client.wait("frames after the outage", Duration::from_secs(15), |c| {
            c.au_count() > before + 10
        });
        assert!(client.error().is_none(), "{:?}", client.error());
    }
    for stream in ["nursery", "nursery_sub"] {
        assert_eq!(producer(ports.web, stream)["state"], "online");
        assert_eq!(producer(ports.web, stream)["reconnects"], 1, "{stream}");
    }
    assert!(!vigil.output().contains("panicked"));
}

#[test]
fn the_detector_hears_the_sub_stream_when_only_it_has_audio() {
    let main = FakeCamera::start(&["--audio", "none"]);
    let sub = FakeCamera::start(&["--audio", "pcma"]);
    let (vigil, ports) = start(&main, &sub);
    let _log = LogOnFailure(&vigil);
    wait_until(
        "a cry reading from the sub stream's audio",
        Duration::from_secs(30),
        || {
            let state = panel_state(ports.web);
            state["cameras"][0]["cry"]["level_dbfs"].is_number()
        },
    );
    let state = panel_state(ports.web);
    assert!(state["cameras"][0]["status"]["audio"].is_null(), "{state}");
    assert_eq!(
        state["cameras"][0]["sub"]["status"]["audio"]["codec"], "PCMA",
        "{state}"
    );
}
