//! The panel's page and JSON endpoints through the real binary (the browser tests of the panel
//! are in tests/panel_browser.rs).

mod common;

use std::time::Duration;

use common::{Vigil, free_port};

fn start() -> (Vigil, u16) {
    let web_port = free_port();
    let mut vigil = Vigil::start(&format!(
        "web_port: {web_port}\nrtsp_port: {}\napi_port: {}\n",
        free_port(),
        free_port()
    ));
    vigil.wait_for_log("panel listening", Duration::from_secs(20));
    (vigil, web_port)
}

#[test]
fn the_page_and_its_assets_use_relative_urls_only() {
    let (mut vigil, port) = start();
    let (status, page) = common::http_get(port, "/");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<!doctype html>"), "{page}");
    // Under ingress the page lives at /api/hassio_ingress/<token>/: an absolute path would miss.
    for needle in ["src=\"/", "href=\"/", "fetch(\"/", "fetch('/"] {
        assert!(
            !page.contains(needle),
            "absolute URL ({needle}) in the page"
        );
    }
    for asset in [
        "app.js",
        "episodes.js",
        "player.js",
        "style.css",
        "icon.png",
    ] {
        let (status, res) = common::http_get(port, &format!("/assets/{asset}"));
        assert_eq!(status, 200, "{asset}");
        assert!(
            !res.contains("fetch(\"/") && !res.contains("`/api"),
            "{asset} uses an absolute URL"
        );
    }
    let (status, _) = common::http_get(port, "/assets/nope.js");
    assert_eq!(status, 404);
    vigil.terminate();
}

#[test]
fn the_state_lists_every_camera_with_its_health() {
    let (mut vigil, port) = start();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let state = loop {
        let (_, body) = common::http_get(port, "/api/panel/state");
        let state: serde_json::Value = serde_json::from_str(&body).expect("state is JSON");
        if state["cameras"][0]["status"]["state"] == "online"
            || std::time::Instant::now() > deadline
        {
            break state;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let camera = &state["cameras"][0];
    assert_eq!(camera["name"], "demo", "{state}");
    assert_eq!(camera["status"]["state"], "online", "{state}");
    assert_eq!(camera["status"]["video"]["codec"], "H.264", "{state}");
    assert_eq!(camera["status"]["video"]["width"], 640, "{state}");
    assert_eq!(camera["detection"]["enabled"], true, "{state}");
    assert_eq!(
        state["mqtt"]["state"], "off",
        "no broker in this test: {state}"
    );
    assert!(
        state["mqtt"]["detail"]
            .as_str()
            .unwrap()
            .contains("mqtt.host"),
        "{state}"
    );
    vigil.terminate();
}

#[test]
fn the_history_names_a_missing_camera() {
    let (mut vigil, port) = start();
    let (status, res) = common::http_get(port, "/api/panel/history?camera=nursery&hours=12");
    assert_eq!(status, 404, "{res}");
    assert!(
        res.contains("no camera named 'nursery'; cameras: demo"),
        "{res}"
    );
    let (status, res) = common::http_get(port, "/api/panel/history?camera=demo&hours=12");
    assert_eq!(status, 200, "{res}");
    let history: serde_json::Value = serde_json::from_str(&res).unwrap();
    assert_eq!(history["bucket_seconds"], 5, "{history}");
    assert!(
        history["buckets"].is_array() && history["episodes"].is_array(),
        "{history}"
    );
    vigil.terminate();
}

#[test]
fn the_episodes_list_nothing_before_a_cry_and_name_what_is_missing() {
    let (mut vigil, port) = start();
    let (status, res) = common::http_get(port, "/api/panel/episodes?hours=12");
    assert_eq!(status, 200, "{res}");
    let list: serde_json::Value = serde_json::from_str(&res).unwrap();
    assert_eq!(list["episodes"], serde_json::json!([]), "{list}");
    let (status, res) = common::http_get(port, "/api/panel/episodes?camera=nursery");
    assert_eq!(status, 404, "{res}");
    assert!(
        res.contains("no camera named 'nursery'; cameras: demo"),
        "{res}"
    );
    let (status, res) = common::http_get(port, "/api/panel/cry-pictures/demo/1700000000000.jpg");
    assert_eq!(status, 404, "{res}");
    assert!(res.contains("no picture of demo's cry"), "{res}");
    let (status, res) =
        common::http_get(port, "/api/panel/cry-pictures/demo/..%2F..%2Fsettings.json");
    assert_eq!(status, 404, "{res}");
    assert!(res.contains("is not a cry picture's name"), "{res}");
    vigil.terminate();
}
