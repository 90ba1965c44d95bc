//! Live-view benchmarks (BENCHMARKS.md, "Live view"): WebRTC and MSE first frame in headless
//! Chromium with the demo camera, and snapshot latency (over HTTP with the demo camera, and
//! in-process for a 1080p keyframe). What viewers cost in CPU is `bench/live_cpu.rs`.
//!
//!     cargo bench --bench live              (about a minute)
//!
//! Runs itself again inside a private network namespace (WebRTC gathers candidates on every
//! interface), as the browser tests do; needs root.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::chromium::Chromium;
use common::{Vigil, free_port, netns};
use gst::prelude::*;

fn main() {
    netns::enter_main();

    snapshot_1080p_in_process();

    let (api, web) = (free_port(), free_port());
    let mut vigil = Vigil::start(&format!(
        "api_port: {api}\nweb_port: {web}\nrtsp_port: {}\nlog_level: info\n",
        free_port()
    ));
    vigil.wait_for_log("demo camera online", Duration::from_secs(20));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        snapshots_over_http(api).await;
        let mut chromium = Chromium::launch().await;
        for mode in ["webrtc", "mse"] {
            first_frames(&mut chromium, web, mode, 11).await;
        }
    });
    vigil.terminate();
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn summary(label: &str, mut values: Vec<f64>, unit: &str) {
    let first = values[0];
    let median = median(&mut values);
    println!(
        "{label}: median {median:.1} {unit} over {} (min {:.1}, max {:.1}; first {first:.1})",
        values.len(),
        values[0],
        values[values.len() - 1]
    );
}

async fn first_frames(chromium: &mut Chromium, web: u16, mode: &str, runs: usize) {
    let mut times = Vec::new();
    for _ in 0..runs {
        let (page, first) = chromium
            .open_playing(&format!("http://127.0.0.1:{web}/live?src=demo&mode={mode}"))
            .await;
        times.push(first);
        chromium.close(page).await;
        // Let the viewer end before the next one.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    summary(
        &format!("{mode} first frame in Chromium (page start to first decoded frame)"),
        times,
        "ms",
    );
}

async fn snapshots_over_http(api: u16) {
    let client = reqwest::Client::new();
    let timed = |url: String| {
        let client = client.clone();
        async move {
            let started = Instant::now();
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
            started.elapsed().as_secs_f64() * 1000.0
        }
    };
    let base = format!("http://127.0.0.1:{api}/api/frame.jpeg?src=demo");
    let mut decoded = Vec::new();
    for i in 0..21 {
        // A size not asked for before: a real decode every time.
        decoded.push(timed(format!("{base}&width={}", 320 + 2 * i)).await);
    }
    summary("snapshot over HTTP, 640x360 demo, decoded", decoded, "ms");
    let mut cached = Vec::new();
    for _ in 0..21 {
        cached.push(timed(format!("{base}&width=320")).await);
    }
    summary(
        "snapshot over HTTP, same keyframe again (cached)",
        cached,
        "ms",
    );
}

/// Decodes a 1080p 4 Mbit/s keyframe to JPEG through the snapshot service, in this process.
fn snapshot_1080p_in_process() {
    gst::init().unwrap();
    let (caps, keyframe) = encode_1080p_keyframe();
    let hub = vigil::camera::Hub::new(Default::default());
    hub.set_info(vigil::camera::StreamInfo {
        video: Some(caps),
        audio: None,
    });
    let (_tx, status) = tokio::sync::watch::channel(vigil::camera::CameraStatus::default());
    let camera = vigil::camera::CameraHandle::new("bench", Arc::clone(&hub), status);
    let snapshots = vigil::live::snapshot::Snapshots::default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut times = Vec::new();
    for i in 0..21u64 {
        // A new keyframe each time (same picture, later timestamp): no cache hit.
        hub.push(
            vigil::camera::Track::Video,
            keyframe.clone(),
            Duration::from_millis(1000 * i),
            true,
        );
        let started = Instant::now();
        let snapshot = runtime
            .block_on(snapshots.take(&camera, Default::default()))
            .unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!((snapshot.width, snapshot.height), (1920, 1080));
    }
    summary("snapshot in process, 1080p keyframe, decoded", times, "ms");
}

fn encode_1080p_keyframe() -> (gst::Caps, gst::Buffer) {
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=1 pattern=smpte ! video/x-raw,format=I420,width=1920,height=1080 \
         ! x264enc bitrate=4000 speed-preset=veryfast tune=zerolatency \
         ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au \
         ! appsink name=sink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let sample = sink.pull_sample().unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    (
        sample.caps().unwrap().to_owned(),
        sample.buffer_owned().unwrap(),
    )
}
