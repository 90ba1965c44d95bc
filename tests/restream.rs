//! The RTSP restream as a player sees it: a real camera (the fake one, over RTSP/TCP), the real
//! `vigil` binary, real GStreamer clients.

mod common;

use std::time::{Duration, Instant};

use common::fake_camera::FakeCamera;
use common::rtsp_client::{
    ClientOptions, RtspClient, assert_video_untouched, camera_client_a_gop_ahead,
};
use common::{Ports, Vigil, cameras_yaml, producer, wait_until};

/// Starts Vigil on `camera` (as `nursery`) and waits until the camera is online.
fn vigil_with(camera: &FakeCamera, extra: &str) -> (Vigil, Ports) {
    let ports = Ports::free();
    let options = ports.options(&format!(
        "{extra}{}",
        cameras_yaml(&[("nursery", &camera.url())])
    ));
    let mut vigil = Vigil::start(&options);
    vigil.wait_for_log("camera online", Duration::from_secs(20));
    (vigil, ports)
}

#[test]
fn the_restream_carries_the_cameras_own_bitstream_and_audio() {
    let camera = FakeCamera::start(&["--audio", "pcma", "--gop", "15"]);
    let (_vigil, ports) = vigil_with(&camera, "unify_audio: false\n");
    let direct = camera_client_a_gop_ahead(&camera.url(), Duration::from_secs(1));
    let relayed = RtspClient::start(&ports.restream("nursery"), ClientOptions::untouched_check());
    relayed.wait("frames from the restream", Duration::from_secs(10), |c| {
        c.au_count() > 60 && c.audio_buffers() > 20
    });
    std::thread::sleep(Duration::from_millis(500));

    // Every NAL unit the restream sent is one the camera sent: nothing was re-encoded.
    assert_video_untouched(&direct, &relayed, 100);

    // Same format, and the SDP carries the parameter sets so a player can start at once.
    let caps = |c: &RtspClient| {
        let caps = c.video_caps().unwrap();
        let s = caps.structure(0).unwrap();
        (
            s.get::<i32>("width").unwrap(),
            s.get::<i32>("height").unwrap(),
            s.get::<String>("profile").unwrap(),
        )
    };
    assert_eq!(caps(&relayed), caps(&direct));
    let sdp = relayed.sdp().unwrap();
    assert!(sdp.contains("sprop-parameter-sets="), "{sdp}");
    assert!(sdp.contains("PCMA/8000"), "{sdp}");
    // All the audio arrives (G.711 at 8 kHz is 8000 bytes a second), however it is packed.
    let rate = relayed.audio_byte_rate().unwrap();
    assert!((6500.0..9500.0).contains(&rate), "{rate} audio bytes/s");
}

/// A new decoding client of the nursery's restream, once it decoded its first picture, which
/// must come within 0.7 s (the camera's keyframes come every 4 s).
fn a_client_that_starts_at_once(ports: &Ports, attempt: u64) -> RtspClient {
    let client = RtspClient::start(
        &ports.restream("nursery"),
        ClientOptions {
            decode: true,
            ..ClientOptions::default()
        },
    );
    let first = client.first_decoded_after(Duration::from_secs(10));
    assert!(
        first < Duration::from_millis(700),
        "attempt {attempt}: first frame after {first:?}"
    );
    client
}

#[test]
fn a_new_client_starts_from_the_cache_not_the_next_keyframe() {
    // A keyframe every 4 s: without the cache a client would wait 2 s on average.
    let camera = FakeCamera::start(&["--gop", "60", "--fps", "15"]);
    let (_vigil, ports) = vigil_with(&camera, "");
    std::thread::sleep(Duration::from_secs(1));
    for attempt in 0..3 {
        drop(a_client_that_starts_at_once(&ports, attempt));
        std::thread::sleep(Duration::from_millis(700 + attempt * 900));
    }
}

#[test]
fn a_client_joining_a_watched_camera_starts_from_the_cache() {
    // A keyframe every 4 s, and a client watching all along: a client joining the watched
    // camera starts from the cached GOP too, without slowing the one watching.
    let camera = FakeCamera::start(&["--gop", "60", "--fps", "15"]);
    let (vigil, ports) = vigil_with(&camera, "log_level: debug\n");
    let resident = RtspClient::start(&ports.restream("nursery"), ClientOptions::default());
    resident.wait("frames", Duration::from_secs(10), |c| c.au_count() > 5);
    for attempt in 0..3 {
        std::thread::sleep(Duration::from_millis(700 + attempt * 900));
        let (before, since) = (resident.au_count(), Instant::now());
        let client = a_client_that_starts_at_once(&ports, attempt);
        client.wait("frames after the GOP", Duration::from_secs(5), |c| {
            c.decoded().len() > 30
        });
        assert!(client.error().is_none(), "{:?}", client.error());
        // The resident client played on meanwhile (15 frames a second).
        std::thread::sleep(Duration::from_secs(1));
        let expected = (since.elapsed().as_secs_f64() * 15.0 * 0.7) as usize;
        let got = resident.au_count() - before;
        assert!(
            got >= expected,
            "the resident client got {got} frames, want {expected}"
        );
    }
    // The clients that left are no longer listed; the resident one is.
    wait_until("one client listed", Duration::from_secs(10), || {
        common::streams(ports.web)["nursery"]["consumers"]
            .as_array()
            .map(Vec::len)
            == Some(1)
    });
    assert!(resident.error().is_none(), "{:?}", resident.error());
    let log = vigil.output();
    assert!(!log.contains("closing a restream client"), "{log}");
}

#[test]
fn a_new_client_is_as_live_as_a_long_connected_one() {
    let camera = FakeCamera::start(&["--gop", "45", "--fps", "15"]);
    let (_vigil, ports) = vigil_with(&camera, "");
    let render = ClientOptions {
        render: true,
        ..ClientOptions::default()
    };
    let old = RtspClient::start(&ports.restream("nursery"), render.clone());
    old.wait("rendered frames", Duration::from_secs(10), |c| {
        c.rendered().len() > 30
    });
    // Join late in a GOP: the cache holds seconds of frames with old timestamps.
    std::thread::sleep(Duration::from_millis(2300));
    let new = RtspClient::start(&ports.restream("nursery"), render);
    new.wait("rendered frames", Duration::from_secs(10), |c| {
        c.rendered().len() > 60
    });
    std::thread::sleep(Duration::from_secs(1));

    // The same frames, shown by both: the newcomer shows them no later than the old client.
    let old_times: std::collections::HashMap<u64, Instant> = old.rendered().into_iter().collect();
    let settled = new.rendered()[0].1 + Duration::from_millis(500);
    let lags: Vec<f64> = new
        .rendered()
        .iter()
        .filter(|(_, at)| *at > settled)
        .filter_map(|(hash, at)| Some(at.duration_since(*old_times.get(hash)?).as_secs_f64()))
        .collect();
    assert!(lags.len() > 10, "{} frames in common", lags.len());
    let worst = lags.iter().cloned().fold(0.0, f64::max);
    assert!(
        worst < 0.25,
        "the new client shows frames up to {worst:.3} s after the old one"
    );
}

#[test]
fn udp_clients_play_too() {
    let camera = FakeCamera::start(&["--audio", "aac"]);
    let (_vigil, ports) = vigil_with(&camera, "");
    let client = RtspClient::start(
        &ports.restream("nursery"),
        ClientOptions {
            tcp: false,
            ..ClientOptions::default()
        },
    );
    client.wait("frames over UDP", Duration::from_secs(10), |c| {
        c.au_count() > 20 && c.audio_buffers() > 10
    });
    assert!(client.sdp().unwrap().contains("MPEG4-GENERIC"));
}

#[test]
fn the_restream_asks_for_its_own_password() {
    let camera = FakeCamera::start(&["--username", "admin", "--password", "CamPw123"]);
    let ports = Ports::free();
    let options = ports.options(&format!(
        "rtsp_username: family\nrtsp_password: Rest3eam\n{}",
        cameras_yaml(&[("nursery", &camera.url_with("admin", "CamPw123"))])
    ));
    let mut vigil = Vigil::start(&options);
    vigil.wait_for_log("camera online", Duration::from_secs(20));

    let anonymous = RtspClient::start(&ports.restream("nursery"), ClientOptions::default());
    anonymous.wait("an error", Duration::from_secs(10), |c| c.error().is_some());
    assert!(
        anonymous.error().unwrap().contains("Unauthorized"),
        "{:?}",
        anonymous.error()
    );
    assert_eq!(anonymous.au_count(), 0);

    // The camera's own credentials are not the restream's.
    let camera_login = RtspClient::start(
        &ports.restream("nursery"),
        ClientOptions {
            credentials: Some(("admin".into(), "CamPw123".into())),
            ..ClientOptions::default()
        },
    );
    camera_login.wait("an error", Duration::from_secs(10), |c| c.error().is_some());

    let family = RtspClient::start(
        &ports.restream("nursery"),
        ClientOptions {
            credentials: Some(("family".into(), "Rest3eam".into())),
            ..ClientOptions::default()
        },
    );
    family.wait("frames", Duration::from_secs(10), |c| c.au_count() > 10);
    assert!(!vigil.output().contains("CamPw123"));
    assert!(!vigil.output().contains("Rest3eam"));
}

#[test]
fn the_demo_camera_is_restreamed() {
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options("cameras: []\n"));
    vigil.wait_for_log("demo camera online", Duration::from_secs(20));
    let client = RtspClient::start(
        &ports.restream("demo"),
        ClientOptions {
            decode: true,
            ..ClientOptions::default()
        },
    );
    client.wait("demo frames and audio", Duration::from_secs(10), |c| {
        c.decoded().len() > 10 && c.audio_buffers() > 10
    });
    let consumers = &common::streams(ports.web)["demo"]["consumers"];
    assert_eq!(consumers.as_array().map(Vec::len), Some(1), "{consumers}");
    drop(client);
    wait_until(
        "the client gone from /api/streams",
        Duration::from_secs(10),
        || {
            common::streams(ports.web)["demo"]["consumers"]
                .as_array()
                .map(Vec::len)
                == Some(0)
        },
    );
    let _ = producer(ports.web, "demo");
}

/// The status line of a bare DESCRIBE of `url` (with `login` as HTTP Basic, if any).
fn describe_status(port: u16, url: &str, login: Option<&str>) -> String {
    use base64::Engine;
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let authorization = login.map_or(String::new(), |login| {
        format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(login)
        )
    });
    write!(
        stream,
        "DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n{authorization}\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// A player that asks for a camera Vigil has not heard from yet (down since Vigil started) is
/// told to come back later (503), not that its request is wrong; once the camera is up it plays.
/// A stranger still gets 401 first, and a wrong path 404.
#[test]
fn a_camera_not_seen_yet_is_unavailable_then_plays() {
    let port = common::free_port();
    let ports = Ports::free();
    let url = format!("rtsp://127.0.0.1:{port}/stream");
    let mut vigil = Vigil::start(&ports.options(&format!(
        "rtsp_username: family\nrtsp_password: Rest3eam\n{}",
        cameras_yaml(&[("nursery", &url)])
    )));
    vigil.wait_for_log("restream listening", Duration::from_secs(20));
    let login = Some("family:Rest3eam");
    let nursery = ports.restream("nursery");
    assert_eq!(
        describe_status(ports.rtsp, &nursery, login),
        "RTSP/1.0 503 Service Unavailable"
    );
    assert_eq!(
        describe_status(ports.rtsp, &nursery, None),
        "RTSP/1.0 401 Unauthorized"
    );
    assert_eq!(
        describe_status(ports.rtsp, &ports.restream("attic"), login),
        "RTSP/1.0 404 Not Found"
    );

    let _camera = FakeCamera::start_on(port, &[]);
    vigil.wait_for_log("camera online", Duration::from_secs(20));
    assert_eq!(
        describe_status(ports.rtsp, &nursery, login),
        "RTSP/1.0 200 OK"
    );
}
