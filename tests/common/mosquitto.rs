//! A real mosquitto for tests: a free loopback port, a password file, no persistence (so a
//! restart forgets every retained message, as a broker without persistence does), and a
//! restart on the same port.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, free_port, signal};

/// The user every test broker knows.
pub const USER: &str = "vigil";

pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
    conf: PathBuf,
    passwd: PathBuf,
}

impl Mosquitto {
    /// Starts a broker that lets `USER` in with `password` only.
    pub fn start(password: &str) -> Self {
        Self::start_with(password, "")
    }

    /// The same, with `extra` appended to mosquitto.conf (another listener, say).
    pub fn start_with(password: &str, extra: &str) -> Self {
        let dir = TempDir::new("mosquitto");
        let passwd = dir.path().join("passwd");
        let port = free_port();
        let conf = dir.write(
            "mosquitto.conf",
            &format!(
                "# Stays root when started as root (the password file is ours); no effect otherwise.\n\
                 user root\n\
                 per_listener_settings false\n\
                 allow_anonymous false\n\
                 password_file {}\n\
                 persistence false\n\
                 log_dest file {}\n\
                 log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
                 listener {port} 127.0.0.1\n\
                 {extra}\n",
                passwd.display(),
                dir.path().join("mosquitto.log").display(),
            ),
        );
        let mut broker = Self {
            port,
            child: None,
            dir,
            conf,
            passwd,
        };
        broker.write_password(password);
        broker.run();
        broker
    }

    /// A file in the broker's directory (for TLS keys and certificates).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Changes `USER`'s password; the running broker reloads it (SIGHUP).
    pub fn set_password(&self, password: &str) {
        self.write_password(password);
        if let Some(child) = &self.child {
            signal(child.id(), "HUP");
        }
        // mosquitto reloads on its next loop turn; give it that turn.
        std::thread::sleep(Duration::from_millis(300));
    }

    fn write_password(&self, password: &str) {
        let status = Command::new("mosquitto_passwd")
            .arg("-b")
            .arg("-c")
            .arg(&self.passwd)
            .arg(USER)
            .arg(password)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("cannot run mosquitto_passwd (install mosquitto: scripts/install-deps.sh)");
        assert!(status.success(), "mosquitto_passwd failed");
    }

    fn run(&mut self) {
        let child = super::die_with_test(&mut Command::new("mosquitto"))
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start mosquitto (install it: scripts/install-deps.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("mosquitto exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {} within 10 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the broker again on the same port (after [`Mosquitto::stop`], or stops it first).
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// The broker's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
