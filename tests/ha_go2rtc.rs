//! A real Home Assistant core with `go2rtc: url:` pointing at Vigil's API: HA accepts the
//! server, registers its camera entity with `PUT /api/streams`, forwards a real Chromium offer
//! over `/api/ws`, and the answer it hands back plays in that Chromium. Inside a private
//! network namespace (webrtcbin and Chromium gather candidates on every interface).

mod common;

use std::time::Duration;

use common::chromium::{self, Chromium};
use common::home_assistant::HomeAssistant;
use common::{Vigil, free_port, netns};
use serde_json::Value;

/// An RTSP server on `port` serving `/demo`, for HA's Generic Camera flow while Vigil has no
/// restream of its own on that port yet (the camera module brings it). Returns `None` when
/// something already answers there (Vigil's restream), which is then used instead.
fn rtsp_stand_in(port: u16) -> Option<(gst_rtsp_server::RTSPServer, gst::glib::MainLoop)> {
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        return None;
    }
    gst::init().unwrap();
    let context = gst::glib::MainContext::new();
    let main_loop = gst::glib::MainLoop::new(Some(&context), false);
    let server = gst_rtsp_server::RTSPServer::new();
    server.set_address("127.0.0.1");
    server.set_service(&port.to_string());
    let factory = gst_rtsp_server::RTSPMediaFactory::new();
    factory.set_launch(
        "( videotestsrc is-live=true ! video/x-raw,format=I420,width=320,height=240,framerate=10/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 \
         ! rtph264pay name=pay0 pt=96 config-interval=1 )",
    );
    factory.set_shared(true);
    use gst_rtsp_server::prelude::*;
    server.mount_points().unwrap().add_factory("/demo", factory);
    server.attach(Some(&context)).unwrap();
    let running = main_loop.clone();
    std::thread::spawn(move || {
        let _guard = context.acquire().unwrap();
        running.run();
    });
    Some((server, main_loop))
}

#[test]
fn home_assistant_uses_vigil_as_its_go2rtc_server() {
    if !netns::enter("home_assistant_uses_vigil_as_its_go2rtc_server") {
        return;
    }
    let (api, web, rtsp) = (free_port(), free_port(), free_port());
    let mut vigil = Vigil::start(&format!(
        "api_port: {api}\nweb_port: {web}\nrtsp_port: {rtsp}\nlog_level: debug\n"
    ));
    vigil.wait_for_log("demo camera online", Duration::from_secs(20));
    let stand_in = rtsp_stand_in(rtsp);

    let Some(ha) = HomeAssistant::start(
        &format!("go2rtc:\n  url: http://127.0.0.1:{api}/\n"),
        |_| {},
    ) else {
        return;
    };
    ha.wait_entry_loaded("go2rtc", Duration::from_secs(60));
    let camera = ha.add_generic_camera(&format!("rtsp://127.0.0.1:{rtsp}/demo"));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut chromium = Chromium::launch().await;
        let page = chromium.open("about:blank").await;
        let offer = chromium.eval(&page, chromium::RECVONLY_OFFER).await;
        let offer = offer.as_str().expect("no offer").to_string();

        let events = ha.webrtc_offer(&camera, &offer);
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
            "stream name registered name=\"{camera}\" camera=\"demo\""
        )) || log.contains(&format!("stream name registered name={camera} camera=demo")),
        "HA's PUT /api/streams was not mapped onto the camera:\n{log}"
    );
    drop(ha);
    if let Some((_server, main_loop)) = stand_in {
        main_loop.quit();
    }
}
