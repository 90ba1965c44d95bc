//! A real Home Assistant core with `go2rtc: url:` pointing at Vigil's API: HA accepts the
//! server; the camera entity Vigil added itself (a Generic Camera on its own restream, through
//! a fake Supervisor proxying HA's API) is registered with `PUT /api/streams` and mapped onto
//! the camera instead of pulled; HA forwards a real Chromium offer over `/api/ws`, and the
//! answer it hands back plays in that Chromium. Inside a private network namespace
//! (webrtcbin and Chromium gather candidates on every interface).

mod common;

use std::time::Duration;

use common::chromium::{self, Chromium};
use common::fake_camera::FakeCamera;
use common::fake_supervisor::{Answers, FakeSupervisor};
use common::home_assistant::HomeAssistant;
use common::{Ports, Vigil, cameras_yaml, netns};

const TOKEN: &str = "addon-token-for-vigil";
use serde_json::Value;

#[test]
fn home_assistant_uses_vigil_as_its_go2rtc_server() {
    if !netns::enter("home_assistant_uses_vigil_as_its_go2rtc_server") {
        return;
    }
    let fake_camera = FakeCamera::start(&[]);
    let ports = Ports::free();
    // Vigil first (Home Assistant checks its go2rtc server at start); the Supervisor proxies
    // Home Assistant's API once it is up, and Vigil retries until then.
    let supervisor = FakeSupervisor::start(Answers {
        token: TOKEN.into(),
        mqtt: None,
        mqtt_access: true,
        v2: false,
    });
    let mut vigil = Vigil::start_with_env(
        &ports.options(&format!(
            "log_level: debug\n{}",
            cameras_yaml(&[("nursery", &fake_camera.url())])
        )),
        &[
            ("SUPERVISOR_TOKEN", TOKEN),
            ("SUPERVISOR_URL", supervisor.url.as_str()),
        ],
    );
    vigil.wait_for_log("camera online", Duration::from_secs(20));
    let ha = HomeAssistant::start(
        &format!("go2rtc:\n  url: http://127.0.0.1:{}/\n", ports.api),
        |_| {},
    );
    supervisor.proxy_core(&ha.url, &ha.token);
    ha.wait_entry_loaded("go2rtc", Duration::from_secs(60));
    vigil.wait_for_log(
        "Home Assistant camera entries in sync",
        Duration::from_secs(60),
    );
    let camera = "camera.nursery";

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut chromium = Chromium::launch().await;
        let page = chromium.open("about:blank").await;
        let offer = chromium.eval(&page, chromium::RECVONLY_OFFER).await;
        let offer = offer.as_str().expect("no offer").to_string();

        let events = ha.webrtc_offer(camera, &offer);
        let answer = events
            .iter()
            .find(|e| e["type"] == "answer")
            .and_then(|e| e["answer"].as_str())
            .unwrap_or_else(|| panic!("no answer from HA: {events:?}\n{}", vigil.output()));
        assert!(answer.contains("a=fmtp:"), "{answer}");

        let answer_js = serde_json::to_string(answer).unwrap();
        chromium
            .eval(
                &page,
                &format!("pc.setRemoteDescription({{type: 'answer', sdp: {answer_js}}}).then(() => true)"),
            )
            .await;
        for event in events.iter().filter(|e| e["type"] == "candidate") {
            let candidate = match &event["candidate"] {
                Value::String(s) => s.clone(),
                other => other["candidate"].as_str().unwrap_or_default().to_string(),
            };
            let candidate = serde_json::to_string(&candidate).unwrap();
            chromium
                .eval(
                    &page,
                    &format!(
                        "pc.addIceCandidate({{candidate: {candidate}, sdpMLineIndex: 0}}).then(() => true, e => String(e))"
                    ),
                )
                .await;
        }
        let decoded = chromium
            .wait_for(
                &page,
                chromium::FRAMES_DECODED,
                Duration::from_secs(30),
            )
            .await;
        println!("Home Assistant's WebRTC path plays: {decoded} frames decoded");
    });

    let log = vigil.output();
    assert!(
        log.contains(&format!(
            "stream name registered name=\"{camera}\" camera=\"nursery\""
        )) || log.contains(&format!(
            "stream name registered name={camera} camera=nursery"
        )),
        "HA's PUT /api/streams was not mapped onto the camera:\n{log}"
    );
    drop(ha);
}
