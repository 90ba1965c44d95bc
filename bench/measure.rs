//! What the benchmarks read off running processes, from `/proc`: CPU time (a process's, each
//! thread's by name, a process tree's), memory, the machine's load; and the RTSP players they
//! run in a process of their own ([`spawn_players`]), so that no player's CPU is counted as
//! Vigil's. A benchmark including it also includes `tests/common` as `common`.
#![allow(dead_code)] // each benchmark uses its own part

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gst::prelude::*;

/// The first argument that makes a benchmark's binary a players' process ([`spawn_players`]).
const PLAYERS: &str = "players";

/// Clock ticks per second (`/proc`'s unit of CPU time).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `stat` file's fields after the command name (which may hold spaces): field 3 first.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect()
}

/// User + system clock ticks of a `stat` file (its own, not its children's).
fn stat_ticks(stat: &str) -> u64 {
    let fields = stat_fields(stat);
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    field(11).unwrap_or(0) + field(12).unwrap_or(0)
}

/// User + system CPU time of a process so far (0 once it is gone).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    Duration::from_secs_f64(stat_ticks(&stat) as f64 / clock_ticks())
}

/// CPU time of a process and every process below it now (processes that ended are not in it).
pub fn tree_cpu_time(root: u32) -> Duration {
    let mut parents = HashMap::new();
    let mut ticks = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(parent) = stat_fields(&stat)
            .get(1)
            .and_then(|p| p.parse::<u32>().ok())
        {
            parents.insert(pid, parent);
        }
        ticks.insert(pid, stat_ticks(&stat));
    }
    let below_root = |mut pid: u32| loop {
        if pid == root {
            return true;
        }
        match parents.get(&pid) {
            Some(&parent) if parent != 0 && parent != pid => pid = parent,
            _ => return false,
        }
    };
    let total: u64 = ticks
        .iter()
        .filter(|(pid, _)| below_root(**pid))
        .map(|(_, t)| t)
        .sum();
    Duration::from_secs_f64(total as f64 / clock_ticks())
}

/// CPU clock ticks of each thread of `pid` now, added up by thread name without its trailing
/// digits (GStreamer and tokio number their threads). Threads that ended are not in it.
pub fn thread_ticks(pid: u32) -> HashMap<String, u64> {
    let mut by_name = HashMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
    for task in tasks.into_iter().flatten().flatten() {
        let path = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue;
        };
        let name = comm
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_string();
        *by_name.entry(name).or_insert(0) += stat_ticks(&stat);
    }
    by_name
}

/// CPU-seconds per minute of each thread name between two [`thread_ticks`] readings
/// `minutes` apart (names that used nothing left out).
pub fn thread_rates(
    before: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
    minutes: f64,
) -> HashMap<String, f64> {
    let ticks = clock_ticks();
    after
        .iter()
        .map(|(name, t)| {
            let used = t.saturating_sub(*before.get(name).unwrap_or(&0));
            (name.clone(), used as f64 / ticks / minutes)
        })
        .filter(|(_, rate)| *rate > 0.0)
        .collect()
}

/// A `kB` line of `/proc/PID/status` (`VmRSS`: resident now, `VmHWM`: the most it has been).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Prints the load and the busiest processes, so a reader knows what else ran.
pub fn environment(when: &str) {
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    println!(
        "machine {when}: `{}`, {} cores",
        run("uptime", &[]),
        run("nproc", &[])
    );
    println!(
        "```\n{}\n```\n",
        run("sh", &["-c", "ps -eo pcpu,rss,comm --sort=-pcpu | head -6"])
    );
}

/// Starts this benchmark's binary again as a players' process: one RTSP player per URL in
/// `urls` (a URL twice is two players), over TCP, depayloading and parsing the video, no
/// decoding, until killed (or the benchmark ends). The benchmark's `main` must call
/// [`play_if_asked`] first.
pub fn spawn_players(urls: &[String]) -> Child {
    crate::common::die_with_test(&mut Command::new(
        std::env::current_exe().expect("own path"),
    ))
    .arg(PLAYERS)
    .args(urls)
    .stdout(Stdio::null())
    .spawn()
    .expect("cannot start the players' process")
}

/// In a benchmark's `main`, with its arguments: when this process is a players' process
/// ([`spawn_players`]), plays until killed and never returns.
pub fn play_if_asked(args: &[String]) {
    let Some((PLAYERS, urls)) = args.split_first().map(|(a, rest)| (a.as_str(), rest)) else {
        return;
    };
    gst::init().expect("GStreamer");
    let _pipelines: Vec<gst::Element> = urls
        .iter()
        .map(|url| {
            let pipeline = gst::parse::launch(&format!(
                "rtspsrc location={url} protocols=tcp latency=200 name=s \
                 s. ! application/x-rtp,media=video ! rtph264depay ! h264parse ! fakesink \
                 s. ! application/x-rtp,media=audio ! fakesink"
            ))
            .expect("player pipeline");
            pipeline.set_state(gst::State::Playing).expect("play");
            pipeline
        })
        .collect();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
