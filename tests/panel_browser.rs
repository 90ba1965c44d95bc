//! The panel in a real headless Chromium, through a stand-in for the Supervisor's ingress proxy
//! (the page lives under /api/hassio_ingress/<token>/), inside a private network namespace:
//! it lists the cameras, plays them over WebRTC, and falls back to MSE when WebRTC cannot
//! connect (as through a tunnel), and shows the crying badge within 2 s of a cry at the camera.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::chromium::{Chromium, Page};
use common::fake_camera::FakeCamera;
use common::{Vigil, free_port, netns};

const TOKEN: &str = "Yx9c2hX0abcdEFGH";

/// The ingress stand-in (tests/support/ingress_proxy.py), killed when dropped.
struct Ingress {
    child: Child,
    port: u16,
}

impl Ingress {
    fn start(web_port: u16) -> Self {
        let port = free_port();
        let python = common::home_assistant::venv().join("bin/python");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/ingress_proxy.py"
        );
        let child = common::die_with_test(&mut Command::new(python))
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

    fn panel_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/hassio_ingress/{TOKEN}/", self.port)
    }
}

impl Drop for Ingress {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Vigil with the demo camera, its panel open only to the proxy (loopback), as the add-on's is
/// only to the ingress gateway.
fn start_vigil() -> (Vigil, Ingress) {
    let web_port = free_port();
    let mut vigil = Vigil::start(&format!(
        "web_port: {web_port}\napi_port: {}\nrtsp_port: {}\nweb_allow: [127.0.0.1]\n",
        free_port(),
        free_port()
    ));
    vigil.wait_for_log("demo camera online", Duration::from_secs(20));
    let ingress = Ingress::start(web_port);
    (vigil, ingress)
}

/// The demo card's video: transport label, time, frames, size.
const CARD_VIDEO: &str = r#"(() => {
  const card = document.querySelector('.card[data-camera="demo"]');
  if (!card) return null;
  const v = card.querySelector('video');
  return { transport: card.querySelector('.transport').textContent,
           badge: card.querySelector('.badge').textContent,
           health: card.querySelector('.health').textContent,
           t: v.currentTime, width: v.videoWidth,
           frames: v.getVideoPlaybackQuality().totalVideoFrames,
           cards: document.querySelectorAll('.card').length };
})()"#;

async fn wait_playing(chromium: &mut Chromium, page: &Page, transport: &str) -> serde_json::Value {
    let expression = format!(
        "(() => {{ const s = {CARD_VIDEO}; return s && s.transport === '{transport}' && s.t > 0.5 && s.frames > 5 ? s : null; }})()"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = chromium.eval(page, &expression).await;
        if !value.is_null() {
            return value;
        }
        if Instant::now() > deadline {
            let now = chromium.eval(page, CARD_VIDEO).await;
            panic!("the demo card does not play over {transport} after 20 s: {now}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_log_on_failure(vigil: &Vigil, chromium_log: &str) {
    if std::thread::panicking() {
        eprintln!(
            "--- vigil ---\n{}\n--- chromium ---\n{chromium_log}",
            vigil.output()
        );
    }
}

#[test]
fn the_panel_plays_every_camera_over_webrtc_under_the_ingress_path() {
    if !netns::enter("the_panel_plays_every_camera_over_webrtc_under_the_ingress_path") {
        return;
    }
    let (mut vigil, ingress) = start_vigil();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut chromium = Chromium::launch().await;
        let started = Instant::now();
        let page = chromium.open(&ingress.panel_url()).await;
        let state = wait_playing(&mut chromium, &page, "WebRTC").await;
        let took = started.elapsed();
        print_log_on_failure(&vigil, &chromium.log());
        assert_eq!(state["cards"], 1, "{state}");
        assert_eq!(state["width"], 640, "{state}");
        assert!(
            state["health"].as_str().unwrap().contains("Online"),
            "{state}"
        );
        assert!(
            state["health"].as_str().unwrap().contains("H.264 640×360"),
            "{state}"
        );
        // Live, not a still: time goes on.
        let t1 = state["t"].as_f64().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let later = chromium.eval(&page, CARD_VIDEO).await;
        assert!(
            later["t"].as_f64().unwrap() > t1 + 1.0,
            "{state} -> {later}"
        );
        // Every request went through the prefix: the proxy 404s anything else, and the page
        // would show no camera if its relative URLs had escaped it.
        let url = chromium.eval(&page, "location.href").await;
        assert!(
            url.as_str().unwrap().contains("/api/hassio_ingress/"),
            "{url}"
        );
        println!("panel playing over WebRTC {took:?} after opening");
    });
    vigil.terminate();
}

#[test]
fn the_panel_falls_back_to_mse_when_webrtc_cannot_connect() {
    if !netns::enter("the_panel_falls_back_to_mse_when_webrtc_cannot_connect") {
        return;
    }
    let (mut vigil, ingress) = start_vigil();
    // As behind a tunnel: the page and its WebSocket reach Vigil (here on loopback), but no
    // media path does. Inside the test's namespace, every packet for the one address ICE can
    // use is dropped (nftables, installed by scripts/install-deps.sh).
    let nft = Command::new("nft")
        .arg(
            "add table inet vigil_test; \
               add chain inet vigil_test out { type filter hook output priority 0; }; \
               add rule inet vigil_test out ip daddr 10.99.0.0/24 drop",
        )
        .status()
        .expect("cannot run nft (scripts/install-deps.sh installs nftables)");
    assert!(nft.success(), "nft failed");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut chromium = Chromium::launch().await;
        let started = Instant::now();
        let page = chromium.open(&ingress.panel_url()).await;
        let state = wait_playing(&mut chromium, &page, "MSE").await;
        let took = started.elapsed();
        print_log_on_failure(&vigil, &chromium.log());
        assert_eq!(state["width"], 640, "{state}");
        // The issue's bound: MSE takes over within 3 s of WebRTC failing (plus page start).
        assert!(
            took < Duration::from_secs(6),
            "MSE played only after {took:?}"
        );
        println!("panel playing over MSE {took:?} after opening (WebRTC blocked)");
    });
    vigil.terminate();
}

/// The badge of `camera`'s card, or null before the card exists.
fn badge_of(camera: &str) -> String {
    format!(
        r#"(() => {{ const b = document.querySelector('.card[data-camera="{camera}"] .badge'); return b ? b.textContent : null; }})()"#
    )
}

#[test]
fn the_crying_badge_shows_within_two_seconds_of_a_cry_at_the_camera() {
    if !netns::enter("the_crying_badge_shows_within_two_seconds_of_a_cry_at_the_camera") {
        return;
    }
    let mut camera = FakeCamera::start(&["--audio", "pcma"]);
    let web_port = free_port();
    let mut vigil = Vigil::start(&format!(
        "web_port: {web_port}\napi_port: {}\nrtsp_port: {}\nweb_allow: [127.0.0.1]\n\
         cameras:\n  - {{name: nursery, url: '{}'}}\n",
        free_port(),
        free_port(),
        camera.url()
    ));
    vigil.wait_for_log("camera online", Duration::from_secs(20));
    let ingress = Ingress::start(web_port);
    let clip =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/audio/cry_03_burping.wav");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut chromium = Chromium::launch().await;
        let page = chromium.open(&ingress.panel_url()).await;
        let badge = badge_of("nursery");
        let deadline = Instant::now() + Duration::from_secs(20);
        while chromium.eval(&page, &badge).await != "Quiet" {
            assert!(Instant::now() < deadline, "the badge never said Quiet");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The cry is audible 0.55 s into this clip (its level; see tests/cry_camera.rs).
        camera.play(&clip);
        let audible = Instant::now() + Duration::from_millis(550);
        let deadline = audible + Duration::from_secs(10);
        while chromium.eval(&page, &badge).await != "Crying" {
            assert!(Instant::now() < deadline, "the badge never said Crying");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = Instant::now().saturating_duration_since(audible);
        print_log_on_failure(&vigil, &chromium.log());
        println!("crying badge {took:?} after the cry became audible");
        assert!(
            took <= Duration::from_secs(2),
            "the crying badge took {took:?} (at most 2 s)"
        );
    });
    vigil.terminate();
}
