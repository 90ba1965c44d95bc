//! Streams that heal themselves: a camera that goes away and comes back, one that is down at
//! start, one with the wrong password, one that sends garbage, one that freezes. Real fake
//! cameras over RTSP/TCP, the real `vigil` binary, real GStreamer clients.

mod common;

use std::time::{Duration, Instant};

use common::fake_camera::FakeCamera;
use common::rtsp_client::{ClientOptions, RtspClient};
use common::{Ports, Vigil, cameras_yaml, free_port, producer, wait_until};

fn state(web_port: u16, camera: &str) -> String {
    producer(web_port, camera)["state"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

fn reason(web_port: u16, camera: &str) -> String {
    producer(web_port, camera)["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_connected_client_plays_on_after_a_ten_second_outage() {
    let mut camera = FakeCamera::start(&["--gop", "30"]);
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&cameras_yaml(&[("nursery", &camera.url())])));
    vigil.wait_for_log("camera online", Duration::from_secs(20));
    let client = RtspClient::start(&ports.restream("nursery"), ClientOptions::default());
    client.wait("frames", Duration::from_secs(10), |c| c.au_count() > 10);

    camera.stop();
    wait_until("the camera seen offline", Duration::from_secs(10), || {
        state(ports.web, "nursery") != "online"
    });
    std::thread::sleep(Duration::from_secs(10));
    let before = client.au_count();
    camera.restart();
    let back = Instant::now();
    client.wait("frames after the outage", Duration::from_secs(10), |c| {
        c.au_count() > before
    });
    let took = client.aus()[before].at.duration_since(back);
    // A loose bound for a loaded machine; the benchmark has the figure.
    assert!(
        took < Duration::from_millis(2500),
        "video back {took:?} after the camera"
    );
    assert!(client.error().is_none(), "{:?}", client.error());
    wait_until("reconnects counted", Duration::from_secs(5), || {
        producer(ports.web, "nursery")["reconnects"] == 1
    });
    // Still the same client: the restream kept its connection through the outage.
    assert_eq!(
        common::streams(ports.web)["nursery"]["consumers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// A camera back from a reboot without its audio (it comes later on some), then with it: the
/// connected client plays the video on all along.
#[test]
fn a_client_plays_on_when_the_camera_comes_back_without_its_audio() {
    let port = free_port();
    let mut camera = FakeCamera::start_on(port, &["--audio", "pcma"]);
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&cameras_yaml(&[("nursery", &camera.url())])));
    vigil.wait_for_log("camera online", Duration::from_secs(20));
    let client = RtspClient::start(&ports.restream("nursery"), ClientOptions::default());
    client.wait("frames", Duration::from_secs(10), |c| c.au_count() > 10);

    for audio in ["none", "pcma"] {
        camera.stop();
        wait_until("the camera seen offline", Duration::from_secs(10), || {
            state(ports.web, "nursery") != "online"
        });
        camera = FakeCamera::start_on(port, &["--audio", audio]);
        wait_until("the camera back", Duration::from_secs(15), || {
            state(ports.web, "nursery") == "online"
        });
        let before = client.au_count();
        client.wait(
            &format!("video after the camera came back with audio {audio}"),
            Duration::from_secs(10),
            |c| c.au_count() > before + 10,
        );
    }
    assert!(client.error().is_none(), "{:?}", client.error());
    let out = vigil.output();
    assert!(!out.contains("closing a restream client"), "{out}");
}

#[test]
fn a_camera_down_at_start_comes_up_when_it_appears() {
    let port = free_port();
    let ports = Ports::free();
    let url = format!("rtsp://127.0.0.1:{port}/stream");
    let mut vigil = Vigil::start(&ports.options(&cameras_yaml(&[("nursery", &url)])));
    vigil.wait_for_log("panel listening", Duration::from_secs(20));
    wait_until(
        "the camera reported unreachable",
        Duration::from_secs(10),
        || reason(ports.web, "nursery").starts_with("unreachable"),
    );
    std::thread::sleep(Duration::from_secs(3));
    let _camera = FakeCamera::start_on(port, &[]);
    wait_until("the camera online", Duration::from_secs(10), || {
        state(ports.web, "nursery") == "online"
    });
    let client = RtspClient::start(&ports.restream("nursery"), ClientOptions::default());
    client.wait("frames", Duration::from_secs(10), |c| c.au_count() > 10);
}

#[test]
fn a_wrong_password_says_unauthorized_and_retries() {
    let secret = "Wr0ngS3cret";
    let camera = FakeCamera::start(&["--username", "admin", "--password", "right"]);
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&format!(
        "log_level: debug\n{}",
        cameras_yaml(&[("nursery", &camera.url_with("admin", secret))])
    )));
    vigil.wait_for_log("unauthorized (401)", Duration::from_secs(20));
    let shown = reason(ports.web, "nursery");
    assert!(shown.starts_with("unauthorized (401)"), "{shown}");
    assert!(
        shown.contains(&format!(
            "rtsp://admin:***@127.0.0.1:{}/stream",
            camera.port
        )),
        "{shown}"
    );
    // It keeps trying (slowly: a wrong password does not fix itself).
    wait_until("a second attempt", Duration::from_secs(15), || {
        vigil.output().matches("unauthorized (401)").count() >= 2
    });
    let api = common::http_get(ports.web, "/api/streams").1;
    assert!(!api.contains(secret), "{api}");
    assert!(!vigil.output().contains(secret), "{}", vigil.output());
}

#[test]
fn a_garbage_camera_is_an_error_and_the_others_play_on() {
    let garbage = FakeCamera::start(&["--garbage"]);
    let good = FakeCamera::start(&[]);
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&format!(
        "log_level: debug\n{}",
        cameras_yaml(&[("noise", &garbage.url()), ("nursery", &good.url())])
    )));
    vigil.wait_for_log("panel listening", Duration::from_secs(20));
    wait_until(
        "the garbage camera reported",
        Duration::from_secs(15),
        || reason(ports.web, "noise").starts_with("bad stream"),
    );
    assert_eq!(state(ports.web, "noise"), "offline");
    wait_until("retries", Duration::from_secs(15), || {
        vigil.output().matches("bad stream").count() >= 3
    });
    let client = RtspClient::start(&ports.restream("nursery"), ClientOptions::default());
    client.wait(
        "frames from the good camera",
        Duration::from_secs(10),
        |c| c.au_count() > 20,
    );
    assert!(!vigil.output().contains("panicked"), "{}", vigil.output());
    let (status, _) = vigil.terminate();
    assert!(status.success(), "{}", vigil.output());
}

#[test]
fn a_frozen_camera_is_restarted_by_the_watchdog() {
    let camera = FakeCamera::start(&[]);
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&format!(
        "stall_timeout: 2\n{}",
        cameras_yaml(&[("nursery", &camera.url())])
    )));
    vigil.wait_for_log("camera online", Duration::from_secs(20));
    camera.pause();
    let frozen = Instant::now();
    wait_until("the stall noticed", Duration::from_secs(10), || {
        reason(ports.web, "nursery").starts_with("stalled")
    });
    let noticed = frozen.elapsed();
    assert!(
        noticed >= Duration::from_secs(2) && noticed < Duration::from_secs(6),
        "{noticed:?}"
    );
    camera.resume();
    wait_until("the camera back online", Duration::from_secs(15), || {
        state(ports.web, "nursery") == "online"
    });
    assert_eq!(producer(ports.web, "nursery")["reconnects"], 1);
}

#[test]
fn reconnecting_to_a_camera_leaks_no_file_descriptors() {
    let mut camera = FakeCamera::start(&[]);
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&cameras_yaml(&[("nursery", &camera.url())])));
    vigil.wait_for_log("camera online", Duration::from_secs(20));
    let mut reconnect = |times: u64| {
        for _ in 0..times {
            let before = producer(ports.web, "nursery")["reconnects"]
                .as_u64()
                .unwrap();
            camera.restart();
            wait_until("the camera back online", Duration::from_secs(20), || {
                producer(ports.web, "nursery")["reconnects"].as_u64() > Some(before)
                    && state(ports.web, "nursery") == "online"
            });
        }
        std::thread::sleep(Duration::from_secs(1));
        common::fd_count(vigil.pid())
    };
    // The first reconnect may allocate for good (pools, caches); the next ones must not.
    let settled = reconnect(1);
    let after = reconnect(4);
    // A leaked pipeline keeps its buses' sockets: four reconnects added eight.
    assert!(
        after <= settled + 3,
        "file descriptors grew from {settled} to {after} over four reconnects"
    );
}

/// Players that connect while their camera is away (rebooting at night), or just after it is
/// back but before Vigil has reconnected, play as soon as the stream is back instead of waiting
/// for their own timeout (20 s for GStreamer's `rtspsrc`).
#[test]
fn a_player_that_connects_during_an_outage_plays_when_the_camera_is_back() {
    let mut camera = FakeCamera::start(&["--audio", "pcma"]);
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&cameras_yaml(&[("nursery", &camera.url())])));
    vigil.wait_for_log("camera online", Duration::from_secs(20));
    let player = || RtspClient::start(&ports.restream("nursery"), ClientOptions::default());

    camera.stop();
    wait_until("the camera seen offline", Duration::from_secs(10), || {
        state(ports.web, "nursery") != "online"
    });
    let during = player();
    std::thread::sleep(Duration::from_secs(2));
    camera.restart();
    let back = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let right_after = player();
    for (when, client) in [("during", &during), ("right after", &right_after)] {
        client.wait("frames after the outage", Duration::from_secs(15), |c| {
            c.au_count() > 0
        });
        let took = client.aus()[0].at.duration_since(back);
        // A loose bound for a loaded machine.
        assert!(
            took < Duration::from_millis(3000),
            "a player connected {when} the outage: first frame {took:?} after the camera"
        );
        assert!(client.error().is_none(), "{when}: {:?}", client.error());
    }
}

/// A camera that streamed, then answers with garbage for a while (as some do while they boot),
/// is retried fast: its stream is back soon after it is.
#[test]
fn a_camera_that_sends_garbage_while_it_boots_is_back_soon_after() {
    let mut camera = FakeCamera::start(&[]);
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&cameras_yaml(&[("nursery", &camera.url())])));
    vigil.wait_for_log("camera online", Duration::from_secs(20));
    let client = RtspClient::start(&ports.restream("nursery"), ClientOptions::default());
    client.wait("frames", Duration::from_secs(10), |c| c.au_count() > 10);

    camera.restart_with(&["--garbage"]);
    wait_until("the garbage reported", Duration::from_secs(10), || {
        reason(ports.web, "nursery").starts_with("bad stream")
    });
    // Long enough that a slow schedule would be waiting 5 to 8 s between tries by now.
    std::thread::sleep(Duration::from_secs(11));
    let before = client.au_count();
    camera.restart_with(&[]);
    let back = Instant::now();
    client.wait("frames after the garbage", Duration::from_secs(15), |c| {
        c.au_count() > before
    });
    let took = client.aus()[before].at.duration_since(back);
    // A loose bound for a loaded machine (a camera never seen streaming waits 2.25 s and more).
    assert!(
        took < Duration::from_millis(2500),
        "video back {took:?} after the camera"
    );
}
