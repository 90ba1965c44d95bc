//! What WebRTC viewers cost (BENCHMARKS.md, "Live view"): Vigil's web servers and live view in
//! this process, fed by a camera stand-in that plays a 1080p 4 Mbit/s H.264 + G.711 recording
//! in real time (no encoding while measuring), watched by headless Chromium tabs.
//!
//!     cargo bench --bench live_cpu              (60 s per phase)
//!     cargo bench --bench live_cpu -- --quick   (20 s per phase)
//!
//! Prints this process's CPU per minute with 0, 1 and 4 viewers, and which threads used it.
//! Runs itself again inside a private network namespace, as the browser tests do.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "measure.rs"]
mod measure;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::chromium::Chromium;
use common::{TempDir, free_port, netns};
use gst::prelude::*;
use tokio_util::sync::CancellationToken;
use vigil::camera::{CameraHandle, CameraStatus, Cameras, Hub, Track, sink::Session};

/// Seconds of recording, played in a loop.
const RECORDING_SECONDS: u32 = 20;

fn main() {
    netns::enter_main();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let phase = Duration::from_secs(if args.iter().any(|a| a == "--quick") {
        20
    } else {
        60
    });
    gst::init().unwrap();
    let dir = TempDir::new("bench-cpu");
    let recording = dir.path().join("camera.mkv");
    record(&recording);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let token = CancellationToken::new();
        let hub = Hub::new(Default::default());
        let (status_tx, status) = tokio::sync::watch::channel(CameraStatus::default());
        let camera = CameraHandle::new("cam", hub.clone(), status);
        let player = play_in_a_loop(recording.clone(), hub, token.clone());
        let web = serve(Cameras::new([camera]), &dir, token.clone()).await;
        tokio::time::sleep(Duration::from_secs(3)).await;

        let mut chromium = Chromium::launch().await;
        let idle = measure(phase).await;
        report("no viewer", &idle, None);
        let mut pages = Vec::new();
        for viewers in [1usize, 4] {
            while pages.len() < viewers {
                let (page, _) = chromium
                    .open_playing(&format!("http://127.0.0.1:{web}/live?src=cam&mode=webrtc"))
                    .await;
                pages.push(page);
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            let busy = measure(phase).await;
            report(
                &format!("{viewers} WebRTC viewer(s)"),
                &busy,
                Some((&idle, viewers)),
            );
        }
        for page in pages {
            chromium.close(page).await;
        }
        token.cancel();
        drop(status_tx);
        let _ = player.await;
    });
}

/// Encodes the camera stand-in's recording: 1080p at 15 fps, 4 Mbit/s, a keyframe a second
/// (snow, so that the whole bitrate is really spent), and 8 kHz A-law.
fn record(path: &std::path::Path) {
    let frames = RECORDING_SECONDS * 15;
    let description = format!(
        "videotestsrc num-buffers={frames} pattern=snow \
         ! video/x-raw,format=I420,width=1920,height=1080,framerate=15/1 \
         ! videoconvert ! x264enc bitrate=4000 vbv-buf-capacity=1000 speed-preset=ultrafast \
           tune=zerolatency key-int-max=15 dct8x8=true noise-reduction=0 \
         ! video/x-h264,profile=high ! h264parse ! queue ! mux. \
         audiotestsrc num-buffers={} samplesperbuffer=160 wave=pink-noise volume=0.1 \
         ! audio/x-raw,rate=8000,channels=1 ! alawenc ! queue ! mux. \
         matroskamux name=mux ! filesink location={}",
        RECORDING_SECONDS * 50,
        path.display()
    );
    let started = Instant::now();
    let pipeline = gst::parse::launch(&description).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    for message in bus.iter_timed(gst::ClockTime::NONE) {
        match message.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("recording failed: {}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let size = std::fs::metadata(path).unwrap().len();
    println!(
        "recording: {RECORDING_SECONDS} s of 1080p15, {:.1} Mbit/s overall, encoded in {:?}",
        size as f64 * 8.0 / 1e6 / f64::from(RECORDING_SECONDS),
        started.elapsed()
    );
}

/// Plays the recording into `hub` in real time, like a camera, again and again.
fn play_in_a_loop(
    path: std::path::PathBuf,
    hub: std::sync::Arc<Hub>,
    token: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !token.is_cancelled() {
            let description = format!(
                "filesrc location={} ! matroskademux name=demux \
                 demux. ! queue ! h264parse config-interval=-1 \
                 ! video/x-h264,stream-format=byte-stream,alignment=au \
                 ! appsink name=video sync=true max-buffers=64 \
                 demux. ! queue ! appsink name=audio sync=true max-buffers=64",
                path.display()
            );
            let pipeline = gst::parse::launch(&description)
                .unwrap()
                .downcast::<gst::Pipeline>()
                .unwrap();
            let session = Session::begin(hub.clone(), true, true);
            for (name, track) in [("video", Track::Video), ("audio", Track::Audio)] {
                let sink = pipeline
                    .by_name(name)
                    .unwrap()
                    .downcast::<gst_app::AppSink>()
                    .unwrap();
                session.connect(&sink, track);
            }
            pipeline.set_state(gst::State::Playing).unwrap();
            let mut messages = pipeline.bus().unwrap().stream();
            use futures::StreamExt;
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    message = messages.next() => match message.as_ref().map(|m| m.view()) {
                        Some(gst::MessageView::Eos(_)) | None => break,
                        Some(gst::MessageView::Error(e)) => panic!("playback failed: {}", e.error()),
                        _ => {}
                    },
                }
            }
            pipeline.set_state(gst::State::Null).unwrap();
        }
    })
}

/// Vigil's panel server (the live page and the live endpoints) for `cameras`.
async fn serve(cameras: Cameras, dir: &TempDir, token: CancellationToken) -> u16 {
    let config = vigil::config::Config::from_yaml("", vigil::config::Mode::Standalone).unwrap();
    let (_mqtt_tx, mqtt) = tokio::sync::watch::channel(vigil::mqtt::MqttStatus::Starting);
    let state = vigil::web::WebState {
        cameras,
        detection: None,
        settings: vigil::settings::Settings::load(&config, dir.path()),
        mqtt,
        live: vigil::live::Live::new(Default::default(), token.child_token()),
        names: Default::default(),
        rtsp_port: 8554,
        cry_pictures: dir.path().join(vigil::cry_pictures::PICTURES_DIR),
        clips: vigil::clips::Clips::new(&config.clips, config.clips_dir(), &[]),
    };
    let port = free_port();
    let listener = vigil::web::bind("web_port", port).await.unwrap();
    let router = vigil::web::panel_router(state, Vec::new());
    tokio::spawn(async move {
        let _keep = _mqtt_tx;
        vigil::web::serve(listener, router, token).await.unwrap();
    });
    port
}

struct Phase {
    /// CPU seconds per minute of wall time, per thread name.
    per_thread: HashMap<String, f64>,
    total: f64,
}

async fn measure(phase: Duration) -> Phase {
    let this = std::process::id();
    let (before, started) = (measure::thread_ticks(this), Instant::now());
    tokio::time::sleep(phase).await;
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let per_thread = measure::thread_rates(&before, &measure::thread_ticks(this), minutes);
    let total = per_thread.values().sum();
    Phase { per_thread, total }
}

fn report(label: &str, phase: &Phase, over: Option<(&Phase, usize)>) {
    let mut threads: Vec<_> = phase.per_thread.iter().collect();
    threads.sort_by(|a, b| b.1.total_cmp(a.1));
    let top: Vec<String> = threads
        .iter()
        .take(8)
        .map(|(name, v)| format!("{name} {v:.2}"))
        .collect();
    match over {
        Some((idle, viewers)) => println!(
            "{label}: {:.2} CPU-s/min, {:.2} per viewer over no viewer; threads: {}",
            phase.total,
            (phase.total - idle.total) / viewers as f64,
            top.join(", ")
        ),
        None => println!(
            "{label}: {:.2} CPU-s/min; threads: {}",
            phase.total,
            top.join(", ")
        ),
    }
}
