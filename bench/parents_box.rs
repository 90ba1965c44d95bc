//! The parent's box, as one benchmark (BENCHMARKS.md, "The parent's box (headline)"): the real
//! release `vigil` with three cameras, each a 1080p main stream and a 640×360 sub stream (one
//! camera with AAC sound, two with G.711: A-law and µ-law), detection on, default options; on
//! each camera two RTSP players on the main stream, a WebRTC viewer and an MSE viewer (headless
//! Chromium, the live page) on the sub stream, as the panel's grid on a phone plays it.
//!
//!     cargo bench --bench parents_box                   (5 minutes with viewers; about 9 in all)
//!     cargo bench --bench parents_box -- --quick        (60 s with viewers)
//!     cargo bench --bench parents_box -- --webrtc-main  (WebRTC viewers on the main stream, as
//!                                                        the panel's full-screen view plays)
//!
//! The cameras cost little: the recordings are encoded once (cached under `target/tmp`) and
//! each stream is a `vigil-fake-camera --play` process serving its recording in a loop in real
//! time. Players, Chromium and cameras are processes of their own; what is measured is Vigil's
//! process: CPU time (utime + stime), RSS sampled every second and its peak, CPU by thread and
//! role, first with no viewer at all, then with the twelve. Prints Markdown. Runs itself again
//! inside a private network namespace (WebRTC gathers candidates on every interface); needs root.
//! `BENCH_VIGIL_OPTIONS` adds option lines (such as `clips: false`), as in `bench/rtsp.rs`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "measure.rs"]
mod measure;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::chromium::{Chromium, Page};
use common::fake_camera::FakeCamera;
use common::{Ports, Vigil, netns, producer, streams, wait_until};
use gst::prelude::*;
use measure::{cpu_time, status_kib, thread_rates, thread_ticks, tree_cpu_time};

/// Seconds of each recording, played in a loop.
const RECORDING_SECONDS: u32 = 20;

/// One of a camera's streams, as its recording is encoded.
struct StreamFormat {
    width: u32,
    height: u32,
    fps: u32,
    kbps: u32,
    /// Frames from one keyframe to the next.
    gop: u32,
}

/// The main stream: 1080p25 at 4 Mbit/s, a keyframe every 2 s (DESIGN.md's go2rtc camera).
const MAIN: StreamFormat = StreamFormat {
    width: 1920,
    height: 1080,
    fps: 25,
    kbps: 4000,
    gop: 50,
};

/// The sub stream, as a Tapo's: 640×360 at 15 fps, 512 kbit/s, a keyframe every 2 s.
const SUB: StreamFormat = StreamFormat {
    width: 640,
    height: 360,
    fps: 15,
    kbps: 512,
    gop: 30,
};

#[derive(Clone, Copy)]
enum Sound {
    Aac,
    Alaw,
    Mulaw,
}

impl Sound {
    fn label(self) -> &'static str {
        match self {
            Sound::Aac => "AAC 16 kHz",
            Sound::Alaw => "G.711 A-law 8 kHz",
            Sound::Mulaw => "G.711 µ-law 8 kHz",
        }
    }

    fn file_suffix(self) -> &'static str {
        match self {
            Sound::Aac => "aac",
            Sound::Alaw => "alaw",
            Sound::Mulaw => "mulaw",
        }
    }

    /// Sample rate and the encoder chain after raw mono audio at that rate.
    fn encoding(self) -> (u32, &'static str) {
        match self {
            Sound::Aac => (16000, "voaacenc bitrate=32000 ! aacparse"),
            Sound::Alaw => (8000, "alawenc"),
            Sound::Mulaw => (8000, "mulawenc"),
        }
    }
}

/// The three cameras; each sends the same sound on both streams, as Tapo cameras do.
const CAMERAS: [(&str, Sound); 3] = [
    ("nursery", Sound::Aac),
    ("bedroom", Sound::Alaw),
    ("playroom", Sound::Mulaw),
];

struct Options {
    /// With viewers.
    phase: Duration,
    /// With no viewer.
    idle_phase: Duration,
    /// Before each phase, once its viewers are in.
    settle: Duration,
    webrtc_on_main: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    measure::play_if_asked(&args);
    netns::enter_main();
    let quick = args.iter().any(|a| a == "--quick");
    let options = Options {
        phase: Duration::from_secs(if quick { 60 } else { 300 }),
        idle_phase: Duration::from_secs(if quick { 30 } else { 120 }),
        settle: Duration::from_secs(if quick { 10 } else { 20 }),
        webrtc_on_main: args.iter().any(|a| a == "--webrtc-main"),
    };
    gst::init().unwrap();
    println!("# The parent's box\n");
    measure::environment("at the start");

    let mut cameras = Vec::new();
    let mut yaml = String::from("cameras:\n");
    for (name, sound) in CAMERAS {
        let main = FakeCamera::start(&["--play", path_str(&recording(&MAIN, sound))]);
        let sub = FakeCamera::start(&["--play", path_str(&recording(&SUB, sound))]);
        yaml.push_str(&format!(
            "  - name: {name}\n    url: {}\n    sub_url: {}\n",
            main.url(),
            sub.url()
        ));
        cameras.extend([main, sub]);
    }
    let extra_options = std::env::var("BENCH_VIGIL_OPTIONS").unwrap_or_default();
    let ports = Ports::free();
    let mut vigil = Vigil::start(&ports.options(&format!("{extra_options}\n{yaml}")));
    common::wait_for_panel(ports.web);
    for (name, _) in CAMERAS {
        for stream in [name.to_string(), format!("{name}_sub")] {
            wait_until(&format!("{stream} online"), Duration::from_secs(60), || {
                producer(ports.web, &stream)["state"] == "online"
            });
        }
    }
    describe(&options, &extra_options);
    let watched = Watched {
        vigil: vigil.pid(),
        cameras: cameras.iter().map(FakeCamera::pid).collect(),
        players: None,
        browser: None,
    };

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        tokio::time::sleep(options.settle).await;
        let idle = measure_phase(options.idle_phase, &watched).await;

        let main_urls: Vec<String> = CAMERAS
            .iter()
            .flat_map(|(name, _)| [ports.restream(name), ports.restream(name)])
            .collect();
        let mut players: Child = measure::spawn_players(&main_urls);
        let mut chromium = Chromium::launch().await;
        let mut viewers = Vec::new();
        for (name, _) in CAMERAS {
            let sub = format!("{name}_sub");
            let webrtc_src = if options.webrtc_on_main { name } else { &sub };
            for (mode, src) in [("webrtc", webrtc_src), ("mse", sub.as_str())] {
                let url = format!("http://127.0.0.1:{}/live?src={src}&mode={mode}", ports.web);
                let (page, first_ms) = chromium.open_playing(&url).await;
                viewers.push(Viewer {
                    label: format!("{mode} on {src}"),
                    page,
                    first_ms,
                    frames_before: 0,
                });
            }
        }
        wait_until("every viewer counted", Duration::from_secs(60), || {
            consumer_counts(ports.web) == expected_consumers(options.webrtc_on_main)
        });
        tokio::time::sleep(options.settle).await;

        for viewer in &mut viewers {
            viewer.frames_before = frames(&mut chromium, &viewer.page).await;
        }
        let busy = measure_phase(
            options.phase,
            &Watched {
                players: Some(players.id()),
                browser: Some(chromium.pid()),
                ..watched.clone()
            },
        )
        .await;
        let mut played = Vec::new();
        for viewer in &viewers {
            let frames = frames(&mut chromium, &viewer.page)
                .await
                .saturating_sub(viewer.frames_before);
            played.push((viewer, frames));
        }
        let counts_after = consumer_counts(ports.web);

        report(&idle, &busy);
        report_viewers(&played, &busy, ports.web);
        if counts_after != expected_consumers(options.webrtc_on_main) {
            println!("**Viewers lost during the phase:** {counts_after:?}\n");
        }
        measure::environment("at the end");
        let _ = players.kill();
        let _ = players.wait();
        drop(chromium);
    });
    vigil.terminate();
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn describe(options: &Options, extra_options: &str) {
    let stream = |s: &StreamFormat| {
        format!(
            "{}×{} {} fps {} kbit/s H.264, a keyframe every {} s",
            s.width,
            s.height,
            s.fps,
            s.kbps,
            s.gop / s.fps
        )
    };
    println!(
        "- main streams: {}; sub streams: {}",
        stream(&MAIN),
        stream(&SUB)
    );
    let sounds: Vec<String> = CAMERAS
        .iter()
        .map(|(name, sound)| format!("{name} {}", sound.label()))
        .collect();
    println!(
        "- sound (pink noise, on both streams): {}",
        sounds.join(", ")
    );
    println!(
        "- per camera: 2 RTSP players on the main stream (one process, TCP, no decoding), \
         1 WebRTC viewer on the {} stream, 1 MSE viewer on the sub stream (headless Chromium)",
        if options.webrtc_on_main {
            "main"
        } else {
            "sub"
        }
    );
    let vigil_options = if extra_options.trim().is_empty() {
        "default options (detection on, `unify_audio` on, clips on)".to_string()
    } else {
        format!("default options but `{}`", extra_options.trim())
    };
    println!(
        "- Vigil: {vigil_options}; phases: {} s with no viewer, {} s with the viewers, each \
         after {} s to settle\n",
        options.idle_phase.as_secs(),
        options.phase.as_secs(),
        options.settle.as_secs()
    );
}

/// The recording of one stream with `sound`, encoded once and kept under `target/tmp`.
fn recording(format: &StreamFormat, sound: Sound) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("parents-box");
    std::fs::create_dir_all(&dir).unwrap();
    let stem = format!(
        "{}x{}-{}fps-{}k-gop{}-{RECORDING_SECONDS}s",
        format.width, format.height, format.fps, format.kbps, format.gop
    );
    let video = dir.join(format!("{stem}.mkv"));
    if !video.exists() {
        encode(
            &video,
            &format!(
                "videotestsrc num-buffers={} pattern=snow \
                 ! video/x-raw,format=I420,width={},height={},framerate={}/1 \
                 ! x264enc bitrate={} vbv-buf-capacity=1000 speed-preset=ultrafast \
                   tune=zerolatency bframes=0 key-int-max={} \
                 ! h264parse ! matroskamux",
                RECORDING_SECONDS * format.fps,
                format.width,
                format.height,
                format.fps,
                format.kbps,
                format.gop
            ),
        );
    }
    let with_sound = dir.join(format!("{stem}-{}.mkv", sound.file_suffix()));
    if !with_sound.exists() {
        let (rate, encoder) = sound.encoding();
        encode(
            &with_sound,
            &format!(
                "filesrc location={} ! matroskademux ! h264parse ! queue ! mux. \
                 audiotestsrc num-buffers={} samplesperbuffer={} wave=pink-noise volume=0.05 \
                 ! audio/x-raw,rate={rate},channels=1 ! {encoder} ! queue ! mux. \
                 matroskamux name=mux",
                video.display(),
                RECORDING_SECONDS * 50,
                rate / 50,
            ),
        );
    }
    with_sound
}

/// Runs `description` (ending in a muxer) into `path` as fast as it goes; a run cut short
/// leaves no file behind to be taken for a whole one.
fn encode(path: &Path, description: &str) {
    let partial = path.with_extension("partial");
    let started = Instant::now();
    let pipeline = gst::parse::launch(&format!(
        "{description} ! filesink location={}",
        partial.display()
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    for message in bus.iter_timed(gst::ClockTime::NONE) {
        match message.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                panic!("encoding {} failed: {}", path.display(), e.error())
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    std::fs::rename(&partial, path).unwrap();
    let size = std::fs::metadata(path).unwrap().len();
    println!(
        "recorded {} ({:.2} Mbit/s) in {:.0?}",
        path.file_name().unwrap().to_string_lossy(),
        size as f64 * 8.0 / 1e6 / f64::from(RECORDING_SECONDS),
        started.elapsed()
    );
}

/// The processes whose CPU a phase reads.
#[derive(Clone)]
struct Watched {
    vigil: u32,
    cameras: Vec<u32>,
    players: Option<u32>,
    browser: Option<u32>,
}

/// CPU time of everything watched, at one moment.
struct Reading {
    at: Instant,
    vigil: Duration,
    threads: HashMap<String, u64>,
    cameras: Duration,
    players: Option<Duration>,
    browser: Option<Duration>,
    load: String,
}

impl Reading {
    fn now(watched: &Watched) -> Reading {
        Reading {
            at: Instant::now(),
            vigil: cpu_time(watched.vigil),
            threads: thread_ticks(watched.vigil),
            cameras: watched.cameras.iter().map(|&pid| cpu_time(pid)).sum(),
            players: watched.players.map(cpu_time),
            browser: watched.browser.map(tree_cpu_time),
            load: measure::load_average(),
        }
    }
}

/// One phase's figures: CPU in CPU-seconds per minute of wall time.
struct Phase {
    seconds: f64,
    vigil: f64,
    threads: HashMap<String, f64>,
    rss_kib: Vec<u64>,
    peak_kib: u64,
    thread_count: usize,
    cameras: f64,
    players: Option<f64>,
    browser: Option<f64>,
    load: (String, String),
}

async fn measure_phase(length: Duration, watched: &Watched) -> Phase {
    let before = Reading::now(watched);
    let mut rss_kib = Vec::new();
    while before.at.elapsed() < length {
        rss_kib.push(status_kib(watched.vigil, "VmRSS"));
        let left = length.saturating_sub(before.at.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
    let after = Reading::now(watched);
    let minutes = (after.at - before.at).as_secs_f64() / 60.0;
    let rate = |from: Duration, to: Duration| to.saturating_sub(from).as_secs_f64() / minutes;
    let thread_count = std::fs::read_dir(format!("/proc/{}/task", watched.vigil))
        .map(|d| d.count())
        .unwrap_or(0);
    Phase {
        seconds: minutes * 60.0,
        vigil: rate(before.vigil, after.vigil),
        threads: thread_rates(&before.threads, &after.threads, minutes),
        rss_kib,
        peak_kib: status_kib(watched.vigil, "VmHWM"),
        thread_count,
        cameras: rate(before.cameras, after.cameras),
        players: before.players.zip(after.players).map(|(b, a)| rate(b, a)),
        browser: before.browser.zip(after.browser).map(|(b, a)| rate(b, a)),
        load: (before.load, after.load),
    }
}

const INGEST: &str =
    "camera ingest: rtspsrc, jitter buffer, depayload, parse, hub, detector's audio";
const DETECTION: &str = "detection: YAMNet inference";
const RESTREAM: &str = "RTSP restream: server and a media per client";
const WEBRTC: &str = "WebRTC viewers: webrtcbin, ICE, DTLS/SRTP";
const OPUS: &str = "WebRTC's Opus transcoder (one per stream watched)";
const MSE: &str = "MSE viewers: fragmented MP4";
const TOKIO: &str = "tokio: viewers' feeds, web, detection windows, clips' pre-roll";

/// What a thread of Vigil's works for, by its name. GStreamer names a streaming thread after
/// the element and pad whose task it runs, and Vigil names a viewer's elements after its
/// stream (`nursery_sub-webrtc0-video`); the kernel keeps 15 characters of a name, so after a
/// long stream name only the start of the rest is left (`nursery_sub-web`).
fn role(thread: &str) -> &'static str {
    let after_stream = CAMERAS
        .iter()
        .flat_map(|(name, _)| [name.to_string(), format!("{name}_sub")])
        .find_map(|stream| Some(thread.strip_prefix(&stream)?.strip_prefix('-')?.to_string()));
    if let Some(rest) = after_stream {
        let begins = |word: &str| {
            rest.starts_with(word) || (rest.len() >= 2 && word.starts_with(rest.as_str()))
        };
        return if begins("webrtc") {
            WEBRTC
        } else if begins("opus") {
            OPUS
        } else if begins("mp4") {
            MSE
        } else {
            "other"
        };
    }
    match thread {
        "vigil-yamnet" => DETECTION,
        "tokio-rt-worker" | "tokio-runtime-w" => TOKIO,
        "rtsp-restream" | "video-src:src" | "audio-src:src" => RESTREAM,
        "task" | "rtpjitterbuffer" => INGEST,
        name if name.starts_with("nice") || name.starts_with("dtls") => WEBRTC,
        _ => "other",
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn rss_summary(phase: &Phase) -> String {
    let mut samples: Vec<f64> = phase.rss_kib.iter().map(|&k| mib(k)).collect();
    let (min, max) = (
        samples.iter().copied().fold(f64::INFINITY, f64::min),
        samples.iter().copied().fold(0.0, f64::max),
    );
    let median = measure::median(&mut samples);
    format!("{median:.1} MiB ({min:.1}–{max:.1})")
}

fn or_dash(value: Option<f64>) -> String {
    value.map_or("—".into(), |v| format!("{v:.2}"))
}

fn report(idle: &Phase, busy: &Phase) {
    println!("## Vigil's process\n");
    println!("| | no viewer | 12 viewers |");
    println!("| --- | --- | --- |");
    println!(
        "| phase length | {:.0} s | {:.0} s |",
        idle.seconds, busy.seconds
    );
    println!(
        "| **Vigil CPU** (CPU-s/min) | **{:.2}** | **{:.2}** |",
        idle.vigil, busy.vigil
    );
    println!(
        "| Vigil CPU, % of one core | {:.1} % | {:.1} % |",
        idle.vigil / 60.0 * 100.0,
        busy.vigil / 60.0 * 100.0
    );
    println!(
        "| **Vigil RSS**, median (min–max), sampled every second | **{}** | **{}** |",
        rss_summary(idle),
        rss_summary(busy)
    );
    println!(
        "| Vigil's peak RSS since its start (VmHWM) at the phase's end | {:.1} MiB | {:.1} MiB |",
        mib(idle.peak_kib),
        mib(busy.peak_kib)
    );
    println!(
        "| Vigil's threads at the phase's end | {} | {} |",
        idle.thread_count, busy.thread_count
    );
    println!(
        "| camera stand-ins (6 processes), CPU-s/min | {:.2} | {:.2} |",
        idle.cameras, busy.cameras
    );
    println!(
        "| RTSP players' process, CPU-s/min | {} | {} |",
        or_dash(idle.players),
        or_dash(busy.players)
    );
    println!(
        "| Chromium (all its processes), CPU-s/min | {} | {} |",
        or_dash(idle.browser),
        or_dash(busy.browser)
    );
    println!(
        "| load average at the start → the end | {} → {} | {} → {} |\n",
        idle.load.0, idle.load.1, busy.load.0, busy.load.1
    );

    println!(
        "## Vigil's CPU by role (CPU-s/min; threads that ended during a phase are not in it)\n"
    );
    let (idle_roles, busy_roles) = (by_role(idle), by_role(busy));
    let mut roles: Vec<&str> = idle_roles
        .keys()
        .chain(busy_roles.keys())
        .copied()
        .collect();
    roles.sort();
    roles.dedup();
    let busy_rate = |role: &str| busy_roles.get(role).map_or(0.0, |r| r.rate);
    roles.sort_by(|a, b| busy_rate(b).total_cmp(&busy_rate(a)));
    println!("| role | no viewer | 12 viewers | its busiest threads with viewers |");
    println!("| --- | --- | --- | --- |");
    for role in roles {
        let idle_rate = idle_roles.get(role).map_or(0.0, |r| r.rate);
        let threads = busy_roles
            .get(role)
            .map_or(String::new(), |r| busiest(&r.threads, 6));
        println!(
            "| {role} | {idle_rate:.2} | {:.2} | {threads} |",
            busy_rate(role)
        );
    }
    let sum = |phase: &Phase| phase.threads.values().sum::<f64>();
    println!(
        "| (threads counted / the process) | {:.2} / {:.2} | {:.2} / {:.2} | |\n",
        sum(idle),
        idle.vigil,
        sum(busy),
        busy.vigil
    );
    println!(
        "Every thread name with viewers (CPU-s/min, same-named threads added up): {}\n",
        busiest(&busy.threads, usize::MAX)
    );
}

/// A role's CPU-seconds per minute, and its threads' (by name).
#[derive(Default)]
struct RoleUse {
    rate: f64,
    threads: HashMap<String, f64>,
}

fn by_role(phase: &Phase) -> BTreeMap<&'static str, RoleUse> {
    let mut roles: BTreeMap<&str, RoleUse> = BTreeMap::new();
    for (name, rate) in &phase.threads {
        let role = roles.entry(role(name)).or_default();
        role.rate += rate;
        role.threads.insert(name.clone(), *rate);
    }
    roles
}

/// The `most` busiest thread names (at least 0.005 CPU-s/min), busiest first.
fn busiest(threads: &HashMap<String, f64>, most: usize) -> String {
    let mut threads: Vec<(&String, &f64)> = threads.iter().collect();
    threads.sort_by(|a, b| b.1.total_cmp(a.1));
    threads
        .iter()
        .filter(|(_, rate)| **rate >= 0.005)
        .take(most)
        .map(|(name, rate)| format!("`{name}` {rate:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Viewer {
    label: String,
    page: Page,
    first_ms: f64,
    frames_before: u64,
}

/// Pictures the page's video element has shown so far (WebRTC or MSE alike).
async fn frames(chromium: &mut Chromium, page: &Page) -> u64 {
    chromium
        .eval(
            page,
            "document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames",
        )
        .await
        .as_u64()
        .unwrap_or(0)
}

fn report_viewers(played: &[(&Viewer, u64)], busy: &Phase, web: u16) {
    println!("## The viewers\n");
    println!("| Chromium viewer | first picture | pictures shown during the phase | per second |");
    println!("| --- | --- | --- | --- |");
    for (viewer, frames) in played {
        println!(
            "| {} | {:.0} ms | {frames} | {:.1} |",
            viewer.label,
            viewer.first_ms,
            *frames as f64 / busy.seconds
        );
    }
    println!();
    println!("| stream | Vigil's consumers at the end (kind: frames sent, dropped) |");
    println!("| --- | --- |");
    let all = streams(web);
    for (name, _) in CAMERAS {
        for stream in [name.to_string(), format!("{name}_sub")] {
            let consumers: Vec<String> = all[&stream]["consumers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{}: {}, {}",
                        c["format_name"].as_str().unwrap_or("?"),
                        c["frames"],
                        c["dropped_frames"]
                    )
                })
                .collect();
            println!("| {stream} | {} |", consumers.join("; "));
        }
    }
    println!();
}

/// Vigil's consumers by stream and kind (`rtsp`, `webrtc`, `mse`), from `/api/streams`.
fn consumer_counts(web: u16) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let all = streams(web);
    for (name, _) in CAMERAS {
        for stream in [name.to_string(), format!("{name}_sub")] {
            for consumer in all[&stream]["consumers"].as_array().into_iter().flatten() {
                let kind = consumer["format_name"].as_str().unwrap_or("?");
                *counts.entry(format!("{stream} {kind}")).or_insert(0) += 1;
            }
        }
    }
    counts
}

fn expected_consumers(webrtc_on_main: bool) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (name, _) in CAMERAS {
        let sub = format!("{name}_sub");
        let webrtc = if webrtc_on_main { name } else { &sub };
        counts.insert(format!("{name} rtsp"), 2);
        *counts.entry(format!("{webrtc} webrtc")).or_insert(0) += 1;
        counts.insert(format!("{sub} mse"), 1);
    }
    counts
}
