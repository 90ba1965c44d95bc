//! The panel in a real headless Chromium, through a stand-in for the Supervisor's ingress proxy
//! (the page lives under /api/hassio_ingress/<token>/), inside a private network namespace:
//! it lists the cameras, plays them over WebRTC, and falls back to MSE when WebRTC cannot
//! connect (as through a tunnel), and shows the crying badge within 2 s of a cry at the camera.
//! A camera with a sub stream plays it in a small tile and over MSE, and its main stream full
//! screen; the card's button forces either, remembered across a reload.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::chromium::{Chromium, Page};
use common::fake_camera::FakeCamera;
use common::ingress::Ingress;
use common::{Vigil, free_port, netns, producer, wait_until};

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
    let condition = format!("s.transport === '{transport}' && s.t > 0.5 && s.frames > 5");
    let what = format!("the demo card does not play over {transport}");
    wait_card(chromium, page, CARD_VIDEO, &condition, &what).await
}

/// Polls `state` (an expression giving a card's state, or null) until `condition` (on `s`) holds
/// and returns that state; after 20 s fails saying `what`, with the state then.
async fn wait_card(
    chromium: &mut Chromium,
    page: &Page,
    state: &str,
    condition: &str,
    what: &str,
) -> serde_json::Value {
    chromium
        .wait_state(page, state, condition, Duration::from_secs(20), what)
        .await
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
    block_media_paths();
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

/// As behind a tunnel: the page and its WebSocket reach Vigil (here on loopback), but no media
/// path does. Inside the test's namespace, every packet for the one address ICE can use is
/// dropped (nftables, installed by scripts/install-deps.sh).
fn block_media_paths() {
    let nft = Command::new("nft")
        .arg(
            "add table inet vigil_test; \
               add chain inet vigil_test out { type filter hook output priority 0; }; \
               add rule inet vigil_test out ip daddr 10.99.0.0/24 drop",
        )
        .status()
        .expect("cannot run nft (scripts/install-deps.sh installs nftables)");
    assert!(nft.success(), "nft failed");
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
    let clip = common::fixtures::audio("cry_03_burping.wav");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut chromium = Chromium::launch().await;
        let page = chromium.open(&ingress.panel_url()).await;
        let badge = badge_of("nursery");
        let deadline = Instant::now() + Duration::from_secs(20);
        while chromium.eval(&page, &badge).await != "Quiet" {
            assert!(Instant::now() < deadline, "the badge never said Quiet");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Timed from where the clip's own level says the cry becomes audible.
        let offset = common::cry::audible_offset(&clip);
        camera.play(&clip);
        let audible = Instant::now() + offset;
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

/// The nursery card: which stream it plays, at what size, over what, and its stream button.
const NURSERY: &str = r#"(() => {
  const card = document.querySelector('.card[data-camera="nursery"]');
  if (!card) return null;
  const v = document.querySelector('video[aria-label="Nursery live"]');
  return { stream: card.dataset.stream, width: v.videoWidth, t: v.currentTime,
           transport: card.querySelector('.transport').textContent,
           button: card.querySelector('.stream').textContent,
           tile: card.querySelector('.video-box').clientWidth,
           health: card.querySelector('.health').textContent };
})()"#;

/// Waits until the nursery card plays `stream` at `width` over WebRTC.
async fn wait_stream(
    chromium: &mut Chromium,
    page: &Page,
    stream: &str,
    width: u32,
) -> serde_json::Value {
    wait_stream_over(chromium, page, stream, width, "WebRTC").await
}

/// Waits until the nursery card plays `stream` at `width` over `transport`.
async fn wait_stream_over(
    chromium: &mut Chromium,
    page: &Page,
    stream: &str,
    width: u32,
    transport: &str,
) -> serde_json::Value {
    let condition = format!(
        "s.stream === '{stream}' && s.width === {width} && s.transport === '{transport}' && s.t > 0.3"
    );
    let what = format!("the nursery card does not play {stream} at {width} px over {transport}");
    wait_card(chromium, page, NURSERY, &condition, &what).await
}

/// Vigil with a camera `nursery` whose main stream is 1280×720 and sub stream 640×360.
fn start_vigil_with_sub_stream() -> (Vigil, Ingress, [FakeCamera; 2]) {
    let main = FakeCamera::start(&["--width", "1280", "--height", "720"]);
    let sub = FakeCamera::start(&["--width", "640", "--height", "360"]);
    let web_port = free_port();
    let mut vigil = Vigil::start(&format!(
        "web_port: {web_port}\napi_port: {}\nrtsp_port: {}\nweb_allow: [127.0.0.1]\n\
         cameras:\n  - {{name: nursery, url: '{}', sub_url: '{}'}}\n",
        free_port(),
        free_port(),
        main.url(),
        sub.url()
    ));
    // Both streams online: the first "camera online" line may be the sub stream's, and the
    // main stream may take a second session (a camera whose audio starts late).
    vigil.wait_for_log("camera online", Duration::from_secs(20));
    for stream in ["nursery", "nursery_sub"] {
        wait_until(&format!("{stream} online"), Duration::from_secs(30), || {
            producer(web_port, stream)["state"] == "online"
        });
    }
    let ingress = Ingress::start(web_port);
    (vigil, ingress, [main, sub])
}

#[test]
fn the_panel_plays_the_sub_stream_in_a_small_tile_and_the_main_stream_full_screen() {
    if !netns::enter(
        "the_panel_plays_the_sub_stream_in_a_small_tile_and_the_main_stream_full_screen",
    ) {
        return;
    }
    let (mut vigil, ingress, _cameras) = start_vigil_with_sub_stream();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        // A phone-sized window: the tile is narrower than the main stream's detail.
        let mut chromium = Chromium::launch_with(&["--window-size=480,900"]).await;
        let page = chromium.open(&ingress.panel_url()).await;
        let tile = wait_stream(&mut chromium, &page, "nursery_sub", 640).await;
        print_log_on_failure(&vigil, &chromium.log());
        assert!(tile["tile"].as_u64().unwrap() < 640, "{tile}");
        assert_eq!(tile["button"], "Auto · SD", "{tile}");
        // Both streams' health on the card.
        let health = tile["health"].as_str().unwrap();
        assert!(
            health.contains("Main") && health.contains("H.264 1280×720"),
            "{health}"
        );
        assert!(
            health.contains("Sub") && health.contains("H.264 640×360"),
            "{health}"
        );

        // Full screen: the main stream; back in the grid: the sub stream again.
        chromium
            .eval(
                &page,
                "document.querySelector('.card[data-camera=\"nursery\"] .video-box').click()",
            )
            .await;
        wait_stream(&mut chromium, &page, "nursery", 1280).await;
        chromium.eval(&page, "history.back()").await;
        wait_stream(&mut chromium, &page, "nursery_sub", 640).await;

        // Forcing the main stream holds in the small tile, and after a reload.
        let button = "document.querySelector('.card[data-camera=\"nursery\"] .stream').click()";
        chromium.eval(&page, button).await;
        let forced = wait_stream(&mut chromium, &page, "nursery", 1280).await;
        assert_eq!(forced["button"], "HD", "{forced}");
        chromium.eval(&page, "location.reload()").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        wait_stream(&mut chromium, &page, "nursery", 1280).await;
        // Then the sub stream, forced.
        chromium.eval(&page, button).await;
        let forced = wait_stream(&mut chromium, &page, "nursery_sub", 640).await;
        assert_eq!(forced["button"], "SD", "{forced}");
    });
    vigil.terminate();
}

#[test]
fn over_mse_the_panel_plays_the_sub_stream_even_in_a_large_tile() {
    if !netns::enter("over_mse_the_panel_plays_the_sub_stream_even_in_a_large_tile") {
        return;
    }
    let (mut vigil, ingress, _cameras) = start_vigil_with_sub_stream();
    block_media_paths();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut chromium = Chromium::launch_with(&["--window-size=1400,1000"]).await;
        let page = chromium.open(&ingress.panel_url()).await;
        let state = wait_stream_over(&mut chromium, &page, "nursery_sub", 640, "MSE").await;
        print_log_on_failure(&vigil, &chromium.log());
        assert!(
            state["tile"].as_u64().unwrap() >= 640,
            "a large tile: {state}"
        );
        // Full screen stays on the sub stream: the connection is what limits it.
        chromium
            .eval(
                &page,
                "document.querySelector('.card[data-camera=\"nursery\"] .video-box').click()",
            )
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        wait_stream_over(&mut chromium, &page, "nursery_sub", 640, "MSE").await;
    });
    vigil.terminate();
}

/// Whether the page fits its viewport: nothing wider than the screen, every card on it.
const FITS: &str = r#"(() => {
  if (document.readyState !== 'complete' || !document.documentElement) return { cards: 0 };
  const cards = [...document.querySelectorAll('.card')];
  return { overflow: document.documentElement.scrollWidth - innerWidth,
           cards: cards.length,
           widest: Math.max(...cards.map(c => c.getBoundingClientRect().right)),
           viewport: innerWidth,
           episodes: document.querySelectorAll('.timeline .episode').length,
           streamButtons: [...document.querySelectorAll('.card .stream')].filter(b => b.offsetParent !== null).length,
           playing: [...document.querySelectorAll('.card video')].filter(v => v.currentTime > 0.5).length };
})()"#;

/// The panel on a phone (412 × 892, touch, dark) and a desktop (1280 × 800, light): nothing
/// sticks out of the screen, both cameras play, the crying camera shows its badge and its episode
/// on the timeline. With `VIGIL_SCREENSHOTS=<dir>` the two views are saved there as PNGs (the
/// ones in docs/ were made so: `VIGIL_SCREENSHOTS=docs cargo test --test panel_browser fits`).
#[test]
fn the_panel_fits_a_phone_and_a_desktop() {
    if !netns::enter("the_panel_fits_a_phone_and_a_desktop") {
        return;
    }
    let mut nursery = FakeCamera::start(&["--audio", "pcma", "--pattern", "smpte"]);
    let playroom = FakeCamera::start(&["--audio", "aac", "--pattern", "ball"]);
    let web_port = free_port();
    let mut vigil = Vigil::start(&format!(
        "web_port: {web_port}\napi_port: {}\nrtsp_port: {}\nweb_allow: [127.0.0.1]\n\
         cameras:\n  - {{name: nursery, url: '{}'}}\n  - {{name: playroom, url: '{}'}}\n",
        free_port(),
        free_port(),
        nursery.url(),
        playroom.url()
    ));
    vigil.wait_for_log("camera=playroom", Duration::from_secs(20));
    let ingress = Ingress::start(web_port);
    let clip = common::fixtures::audio("cry_09_tired.wav");
    let screenshots = std::env::var_os("VIGIL_SCREENSHOTS").map(std::path::PathBuf::from);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut chromium = Chromium::launch().await;
        let page = chromium.open(&ingress.panel_url()).await;
        let badge = badge_of("nursery");
        chromium
            .wait_for(
                &page,
                &format!("{badge} === 'Quiet'"),
                Duration::from_secs(20),
            )
            .await;
        nursery.play(&clip);
        chromium
            .wait_for(
                &page,
                &format!("{badge} === 'Crying'"),
                Duration::from_secs(10),
            )
            .await;
        // Crying lasts the clip and the 10 s hold: time to look at it in both sizes.
        for (name, width, height, mobile, dark) in [
            ("panel-phone", 412, 892, true, true),
            ("panel-desktop", 1280, 800, false, false),
        ] {
            chromium.emulate(&page, width, height, mobile, dark).await;
            // Opened again at this size, the page loads the history with the episode in it.
            chromium.navigate(&page, &ingress.panel_url()).await;
            let fits = chromium
                .wait_for(
                    &page,
                    &format!(
                        "(() => {{ const f = {FITS}; return f.cards === 2 && f.playing === 2 && f.episodes > 0 && {badge} === 'Crying' ? f : null; }})()"
                    ),
                    Duration::from_secs(20),
                )
                .await;
            print_log_on_failure(&vigil, &chromium.log());
            // (Negative when a vertical scroll bar takes some of the width.)
            assert!(
                fits["overflow"].as_f64().unwrap() <= 0.0,
                "{name}: wider than the screen: {fits}"
            );
            assert!(
                fits["widest"].as_f64().unwrap() <= fits["viewport"].as_f64().unwrap(),
                "{name}: a card sticks out: {fits}"
            );
            // Neither camera has a sub stream: no stream button to confuse anyone.
            assert_eq!(fits["streamButtons"], 0, "{name}: {fits}");
            // Let the videos settle on a picture.
            tokio::time::sleep(Duration::from_millis(800)).await;
            let png = chromium.screenshot(&page).await;
            assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
            if let Some(dir) = &screenshots {
                std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
            }
        }
    });
    vigil.terminate();
}
