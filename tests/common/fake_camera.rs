//! [`FakeCamera`]: the `vigil-fake-camera` binary as a test's camera: start on a free port, stop,
//! restart on the same port, freeze (SIGSTOP: the socket stays open, nothing is sent), thaw,
//! play a WAV clip into its audio track, change its picture size and turn its audio off and on
//! while streaming.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{free_port, signal};

/// The fake camera binary cargo built for these tests.
pub fn fake_camera_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vigil-fake-camera"))
}

/// A running fake camera.
pub struct FakeCamera {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    args: Vec<String>,
    pub port: u16,
    output: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl FakeCamera {
    /// Starts a camera with `args` (such as `["--audio", "aac"]`) on a free port.
    pub fn start(args: &[&str]) -> Self {
        Self::start_on(free_port(), args)
    }

    /// Starts a camera with `args` on `port`.
    pub fn start_on(port: u16, args: &[&str]) -> Self {
        let mut camera = Self {
            child: None,
            stdin: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            port,
            output: Arc::new((Mutex::new(Vec::new()), Condvar::new())),
        };
        camera.spawn();
        camera
    }

    fn spawn(&mut self) {
        let mut child = super::die_with_test(&mut Command::new(fake_camera_bin()))
            .args(&self.args)
            .arg("--port")
            .arg(self.port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start vigil-fake-camera");
        self.stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("no stdout");
        let output = self.output.clone();
        output.0.lock().unwrap().clear();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let (lines, changed) = &*output;
                lines.lock().unwrap().push(line);
                changed.notify_all();
            }
        });
        self.child = Some(child);
        self.wait_for_line("ready ", Duration::from_secs(20));
    }

    /// The camera's URL, without credentials.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/stream", self.port)
    }

    /// The camera's URL with `user:password@`.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("rtsp://{user}:{password}@127.0.0.1:{}/stream", self.port)
    }

    /// The URL the camera printed once it served (`--serve flv-http` and `--serve rtmp`: with
    /// the query string Reolink's have, without the login).
    pub fn ready_url(&self) -> String {
        let line = self.wait_for_line("ready ", Duration::from_secs(20));
        line.trim_start_matches("ready ").trim().to_string()
    }

    /// Kills the camera (as when it loses power): its connections drop at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stdin = None;
    }

    /// Starts it again on the same port, with the same options; returns when it serves.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts it again on the same port with other options (a reboot into another resolution,
    /// or a garbage server in its place); later restarts keep them.
    pub fn restart_with(&mut self, args: &[&str]) {
        self.stop();
        self.args = args.iter().map(|a| a.to_string()).collect();
        self.spawn();
    }

    /// Freezes the camera: connections stay open, nothing more is sent or answered.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the camera is stopped").id()
    }

    /// Plays `wav` into the audio track; returns when the clip starts (unix ms, as printed).
    pub fn play(&mut self, wav: &Path) -> u64 {
        let seen = self.output.0.lock().unwrap().len();
        let stdin = self.stdin.as_mut().expect("the camera is stopped");
        writeln!(stdin, "play {}", wav.display()).expect("cannot write to the camera");
        stdin.flush().unwrap();
        let line = self.wait_for_line_after(seen, "clip-start ", Duration::from_secs(20));
        line.split_whitespace()
            .nth(1)
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("bad clip-start line: {line}"))
    }

    /// Changes the picture size while streaming (new parameter sets and a keyframe follow).
    pub fn resize(&mut self, width: u32, height: u32) {
        self.command(&format!("resize {width}x{height}"), "resized ");
    }

    /// Sends a command line (such as `mute`) and waits for the line that confirms it.
    pub fn command(&mut self, line: &str, confirmed: &str) {
        let seen = self.output.0.lock().unwrap().len();
        let stdin = self.stdin.as_mut().expect("the camera is stopped");
        writeln!(stdin, "{line}").expect("cannot write to the camera");
        stdin.flush().unwrap();
        self.wait_for_line_after(seen, confirmed, Duration::from_secs(10));
    }

    /// Waits for a line starting with `prefix` (since the camera last started).
    pub fn wait_for_line(&self, prefix: &str, timeout: Duration) -> String {
        self.wait_for_line_after(0, prefix, timeout)
    }

    fn wait_for_line_after(&self, skip: usize, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (lines, changed) = &*self.output;
        let mut lines = lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().skip(skip).find(|l| l.starts_with(prefix)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the fake camera did not print {prefix:?}: {lines:?}"
            );
            lines = changed.wait_timeout(lines, left).unwrap().0;
        }
    }
}

impl Drop for FakeCamera {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen camera must be thawed to die cleanly.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
        }
        self.stop();
    }
}
