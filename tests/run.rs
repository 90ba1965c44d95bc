//! `vigil run` as a process: the demo camera, a clean stop on SIGTERM, a port in use, secrets
//! kept out of the log.

mod common;

use std::time::Duration;

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
    let secret = "Sup3rS3cretCamPw";
    let camera_port = free_port();
    let mut vigil = Vigil::start(&options_with_free_ports(&format!(
        "log_level: trace\ncameras:\n  - name: nursery\n    url: rtsp://admin:{secret}@127.0.0.1:{camera_port}/stream1\n"
    )));
    vigil.wait_for_log("nursery", Duration::from_secs(10));
    // Let the camera actor try (and fail) to connect a few times.
    std::thread::sleep(Duration::from_secs(3));
    vigil.terminate();
    let out = vigil.output();
    assert!(
        out.contains("rtsp://admin:***@127.0.0.1"),
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
    let body = common::http_get(web_port, "/api/health");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
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
    let body = common::http_get(web_port, "/api/health");
    assert!(body.starts_with("HTTP/1.1 403"), "{body}");
    vigil.terminate();
}
