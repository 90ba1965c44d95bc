//! What the soak measured: recovery times per fault, cry latencies, the process's memory and file
//! descriptors over time, and the bounds they are held to. Progress lines go to the test's output
//! and, when `VIGIL_SOAK_REPORT` names a file, to that file as they happen (a long run is
//! followed there; the test's own output only appears at its end).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The camera replaced by a server that answers garbage.
pub const GARBAGE: &str = "sent garbage";

/// The run's length and bounds, from the environment (the defaults are the CI run's).
#[derive(Debug, Clone)]
pub struct Plan {
    /// Rounds start until this much time has passed (`VIGIL_SOAK_SECS`).
    pub duration: Duration,
    /// A stream must be back at a connected client this soon after its camera
    /// (`VIGIL_SOAK_RECOVERY_MS`; loose by default, for a loaded machine).
    pub recovery_bound: Duration,
    /// Resident memory may grow this much from the end of the first round to the end
    /// (`VIGIL_SOAK_RSS_MIB`).
    pub rss_growth_mib: f64,
    /// Open file descriptors may grow this much over the same span.
    pub fd_growth: usize,
    pub report: Option<PathBuf>,
}

impl Plan {
    pub fn from_env() -> Self {
        let number = |name: &str, default: u64| -> u64 {
            match std::env::var(name) {
                Ok(text) => text
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={text:?}: expected a whole number")),
                Err(_) => default,
            }
        };
        let recovery_bound = Duration::from_millis(number("VIGIL_SOAK_RECOVERY_MS", 5000));
        Self {
            duration: Duration::from_secs(number("VIGIL_SOAK_SECS", 180)),
            recovery_bound,
            rss_growth_mib: number("VIGIL_SOAK_RSS_MIB", 64) as f64,
            fd_growth: 16,
            report: std::env::var_os("VIGIL_SOAK_REPORT").map(PathBuf::from),
        }
    }
}

/// One sample of the process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Duration,
    pub rss_kib: u64,
    pub fds: usize,
}

pub struct Record {
    plan: Plan,
    started: Instant,
    /// Recovery times by fault kind.
    pub recoveries: BTreeMap<&'static str, Vec<Duration>>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u32>,
    /// Crying ON after the clip started, for clips played while the other camera faulted.
    pub cry_latencies: Vec<Duration>,
    /// Samples at the end of each round (same viewers, cameras up): the growth figures.
    pub quiet: Vec<Sample>,
    /// The largest RSS and fd count seen at any sample.
    pub peak: Sample,
    /// Browsers that died under the soak (Chromium's own crashes, not Vigil's doing).
    pub browser_crashes: u32,
    /// Resident players that had no frame soon after their camera and connected again.
    pub reconnected_players: u32,
    /// Things that went wrong; the test fails at the end if any.
    pub failures: Vec<String>,
}

impl Record {
    pub fn new(plan: &Plan) -> Self {
        if let Some(path) = &plan.report {
            let _ = std::fs::write(path, "");
        }
        Self {
            plan: plan.clone(),
            started: Instant::now(),
            recoveries: BTreeMap::new(),
            faults: BTreeMap::new(),
            cry_latencies: Vec::new(),
            quiet: Vec::new(),
            peak: Sample {
                at: Duration::ZERO,
                rss_kib: 0,
                fds: 0,
            },
            reconnected_players: 0,
            browser_crashes: 0,
            failures: Vec::new(),
        }
    }

    /// A progress line, timestamped from the start of the run.
    pub fn log(&self, line: &str) {
        let line = format!("[{:7.1} s] {line}", self.started.elapsed().as_secs_f64());
        eprintln!("{line}");
        if let Some(path) = &self.plan.report
            && let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }

    pub fn fail(&mut self, what: String) {
        self.log(&format!("FAILURE: {what}"));
        self.failures.push(what);
    }

    pub fn fault(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_default() += 1;
    }

    /// A stream back `took` after its camera, held to the plan's bound.
    pub fn recovered(&mut self, kind: &'static str, camera: &str, took: Option<Duration>) {
        match took {
            Some(took) => {
                self.log(&format!(
                    "{camera}: back {} ms after {kind}",
                    took.as_millis()
                ));
                let bound = self.plan.recovery_bound;
                if took > bound {
                    self.fail(format!(
                        "{camera}: the stream came back {} ms after the camera ({kind}; bound {} ms)",
                        took.as_millis(),
                        bound.as_millis()
                    ));
                }
                self.recoveries.entry(kind).or_default().push(took);
            }
            None => self.fail(format!("{camera}: the stream never came back after {kind}")),
        }
    }

    /// What the open file descriptors of `pid` are, by kind (`socket` ×40, `pipe` ×12, …).
    pub fn fd_kinds(pid: u32) -> String {
        // Socket inodes by protocol, from the process's own view of the network tables.
        let mut protocols: BTreeMap<String, &str> = BTreeMap::new();
        for protocol in ["tcp", "tcp6", "udp", "udp6", "unix", "netlink"] {
            let table = std::fs::read_to_string(format!("/proc/{pid}/net/{protocol}"));
            let inode_column = if protocol == "unix" { 6 } else { 9 };
            for line in table.unwrap_or_default().lines().skip(1) {
                if let Some(inode) = line.split_whitespace().nth(inode_column) {
                    protocols.insert(format!("socket:[{inode}]"), protocol);
                }
            }
        }
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        let entries = std::fs::read_dir(format!("/proc/{pid}/fd"));
        for entry in entries.into_iter().flatten().flatten() {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            let target = target.to_string_lossy();
            if let Some(protocol) = protocols.get(target.as_ref()) {
                *kinds.entry(format!("socket/{protocol}")).or_default() += 1;
                continue;
            }
            let kind = match target.split_once(':') {
                Some(("anon_inode", what)) => what.to_string(),
                Some((kind, _)) => kind.to_string(),
                None => target.to_string(),
            };
            *kinds.entry(kind).or_default() += 1;
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        kinds.join(", ")
    }

    pub fn sample(&mut self, pid: u32) -> Sample {
        let sample = Sample {
            at: self.started.elapsed(),
            rss_kib: super::common::rss_kib(pid),
            fds: super::common::fd_count(pid),
        };
        self.peak.rss_kib = self.peak.rss_kib.max(sample.rss_kib);
        self.peak.fds = self.peak.fds.max(sample.fds);
        sample
    }

    /// RSS growth in MiB per hour: the least-squares slope over the quiet samples after the
    /// first (the first round warms pools, caches and the allocator's arenas).
    pub fn rss_mib_per_hour(&self) -> f64 {
        let points: Vec<(f64, f64)> = self
            .quiet
            .iter()
            .skip(1)
            .map(|s| (s.at.as_secs_f64() / 3600.0, s.rss_kib as f64 / 1024.0))
            .collect();
        if points.len() < 2 {
            return 0.0;
        }
        let n = points.len() as f64;
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
        let covariance: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
        let variance: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
        if variance == 0.0 {
            0.0
        } else {
            covariance / variance
        }
    }

    /// The quiet sample growth is measured from: the second round's, once there are three
    /// (the first round warms pools, caches and the allocator's arenas).
    fn baseline(&self) -> Option<Sample> {
        let index = if self.quiet.len() >= 3 { 1 } else { 0 };
        self.quiet.get(index).copied()
    }

    /// Holds the growth from the baseline to the last quiet sample to the plan's bounds.
    pub fn check_growth(&mut self) {
        let (Some(first), Some(last)) = (self.baseline(), self.quiet.last().copied()) else {
            return;
        };
        let grown_mib = (last.rss_kib as f64 - first.rss_kib as f64) / 1024.0;
        if grown_mib > self.plan.rss_growth_mib {
            self.fail(format!(
                "resident memory grew {grown_mib:.1} MiB ({} -> {} KiB; bound {} MiB)",
                first.rss_kib, last.rss_kib, self.plan.rss_growth_mib
            ));
        }
        if last.fds > first.fds + self.plan.fd_growth {
            self.fail(format!(
                "file descriptors grew from {} to {} (bound +{})",
                first.fds, last.fds, self.plan.fd_growth
            ));
        }
    }

    /// The figures for BENCHMARKS.md.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        out.push_str(&format!(
            "ran {:.1} min; faults: {}\n",
            self.started.elapsed().as_secs_f64() / 60.0,
            faults.join(", ")
        ));
        for (kind, times) in &self.recoveries {
            out.push_str(&format!("recovery after {kind}: {}\n", spread(times)));
        }
        out.push_str(&format!(
            "crying ON after the clip started (other camera faulting): {}\n",
            spread(&self.cry_latencies)
        ));
        out.push_str(&format!(
            "resident players that connected again after a fault: {}; browsers that died: {}\n",
            self.reconnected_players, self.browser_crashes
        ));
        if let (Some(first), Some(last)) = (self.baseline(), self.quiet.last()) {
            out.push_str(&format!(
                "RSS {:.1} -> {:.1} MiB (peak {:.1}), {:.2} MiB/hour; fds {} -> {} (peak {})\n",
                first.rss_kib as f64 / 1024.0,
                last.rss_kib as f64 / 1024.0,
                self.peak.rss_kib as f64 / 1024.0,
                self.rss_mib_per_hour(),
                first.fds,
                last.fds,
                self.peak.fds
            ));
        }
        out
    }
}

/// Median, spread and count of `times`, in ms.
fn spread(times: &[Duration]) -> String {
    if times.is_empty() {
        return "none".into();
    }
    let mut ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
    ms.sort_unstable();
    format!(
        "median {} ms, min {} ms, max {} ms (n = {})",
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1],
        ms.len()
    )
}
