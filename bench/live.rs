//! Live-view benchmarks (BENCHMARKS.md, "Live view"): WebRTC and MSE first frame in headless
//! Chromium, snapshot latency (over HTTP with the demo camera, and in-process for a 1080p
//! keyframe), and the CPU one WebRTC viewer costs.
//!
//!     cargo bench --bench live              (about 4 minutes)
//!     cargo bench --bench live -- --quick   (20 s CPU phases instead of 60 s)
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
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if !netns::inside() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let status = netns::rerun_inside(&args)
            .status()
            .expect("cannot run unshare (needs root)");
        std::process::exit(status.code().unwrap_or(1));
    }
    let quick = args.iter().any(|a| a == "--quick");
    let cpu_phase = Duration::from_secs(if quick { 20 } else { 60 });

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
        cpu_per_viewer(&mut chromium, web, vigil.pid(), cpu_phase).await;
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
        let page = chromium
            .open(&format!("http://127.0.0.1:{web}/live?src=demo&mode={mode}"))
            .await;
        let first = chromium
            .wait_for(
                &page,
                "window.vigil && vigil.firstFrameMs",
                Duration::from_secs(30),
            )
            .await;
        times.push(first.as_f64().unwrap());
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

/// CPU seconds `pid` used so far (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

async fn cpu_per_minute(pid: u32, phase: Duration) -> f64 {
    let (start, t0) = (cpu_seconds(pid), Instant::now());
    tokio::time::sleep(phase).await;
    (cpu_seconds(pid) - start) * 60.0 / t0.elapsed().as_secs_f64()
}

async fn cpu_per_viewer(chromium: &mut Chromium, web: u16, pid: u32, phase: Duration) {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = cpu_per_minute(pid, phase).await;
    println!("vigil CPU, demo camera, no viewer: {idle:.2} CPU-s/min");
    let mut pages = Vec::new();
    for viewers in [1usize, 4] {
        while pages.len() < viewers {
            let page = chromium
                .open(&format!("http://127.0.0.1:{web}/live?src=demo&mode=webrtc"))
                .await;
            chromium
                .wait_for(
                    &page,
                    "window.vigil && vigil.firstFrameMs",
                    Duration::from_secs(30),
                )
                .await;
            pages.push(page);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let busy = cpu_per_minute(pid, phase).await;
        println!(
            "vigil CPU with {viewers} WebRTC viewer(s): {busy:.2} CPU-s/min, {:.2} CPU-s/min per viewer over idle",
            (busy - idle) / viewers as f64
        );
    }
    for page in pages {
        chromium.close(page).await;
    }
}
