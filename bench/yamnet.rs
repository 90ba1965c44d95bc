//! YAMNet in Vigil: milliseconds per window on one thread, CPU share per camera, and the memory
//! the session takes with Vigil's memory options and with ONNX Runtime's defaults.
//!
//!     cargo bench --bench yamnet            # prints a Markdown table for BENCHMARKS.md
//!
//! Each memory setting runs in a child process of its own (RSS cannot be un-measured), three
//! times; the figures are medians.

#[path = "../tests/common/fixtures.rs"]
mod fixtures;

use std::process::Command;
use std::time::{Duration, Instant};

use vigil::audio::detector::{self, DetectorSettings};
use vigil::audio::windows::{Cut, Windower};
use vigil::audio::yamnet::{HOP_SAMPLES, MemoryOptions, ModelPaths, WINDOW_SAMPLES, Yamnet};
use vigil::audio::{PcmChunk, wav};

const WARM_UP: usize = 20;
const RUNS: usize = 200;
const REPEATS: usize = 5;
const CHILDREN: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.first().map(String::as_str) {
        Some("child") => child(args.get(1).map(String::as_str).unwrap_or("vigil")),
        Some("service") => service(),
        _ => parent(),
    }
}

/// A real window: the loudest second of a cry clip.
fn window() -> Vec<f32> {
    let clip = fixtures::audio("cry_01_belly_pain.wav");
    let mut audio = Vec::new();
    wav::decode(&clip, |c| audio.extend_from_slice(c)).expect("the clip reads");
    audio[5 * 16_000 - WINDOW_SAMPLES..5 * 16_000].to_vec()
}

/// VmRSS and VmHWM of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The settings compared, by name: (name, description, options).
const SETTINGS: [(&str, &str, MemoryOptions); 3] = [
    (
        "default",
        "ONNX Runtime defaults (arena on, mem pattern on)",
        MemoryOptions::ORT_DEFAULT,
    ),
    (
        "vigil",
        "Vigil: the defaults + heap trimmed after the load",
        MemoryOptions::VIGIL,
    ),
    (
        "no-arena",
        "arena off, mem pattern off, heap trimmed",
        MemoryOptions {
            cpu_arena: false,
            mem_pattern: false,
            trim_heap: true,
        },
    ),
];

/// Loads the model with one memory setting, times it, prints one line of figures.
fn child(setting: &str) {
    let memory = SETTINGS
        .iter()
        .find(|(name, _, _)| *name == setting)
        .map_or(MemoryOptions::VIGIL, |s| s.2);
    let input = window();
    let (before, _) = rss_kib();
    let started = Instant::now();
    let mut model = Yamnet::load(&ModelPaths::default(), memory).expect("YAMNet loads");
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let (loaded, _) = rss_kib();
    for _ in 0..WARM_UP {
        model.score(&input).unwrap();
    }
    let mut medians = Vec::new();
    let mut all = Vec::new();
    for _ in 0..REPEATS {
        let mut times = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let t = Instant::now();
            std::hint::black_box(model.score(std::hint::black_box(&input)).unwrap());
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        all.extend_from_slice(&times);
        medians.push(median(times));
    }
    all.sort_by(f64::total_cmp);
    let (running, peak) = rss_kib();
    println!(
        "{setting} {:.4} {:.4} {:.4} {:.1} {} {} {} {}",
        median(medians),
        all[all.len() / 10],
        all[all.len() * 9 / 10],
        load_ms,
        before,
        loaded,
        running,
        peak
    );
}

/// What Vigil does per window besides inference: the ring buffer, the copy, the level, the
/// detector.
fn overhead_us() -> f64 {
    let audio: Vec<f32> = (0..60 * 16_000)
        .map(|i| ((i as f32) * 0.01).sin() * 0.1)
        .collect();
    let mut medians = Vec::new();
    for _ in 0..REPEATS {
        let mut windower = Windower::new();
        let mut detector = detector::CryDetector::new();
        let settings = DetectorSettings::default();
        let mut windows = 0usize;
        let started = Instant::now();
        for (i, part) in audio.chunks(1600).enumerate() {
            let chunk = PcmChunk {
                pts: Duration::from_millis(100 * i as u64),
                samples: part.to_vec(),
            };
            windower.push(&chunk, |cut| {
                if let Cut::Window { end, samples } = cut {
                    let level_dbfs = detector::level_dbfs(&samples);
                    std::hint::black_box(detector.observe(
                        detector::Window {
                            end,
                            score: 0.1,
                            level_dbfs,
                        },
                        &settings,
                    ));
                    windows += 1;
                }
            });
        }
        medians.push(started.elapsed().as_secs_f64() * 1e6 / windows as f64);
    }
    median(medians)
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The whole detection service with one camera: 10 minutes of a cry clip and silence fed as
/// 100 ms chunks as fast as it takes them. Prints CPU ms per window and RSS.
fn service() {
    use tokio::sync::mpsc;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (before, _) = rss_kib();
    let dir = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
    let mut config = vigil::config::Config::from_yaml(
        "cameras: [{name: nursery, url: 'rtsp://cam/x'}]",
        vigil::config::Mode::Standalone,
    )
    .expect("options");
    config.data_dir = dir.clone();
    let clip = fixtures::audio("cry_09_tired.wav");
    let mut cry = Vec::new();
    wav::decode(&clip, |c| cry.extend_from_slice(c)).expect("the clip reads");
    cry.extend(std::iter::repeat_n(0.0f32, 13 * 16_000)); // 20 s: a cry, then quiet
    let (loaded, cpu, windows, after) = runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let settings = vigil::settings::Settings::in_memory(&config);
        let detection = vigil::audio::Detection::start(&config, settings, shutdown.child_token())
            .expect("start");
        let (loaded, _) = rss_kib();
        let (tx, rx) = mpsc::channel(8);
        let mut reading = detection.add_camera("nursery", rx);
        let cpu_start = cpu_seconds();
        let mut pts = Duration::ZERO;
        for _ in 0..30 {
            for part in cry.chunks(1600) {
                tx.send(PcmChunk {
                    pts,
                    samples: part.to_vec(),
                })
                .await
                .expect("send");
                pts += Duration::from_millis(100);
            }
        }
        // Wait for the last window (silence) to be read.
        let _ = reading.wait_for(|r| r.level_dbfs <= -100.0).await;
        drop(tx);
        let windows = (pts.as_secs_f64() / 0.48) as usize;
        let cpu = cpu_seconds() - cpu_start;
        let (after, _) = rss_kib();
        shutdown.cancel();
        detection.stopped().await;
        (loaded, cpu, windows, after)
    });
    let _ = std::fs::remove_dir_all(dir);
    let (_, peak) = rss_kib();
    println!(
        "service {:.4} {windows} {before} {loaded} {after} {peak}",
        cpu * 1e3 / windows as f64
    );
}

fn parent() {
    let exe = std::env::current_exe().expect("own path");
    let mut rows: Vec<(String, Vec<Vec<f64>>)> = Vec::new();
    for (mode, _, _) in SETTINGS {
        let mut runs = Vec::new();
        for _ in 0..CHILDREN {
            let out = Command::new(&exe)
                .args(["child", mode])
                .output()
                .expect("child runs");
            let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert!(
                out.status.success(),
                "child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let figures: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            runs.push(figures);
        }
        rows.push((mode.to_string(), runs));
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {threads} CPUs, {cpu}; load average at the end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{CHILDREN} processes per setting, each {REPEATS} × {RUNS} windows after {WARM_UP} warm-up; medians\n"
    );
    println!(
        "| session memory | ms/window (median) | p10–p90 ms | CPU per camera | load ms | RSS before load | RSS loaded | RSS running | peak RSS |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let hop_ms = HOP_SAMPLES as f64 / 16.0;
    for (mode, runs) in &rows {
        let col = |i: usize| median(runs.iter().map(|r| r[i]).collect());
        let mib = |i: usize| col(i) / 1024.0;
        let name = SETTINGS
            .iter()
            .find(|(n, _, _)| n == mode)
            .map_or("?", |s| s.1);
        println!(
            "| {name} | {:.2} | {:.2}–{:.2} | {:.2} % | {:.0} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            col(0),
            col(1),
            col(2),
            col(0) / hop_ms * 100.0,
            col(3),
            mib(4),
            mib(5),
            mib(6),
            mib(7)
        );
    }
    println!(
        "\nper-window overhead besides inference (ring buffer, copy, level, detector): {:.1} µs",
        overhead_us()
    );

    let mut service_runs = Vec::new();
    for _ in 0..CHILDREN {
        let out = Command::new(&exe)
            .arg("service")
            .output()
            .expect("child runs");
        assert!(
            out.status.success(),
            "service run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        service_runs.push(
            line.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse::<f64>().ok())
                .collect::<Vec<_>>(),
        );
    }
    let col = |i: usize| median(service_runs.iter().map(|r| r[i]).collect());
    println!(
        "\nservice, one camera, {:.0} windows (10 min of audio, fed as fast as it takes them): \
         {:.2} CPU-ms per window = {:.2} % of a core per camera in real time; RSS {:.1} MiB \
         before start, {:.1} MiB loaded, {:.1} MiB after, peak {:.1} MiB",
        col(1),
        col(0),
        col(0) / hop_ms * 100.0,
        col(2) / 1024.0,
        col(3) / 1024.0,
        col(4) / 1024.0,
        col(5) / 1024.0
    );
}
