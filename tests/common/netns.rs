//! Runs a test inside a private network namespace, so that WebRTC (which gathers candidates on
//! every interface) and the browser never reach a real network.
//!
//! The namespace has `lo` and one veth pair whose both ends stay inside it, with a default
//! route onto it: Chromium offers ICE candidates only on a non-loopback interface with a
//! default route, and there is nothing behind that route — no packet can leave the namespace.
//! Needs root (or user namespaces), as CI has.

use std::process::Command;

/// Set in the re-executed test, inside the namespace.
const INSIDE: &str = "VIGIL_TEST_NETNS";

const SETUP: &str = "set -e
ip link set lo up
ip link add vigil0 type veth peer name vigil1
ip addr add 10.99.0.1/24 dev vigil0
ip link set vigil1 up
ip link set vigil0 up
ip route add default via 10.99.0.2 dev vigil0
exec \"$@\"";

/// True when this process runs inside the namespace.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// Runs this executable again with `args`, inside a new namespace.
pub fn rerun_inside(args: &[&str]) -> Command {
    let exe = std::env::current_exe().expect("no executable");
    let mut command = Command::new("unshare");
    command
        .args(["--net", "sh", "-c", SETUP, "sh"])
        .arg(exe)
        .args(args)
        .env(INSIDE, "1");
    command
}

/// For a program's `main` (a benchmark): returns inside the namespace; outside, runs the
/// program again inside one with the same arguments and exits with its status.
pub fn enter_main() {
    if inside() {
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let status = rerun_inside(&args)
        .status()
        .expect("cannot run unshare (needs root)");
    std::process::exit(status.code().unwrap_or(1));
}

/// True inside the namespace: run the test's body. Outside, re-runs this test (`name`, its
/// full path in the test binary) inside a new namespace, fails if it failed there, and returns
/// false.
pub fn enter(name: &str) -> bool {
    if inside() {
        return true;
    }
    let output = rerun_inside(&[name, "--exact", "--nocapture", "--test-threads=1"])
        .output()
        .expect("cannot run unshare (util-linux)");
    assert_rerun_passed(name, &output, "its network namespace; unshare needs root");
    false
}

/// Prints what test `name`, run again by itself in `place` (a namespace the test made), said,
/// and fails unless it passed there.
pub fn assert_rerun_passed(name: &str, output: &std::process::Output, place: &str) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    print!("{text}");
    assert!(
        output.status.success() && text.contains("1 passed"),
        "{name} failed inside {place} ({}):\n{text}",
        output.status
    );
}
