//! A stand-in for the Supervisor's ingress proxy (tests/support/ingress_proxy.py): the panel is
//! served under /api/hassio_ingress/<token>/, as Home Assistant serves it, and anything outside
//! that prefix is a 404.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "Yx9c2hX0abcdEFGH";

/// The ingress stand-in (tests/support/ingress_proxy.py), killed when dropped.
pub struct Ingress {
    child: Child,
    pub port: u16,
}

impl Ingress {
    pub fn start(web_port: u16) -> Self {
        let port = super::free_port();
        let python = super::home_assistant::venv().join("bin/python");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/ingress_proxy.py"
        );
        let child = super::die_with_test(&mut Command::new(python))
            .arg(script)
            .args(["--listen", &port.to_string(), "--token", TOKEN])
            .arg("--upstream")
            .arg(format!("http://127.0.0.1:{web_port}"))
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start the ingress proxy (needs Home Assistant's venv: install-deps)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the ingress proxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    pub fn panel_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/hassio_ingress/{TOKEN}/", self.port)
    }
}

impl Drop for Ingress {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
