//! `vigil run` as a process: the demo camera, a clean stop on SIGTERM, a port in use, secrets
//! kept out of the log.

mod common;

use std::time::Duration;

use common::fake_camera::FakeCamera;
use common::{Vigil, free_port, options_with_free_ports};

#[test]
fn no_config_starts_the_demo_camera_and_stops_on_sigterm() {
    let mut vigil = Vigil::start(&options_with_free_ports("cameras: []\n"));
    vigil.wait_for_log("built-in demo camera", Duration::from_secs(10));
    vigil.wait_for_log("demo camera online", Duration::from_secs(10));
    let (status, took) = vigil.terminate();
    assert!(status.success(), "exit {status}:\n{}", vigil.output());
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert!(vigil.output().contains("stopped"));
    assert!(!vigil.output().contains("panicked"), "{}", vigil.output());
    assert!(!vigil.output().contains("CRITICAL"), "{}", vigil.output());
}

#[test]
fn ctrl_c_stops_too() {
    let mut vigil = Vigil::start(&options_with_free_ports(""));
    vigil.wait_for_log("panel listening", Duration::from_secs(10));
    common::signal(vigil.pid(), "INT");
    let status = vigil.wait(Duration::from_secs(5));
    assert!(status.success(), "exit {status}:\n{}", vigil.output());
}

#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut vigil = Vigil::start(&format!(
        "web_port: {port}\nrtsp_port: {}\napi_port: {}\n",
        free_port(),
        free_port()
    ));
    let status = vigil.wait(Duration::from_secs(10));
    assert!(!status.success());
    let out = vigil.output();
    assert!(
        out.contains(&format!("web_port {port} is already in use")),
        "{out}"
    );
}

#[test]
fn camera_password_never_reaches_the_log() {
    // Two real failing connections, at trace level: a camera that refuses the password (its
    // errors quote the request) and a port where nothing listens.
    let secret = "Sup3rS3cretCamPw";
    let camera = FakeCamera::start(&["--username", "admin", "--password", "another"]);
    let refused = free_port();
    let mut vigil = Vigil::start(&options_with_free_ports(&format!(
        "log_level: trace\ncameras:\n  - name: nursery\n    url: {}\n  - name: hall\n    url: \
         rtsp://admin:{secret}@127.0.0.1:{refused}/stream1?password={secret}\n",
        camera.url_with("admin", secret)
    )));
    vigil.wait_for_log("unauthorized (401)", Duration::from_secs(20));
    vigil.wait_for_log("unreachable", Duration::from_secs(20));
    vigil.terminate();
    let out = vigil.output();
    assert!(
        out.contains(&format!(
            "rtsp://admin:***@127.0.0.1:{}/stream",
            camera.port
        )),
        "the URL should be shown redacted:\n{out}"
    );
    assert!(!out.contains(secret), "camera password in the log:\n{out}");
}

#[test]
fn the_panel_answers_health() {
    let web_port = free_port();
    let mut vigil = Vigil::start(&format!(
        "web_port: {web_port}\nrtsp_port: {}\napi_port: {}\n",
        free_port(),
        free_port()
    ));
    vigil.wait_for_log("panel listening", Duration::from_secs(10));
    let (status, body) = common::http_get(web_port, "/api/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    vigil.terminate();
}

#[test]
fn the_panel_refuses_peers_outside_web_allow() {
    let web_port = free_port();
    let mut vigil = Vigil::start(&format!(
        "web_port: {web_port}\nrtsp_port: {}\napi_port: {}\nweb_allow: [172.30.32.2]\n",
        free_port(),
        free_port()
    ));
    vigil.wait_for_log("panel listening", Duration::from_secs(10));
    let (status, body) = common::http_get(web_port, "/api/streams");
    assert_eq!(status, 403, "{body}");
    let (status, body) = common::http_get(web_port, "/");
    assert_eq!(status, 403, "{body}");
    // The image's health check asks from loopback (addon/rootfs/usr/local/bin/vigil-healthcheck).
    let (status, body) = common::http_get(web_port, "/api/health");
    assert_eq!(status, 200, "{body}");
    vigil.terminate();
}
