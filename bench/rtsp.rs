//! The restream benchmark (`cargo bench --bench rtsp`): the fake camera at 1080p, 4 Mbit/s,
//! snow, a 2 s GOP, with G.711 audio; the real `vigil` binary (release build); RTSP clients in a
//! separate process. It measures, each as a median over repeats:
//!
//! - CPU-seconds per minute of the Vigil process, and its RSS, at 0, 1, 4 and 16 clients;
//! - the first decoded frame of a new client (from starting the player to its first decoded
//!   picture), while another client is watching;
//! - the relay delay: how much later each access unit reaches a client through Vigil than a
//!   client of the camera itself (matched by content);
//! - recovery: from a camera back after a 10 s outage to a connected client's next frame.
//!
//! Options (after `--`): `--window S` (CPU window, default 20), `--repeats N` (default 3),
//! `--counts 0,1,4,16`, `--only cpu|latency|recovery`. Results go to stdout as Markdown.
//! `BENCH_CAMERA_ARGS` replaces the fake camera's arguments; `BENCH_VIGIL_OPTIONS` adds option
//! lines (such as `unify_audio: false`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "measure.rs"]
mod measure;

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use common::fake_camera::FakeCamera;
use common::rtsp_client::{ClientOptions, RtspClient};
use common::{Ports, Vigil, cameras_yaml, rss_kib, streams, wait_until};
use measure::{cpu_time, environment, median};

const CAMERA: &[&str] = &[
    "--width",
    "1920",
    "--height",
    "1080",
    "--fps",
    "25",
    "--bitrate",
    "4000",
    "--gop",
    "50",
    "--audio",
    "pcma",
];

struct Options {
    window: Duration,
    repeats: usize,
    counts: Vec<usize>,
    only: Option<String>,
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    measure::play_if_asked(&args);
    let options = parse(&args);
    println!("# Vigil restream benchmark\n");
    environment("before");

    let camera_args: Vec<String> = std::env::var("BENCH_CAMERA_ARGS")
        .map(|a| a.split_whitespace().map(String::from).collect())
        .unwrap_or_else(|_| CAMERA.iter().map(|a| a.to_string()).collect());
    let camera_args: Vec<&str> = camera_args.iter().map(String::as_str).collect();
    println!("camera: `vigil-fake-camera {}`\n", camera_args.join(" "));
    let mut camera = FakeCamera::start(&camera_args);
    let ports = Ports::free();
    // Experiments with other restream designs pass VIGIL_RESTREAM_* through.
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("VIGIL_RESTREAM_"))
        .collect();
    for (k, v) in &env {
        println!("with {k}={v}\n");
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let extra_options = std::env::var("BENCH_VIGIL_OPTIONS").unwrap_or_default();
    if !extra_options.is_empty() {
        println!("with options `{extra_options}`\n");
    }
    let mut vigil = Vigil::start_with_env(
        &ports.options(&format!(
            "log_level: warning\n{extra_options}\n{}",
            cameras_yaml(&[("cam", &camera.url())])
        )),
        &env,
    );
    common::wait_for_panel(ports.web);
    wait_until("camera online", Duration::from_secs(30), || {
        streams(ports.web)["cam"]["producers"][0]["state"] == "online"
    });
    std::thread::sleep(Duration::from_secs(3));
    let url = ports.restream("cam");

    let wants = |what: &str| options.only.as_deref().is_none_or(|o| o == what);
    if wants("cpu") {
        cpu(&vigil, &camera, &ports, &url, &options);
    }
    if wants("latency") {
        first_frame(&url, options.repeats.max(10));
        relay_delay(&camera, &url, options.window);
    }
    if wants("recovery") {
        recovery(&mut camera, &url, options.repeats);
    }
    environment("after");
    vigil.terminate();
}

fn parse(args: &[String]) -> Options {
    let mut options = Options {
        window: Duration::from_secs(20),
        repeats: 3,
        counts: vec![0, 1, 4, 16],
        only: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("a value after the option").clone();
        match arg.as_str() {
            "--window" => options.window = Duration::from_secs(value().parse().expect("seconds")),
            "--repeats" => options.repeats = value().parse().expect("a number"),
            "--counts" => {
                options.counts = value()
                    .split(',')
                    .map(|n| n.parse().expect("a number"))
                    .collect()
            }
            "--only" => options.only = Some(value()),
            _ => {}
        }
    }
    options
}

fn cpu(vigil: &Vigil, camera: &FakeCamera, ports: &Ports, url: &str, options: &Options) {
    println!(
        "## CPU and memory (window {} s, {} repeats)\n",
        options.window.as_secs(),
        options.repeats
    );
    println!("| clients | Vigil CPU-s/min (median) | all repeats | RSS MiB | camera CPU-s/min |");
    println!("| --- | --- | --- | --- | --- |");
    // A shared media is one consumer of the hub, however many clients it has.
    let shared = std::env::var("VIGIL_RESTREAM_DESIGN").as_deref() == Ok("shared");
    for &n in &options.counts {
        let mut clients = (n > 0).then(|| spawn_clients(url, n));
        let expected = if shared { n.min(1) } else { n };
        wait_until("clients connected", Duration::from_secs(60), || {
            streams(ports.web)["cam"]["consumers"]
                .as_array()
                .map_or(0, Vec::len)
                == expected
        });
        if shared {
            std::thread::sleep(Duration::from_secs(5));
        }
        std::thread::sleep(Duration::from_secs(3));
        let mut runs = Vec::new();
        let mut camera_runs = Vec::new();
        for _ in 0..options.repeats {
            let (v0, c0, t0) = (
                cpu_time(vigil.pid()),
                cpu_time(camera.pid()),
                Instant::now(),
            );
            std::thread::sleep(options.window);
            let minutes = t0.elapsed().as_secs_f64() / 60.0;
            runs.push((cpu_time(vigil.pid()) - v0).as_secs_f64() / minutes);
            camera_runs.push((cpu_time(camera.pid()) - c0).as_secs_f64() / minutes);
        }
        let rss = rss_kib(vigil.pid()) as f64 / 1024.0;
        let all = runs
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "| {n} | {:.2} | {all} | {rss:.1} | {:.1} |",
            median(&mut runs.clone()),
            median(&mut camera_runs)
        );
        if let Some(child) = clients.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_until("clients gone", Duration::from_secs(30), || {
            streams(ports.web)["cam"]["consumers"]
                .as_array()
                .map_or(0, Vec::len)
                == 0
        });
    }
    println!();
}

fn spawn_clients(url: &str, n: usize) -> Child {
    measure::spawn_players(&vec![url.to_string(); n])
}

fn first_frame(url: &str, tries: usize) {
    // Someone is already watching (a shared media would be running).
    let mut watching = spawn_clients(url, 1);
    std::thread::sleep(Duration::from_secs(2));
    let mut firsts = Vec::new();
    for i in 0..tries {
        let client = RtspClient::start(
            url,
            ClientOptions {
                decode: true,
                ..ClientOptions::default()
            },
        );
        firsts.push(
            client
                .first_decoded_after(Duration::from_secs(10))
                .as_secs_f64(),
        );
        drop(client);
        // Land at different points of the GOP.
        std::thread::sleep(Duration::from_millis(300 + (i as u64 * 370) % 1700));
    }
    let _ = watching.kill();
    let _ = watching.wait();
    let all = firsts
        .iter()
        .map(|f| format!("{f:.3}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!("## First decoded frame for a new client (another one watching)\n");
    println!(
        "median **{:.3} s** over {tries} tries ({all})\n",
        median(&mut firsts)
    );
}

fn relay_delay(camera: &FakeCamera, url: &str, window: Duration) {
    // No jitter buffer in the measuring clients: each access unit is timed as it arrives.
    let measuring = ClientOptions {
        latency_ms: 0,
        ..ClientOptions::default()
    };
    let direct = RtspClient::start(&camera.url(), measuring.clone());
    let relayed = RtspClient::start(url, measuring);
    std::thread::sleep(Duration::from_secs(2) + window);
    let at_camera: HashMap<u64, Instant> = direct.aus().iter().map(|au| (au.hash, au.at)).collect();
    let settled = relayed.started + Duration::from_secs(2);
    let mut delays: Vec<f64> = relayed
        .aus()
        .iter()
        .filter(|au| au.at > settled)
        .filter_map(|au| Some((au.at - *at_camera.get(&au.hash)?).as_secs_f64() * 1000.0))
        .collect();
    let n = delays.len();
    let p95 = {
        delays.sort_by(f64::total_cmp);
        delays.get(n * 95 / 100).copied().unwrap_or(f64::NAN)
    };
    println!("## Added relay delay per frame\n");
    println!(
        "median **{:.1} ms**, p95 {p95:.1} ms over {n} frames (restream client vs a client of the camera)\n",
        median(&mut delays)
    );
}

fn recovery(camera: &mut FakeCamera, url: &str, repeats: usize) {
    let client = RtspClient::start(url, ClientOptions::default());
    client.wait("frames", Duration::from_secs(10), |c| c.au_count() > 10);
    let mut backs = Vec::new();
    for _ in 0..repeats {
        camera.stop();
        std::thread::sleep(Duration::from_secs(10));
        let before = client.au_count();
        camera.restart();
        let ready = Instant::now();
        client.wait("frames after the outage", Duration::from_secs(60), |c| {
            c.au_count() > before
        });
        backs.push((client.aus()[before].at - ready).as_secs_f64());
        std::thread::sleep(Duration::from_secs(12));
    }
    let all = backs
        .iter()
        .map(|b| format!("{b:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!("## Recovery after a 10 s camera outage\n");
    println!(
        "median **{:.2} s** from the camera serving again to the connected client's next frame ({all})\n",
        median(&mut backs)
    );
}
