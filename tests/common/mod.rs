//! Shared test helpers: run the real `vigil` binary with a config file, read what it logs, stop
//! it the way the Supervisor does.
#![allow(dead_code)]

pub mod chromium;
pub mod cry;
pub mod fake_camera;
pub mod fake_supervisor;
pub mod fixtures;
pub mod home_assistant;
pub mod ingress;
pub mod mosquitto;
pub mod mqtt_probe;
pub mod mqtt_run;
pub mod netns;
pub mod picture;
pub mod rtsp_client;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Makes a child process die with the test that started it: a test that panics or is killed
/// must not leave a camera, broker or browser running (they would skew every later test and
/// benchmark). The signal is tied to the spawning thread, which for a test is the test itself.
pub fn die_with_test(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// The `vigil` binary cargo built for these tests.
pub fn vigil_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
}

/// A TCP port that is free on loopback right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "vigil-test-{label}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options with every port free, for a `vigil run` that does not collide with other tests.
pub fn options_with_free_ports(extra: &str) -> String {
    format!(
        "rtsp_port: {}\nweb_port: {}\napi_port: {}\n{extra}",
        free_port(),
        free_port(),
        free_port()
    )
}

/// A running `vigil run`, with everything it writes to stdout and stderr collected.
pub struct Vigil {
    child: Child,
    output: Arc<Mutex<String>>,
    pub data_dir: TempDir,
}

impl Vigil {
    /// Starts `vigil run --config <options>` with a fresh data dir.
    pub fn start(options: &str) -> Self {
        Self::start_with_env(options, &[])
    }

    pub fn start_with_env(options: &str, env: &[(&str, &str)]) -> Self {
        Self::start_in(TempDir::new("data"), options, env)
    }

    /// Stops this run (SIGTERM) and starts another with `options` on the same data dir, as
    /// the Supervisor restarts the add-on after an options change.
    pub fn restart_with(&mut self, options: &str, env: &[(&str, &str)]) {
        let (status, _) = self.terminate();
        assert!(
            status.success(),
            "vigil failed to stop: {status}
{}",
            self.output()
        );
        let data_dir = std::mem::replace(&mut self.data_dir, TempDir::new("data-moved"));
        *self = Self::start_in(data_dir, options, env);
    }

    fn start_in(data_dir: TempDir, options: &str, env: &[(&str, &str)]) -> Self {
        let config = data_dir.write("options.yaml", options);
        let mut command = Command::new(vigil_bin());
        command
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(data_dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = die_with_test(&mut command)
            .spawn()
            .expect("cannot start vigil");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Self {
            child,
            output,
            data_dir,
        }
    }

    /// Everything logged so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "vigil exited ({status}) before logging {needle:?}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "vigil did not log {needle:?} within {timeout:?}:\n{}",
            self.output()
        );
    }

    /// Sends SIGTERM, as the Supervisor does, and returns the exit status and how long it took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        signal(self.child.id(), "TERM");
        let status = self.wait(Duration::from_secs(10));
        (status, started.elapsed())
    }

    /// Waits for the process to exit; kills it and panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("vigil did not exit within {timeout:?}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("VIGIL_TEST_LOG").is_some() {
            eprintln!("--- vigil log ---\n{}", self.output());
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends a signal by name (`TERM`, `INT`, `STOP`, `CONT`, `KILL`) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("cannot run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Runs `vigil check-config --config <file with text>` and returns (exit code, stdout, stderr).
pub fn check_config(name: &str, text: &str) -> (i32, String, String) {
    let dir = TempDir::new("check");
    let path = dir.write(name, text);
    let out = Command::new(vigil_bin())
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .env_remove("VIGIL_CONFIG")
        .output()
        .expect("cannot run vigil check-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The three ports of one `vigil run`, all free.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub rtsp: u16,
    pub web: u16,
    pub api: u16,
}

impl Ports {
    pub fn free() -> Self {
        Self {
            rtsp: free_port(),
            web: free_port(),
            api: free_port(),
        }
    }

    /// The ports as options, followed by `extra`.
    pub fn options(&self, extra: &str) -> String {
        format!(
            "rtsp_port: {}\nweb_port: {}\napi_port: {}\n{extra}",
            self.rtsp, self.web, self.api
        )
    }

    /// The restream URL of `camera`.
    pub fn restream(&self, camera: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{camera}", self.rtsp)
    }
}

/// `cameras:` options for (name, url) pairs.
pub fn cameras_yaml(cameras: &[(&str, &str)]) -> String {
    let mut yaml = String::from("cameras:\n");
    for (name, url) in cameras {
        yaml.push_str(&format!("  - name: {name}\n    url: {url}\n"));
    }
    yaml
}

/// A minimal HTTP/1.1 GET on loopback: (status code, body); status 0 when nothing listens.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, "connection refused".into());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let out = String::from_utf8_lossy(&raw).into_owned();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let Some((head, body)) = out.split_once("\r\n\r\n") else {
        return (status, String::new());
    };
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, body.to_string());
    }
    let mut whole = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || tail.len() < size {
            break;
        }
        whole.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    (status, whole)
}

/// Waits until the panel answers (Vigil has started its servers).
pub fn wait_for_panel(web_port: u16) {
    wait_until("the panel answering", Duration::from_secs(20), || {
        http_get(web_port, "/api/health").0 == 200
    });
}

/// `GET /api/streams` on the panel port, parsed.
pub fn streams(web_port: u16) -> serde_json::Value {
    let (status, body) = http_get(web_port, "/api/streams");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The producer of `camera` in `/api/streams`.
pub fn producer(web_port: u16, camera: &str) -> serde_json::Value {
    streams(web_port)[camera]["producers"][0].clone()
}

/// Polls `done` every 20 ms; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Width and height from a JPEG's start-of-frame marker.
pub fn jpeg_size(jpeg: &[u8]) -> Option<(u16, u16)> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) || !jpeg.ends_with(&[0xFF, 0xD9]) {
        return None;
    }
    let mut i = 2;
    while i + 9 < jpeg.len() {
        if jpeg[i] != 0xFF {
            return None;
        }
        let marker = jpeg[i + 1];
        let length = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
        if matches!(marker, 0xC0..=0xC3) {
            let height = u16::from_be_bytes([jpeg[i + 5], jpeg[i + 6]]);
            let width = u16::from_be_bytes([jpeg[i + 7], jpeg[i + 8]]);
            return Some((width, height));
        }
        i += 2 + length;
    }
    None
}
