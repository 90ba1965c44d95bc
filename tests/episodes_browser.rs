//! The night's cries in the panel, in a real headless Chromium through the ingress stand-in,
//! inside a private network namespace: a cry clip played into the fake camera's microphone
//! shows up in the panel's list while it goes on ("crying now"), then with the time it began,
//! how long it lasted, its peak score and its onset picture, on a phone and on a desktop.
//! Tapping it, or its mark on the timeline, opens it: its clip (recorded by default) plays in a
//! `<video controls>` that can seek; opened while the cry goes on and its clip is still being
//! written, it shows the picture and a note, then plays the clip by itself once it is finished.
//!
//! With `VIGIL_SCREENSHOTS=<dir>` the phone's list is saved there as `panel-episodes.png` (the
//! one in docs/ was made so: `VIGIL_SCREENSHOTS=docs cargo test --test episodes_browser`).

mod common;

use std::time::Duration;

use common::chromium::{Chromium, Page};
use common::cry::{audible_offset, clip, unix_ms_now};
use common::fake_camera::FakeCamera;
use common::ingress::Ingress;
use common::{Vigil, free_port, http_get, netns};
use serde_json::Value;

/// The newest cry in the list of every camera's cries, as a user sees it.
const FIRST_ITEM: &str = r#"(() => {
  const items = [...document.querySelectorAll('#episode-list .episode-item')];
  if (!items.length) return null;
  const item = items[0];
  const img = item.querySelector('img');
  const r = item.getBoundingClientRect();
  return { count: items.length, started: Number(item.dataset.started),
           time: item.querySelector('.ep-time').textContent,
           duration: item.querySelector('.ep-duration').textContent,
           peak: item.querySelector('.ep-peak').textContent,
           text: item.textContent.replace(/\s+/g, ' ').trim(),
           picture: img && !img.hidden && img.complete ? img.naturalWidth : 0,
           right: r.right, viewport: innerWidth,
           overflow: document.documentElement.scrollWidth - innerWidth };
})()"#;

/// The cry's view once opened: its player, or its picture and note.
const OPENED: &str = r#"(() => {
  const dialog = document.querySelector('#episode');
  if (dialog.hidden) return null;
  const v = document.querySelector('#episode-video');
  const img = document.querySelector('#episode-picture');
  const note = document.querySelector('#episode-note');
  return { title: document.querySelector('#episode-title').textContent,
           details: document.querySelector('#episode-details').textContent,
           video: !v.hidden, src: v.getAttribute('src') || '', t: v.currentTime,
           seeking: v.seeking, error: v.error ? v.error.code : 0,
           seekable: v.seekable.length ? v.seekable.end(0) : 0,
           picture: !img.hidden && img.complete ? img.naturalWidth : 0,
           note: note.hidden ? '' : note.textContent,
           width: dialog.getBoundingClientRect().width, viewport: innerWidth };
})()"#;

/// `HH:MM` of a Unix time in milliseconds, in UTC (the page's time zone in this test).
fn utc_clock(ms: u64) -> String {
    let minutes = ms / 60_000 % (24 * 60);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Polls `expression` (an object or null) until `condition` on `s` holds; panics with the last
/// value after `timeout`.
async fn wait_state(
    chromium: &mut Chromium,
    page: &Page,
    expression: &str,
    condition: &str,
    timeout: Duration,
) -> Value {
    let what = format!("not ({condition})");
    chromium
        .wait_state(page, expression, condition, timeout, &what)
        .await
}

#[test]
fn the_panel_lists_the_nights_cries_and_opens_one_on_a_phone_and_a_desktop() {
    if !netns::enter("the_panel_lists_the_nights_cries_and_opens_one_on_a_phone_and_a_desktop") {
        return;
    }
    let mut camera = FakeCamera::start(&["--audio", "pcma", "--pattern", "smpte"]);
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
    let screenshots = std::env::var_os("VIGIL_SCREENSHOTS").map(std::path::PathBuf::from);
    let clip = clip();
    let clip_seconds = {
        let reader = hound::WavReader::open(&clip).unwrap();
        reader.duration() as f64 / reader.spec().sample_rate as f64
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut chromium = Chromium::launch().await;
        let page = chromium.open(&ingress.panel_url()).await;
        chromium.set_timezone(&page, "UTC").await;
        chromium.navigate(&page, &ingress.panel_url()).await;
        chromium
            .wait_for(
                &page,
                "document.querySelector('.card[data-camera=\"nursery\"] .badge')?.textContent === 'Quiet'",
                Duration::from_secs(20),
            )
            .await;
        // Before any cry, the list says there is none.
        let empty = chromium
            .wait_for(
                &page,
                "(() => { const p = document.querySelector('#episodes .episodes-empty'); \
                 return p && !p.hidden ? p.textContent : null; })()",
                Duration::from_secs(10),
            )
            .await;
        assert_eq!(empty, "No cry in the last 12 hours.");

        let played = unix_ms_now();
        let audible = camera.play(&clip) + audible_offset(&clip).as_millis() as u64;
        // While it goes on.
        let ongoing = wait_state(
            &mut chromium,
            &page,
            FIRST_ITEM,
            "s.duration === 'crying now'",
            Duration::from_secs(15),
        )
        .await;
        assert_eq!(ongoing["count"], 1, "{ongoing}");
        // Tapped while it goes on, its clip still being written: the picture and a note, then
        // the clip plays by itself once it is finished, with no other tap.
        chromium.click(&page, "#episode-list .episode-item").await;
        let waiting = wait_state(
            &mut chromium,
            &page,
            OPENED,
            "s.note !== '' && s.picture > 0",
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(
            waiting["note"],
            "Its clip is being recorded: it plays here a few seconds after the cry ends.",
            "{waiting}"
        );
        assert_eq!(waiting["video"], false, "{waiting}");
        assert_eq!(waiting["picture"], 640, "{waiting}");
        let finished = wait_state(
            &mut chromium,
            &page,
            OPENED,
            "s.video && s.note === '' && s.t > 1",
            Duration::from_secs(40),
        )
        .await;
        assert!(
            finished["src"]
                .as_str()
                .unwrap()
                .starts_with("api/clips/nursery/"),
            "{finished}"
        );
        chromium.eval(&page, "history.back()").await;
        // Over (the cry, then the detector's 10 s hold).
        let ended = wait_state(
            &mut chromium,
            &page,
            FIRST_ITEM,
            "s.duration !== 'crying now' && s.picture > 0",
            Duration::from_secs(40),
        )
        .await;
        let (status, body) = http_get(web_port, "/api/panel/episodes");
        assert_eq!(status, 200, "{body}");
        let record: Value = serde_json::from_str(&body).unwrap();
        let record = &record["episodes"][0];
        let started = record["started_ms"].as_u64().unwrap();
        let lasted_ms = record["ended_ms"].as_u64().unwrap() - started;
        assert_eq!(ended["started"], started, "the list shows this episode: {ended}");
        // The cry the test played, heard within a few seconds of becoming audible.
        assert!(
            started + 1000 >= played.min(audible) && started <= audible + 5000,
            "the episode began at {started}, the cry became audible at {audible}"
        );
        let seconds = (lasted_ms as f64 / 1000.0).round() as u64;
        assert!(
            seconds >= 1 && seconds as f64 <= clip_seconds + 1.0,
            "a {seconds} s episode from a {clip_seconds:.1} s clip"
        );
        let peak = (record["peak_score"].as_f64().unwrap() * 100.0).round();
        assert!(peak >= 50.0, "{record}");
        let clip_path = record["clips"][0]["path"].as_str().unwrap_or_else(|| {
            panic!("no clip listed in the episode (clips are on by default): {record}")
        });
        assert!(clip_path.starts_with("nursery/"), "{record}");


        for (name, width, height, mobile, dark) in [
            ("phone", 412, 892, true, true),
            ("desktop", 1280, 800, false, false),
        ] {
            chromium.emulate(&page, width, height, mobile, dark).await;
            chromium.navigate(&page, &ingress.panel_url()).await;
            let item = wait_state(
                &mut chromium,
                &page,
                FIRST_ITEM,
                "s.picture > 0",
                Duration::from_secs(20),
            )
            .await;
            assert_eq!(item["count"], 1, "{name}: {item}");
            assert_eq!(item["started"], started, "{name}: {item}");
            assert_eq!(item["time"], utc_clock(started), "{name}: {item}");
            assert_eq!(item["duration"], format!("{seconds} s"), "{name}: {item}");
            assert_eq!(item["peak"], format!("peak {peak} %"), "{name}: {item}");
            // The onset's picture, at the camera's size.
            assert_eq!(item["picture"], 640, "{name}: {item}");
            assert!(
                item["overflow"].as_f64().unwrap() <= 0.0
                    && item["right"].as_f64().unwrap() <= item["viewport"].as_f64().unwrap(),
                "{name}: the list sticks out of the screen: {item}"
            );
            if name == "phone"
                && let Some(dir) = &screenshots
            {
                chromium
                    .eval(&page, "document.querySelector('#episodes').scrollIntoView()")
                    .await;
                tokio::time::sleep(Duration::from_millis(800)).await;
                let png = chromium.screenshot(&page).await;
                std::fs::write(dir.join("panel-episodes.png"), &png).unwrap();
            }

            // Tapping it opens it.
            chromium.click(&page, "#episode-list .episode-item").await;
            let opened = wait_state(
                &mut chromium,
                &page,
                OPENED,
                "s.t > 1",
                Duration::from_secs(20),
            )
            .await;
            assert_eq!(
                opened["title"],
                format!("Nursery · {}", utc_clock(started)),
                "{name}: {opened}"
            );
            assert_eq!(
                opened["details"],
                format!("{seconds} s · peak {peak} %"),
                "{name}: {opened}"
            );
            assert!(
                opened["width"].as_f64().unwrap() <= opened["viewport"].as_f64().unwrap(),
                "{name}: {opened}"
            );
            // Played through the ingress path, relative to the panel.
            assert_eq!(opened["src"], format!("api/clips/{clip_path}"), "{name}: {opened}");
            assert_eq!(opened["video"], true, "{name}: {opened}");
            let seekable = opened["seekable"].as_f64().unwrap();
            assert!(seekable > 1.0, "{name}: {opened}");
            // Seeking: paused at half a second, then on from there.
            chromium
                .eval(
                    &page,
                    "(() => { const v = document.querySelector('#episode-video'); v.pause(); \
                     v.currentTime = 0.5; })()",
                )
                .await;
            let seeked = wait_state(
                &mut chromium,
                &page,
                OPENED,
                "!s.seeking && Math.abs(s.t - 0.5) < 0.05",
                Duration::from_secs(10),
            )
            .await;
            assert_eq!(seeked["error"], 0, "{name}: {seeked}");
            chromium
                .eval(&page, "document.querySelector('#episode-video').play()")
                .await;
            wait_state(
                &mut chromium,
                &page,
                OPENED,
                "s.t > 1",
                Duration::from_secs(10),
            )
            .await;
            // Back closes it; the cry's mark on the timeline opens the same.
            chromium.eval(&page, "history.back()").await;
            wait_state(
                &mut chromium,
                &page,
                "({ hidden: document.querySelector('#episode').hidden })",
                "s.hidden",
                Duration::from_secs(5),
            )
            .await;
            chromium
                .click(&page, ".card[data-camera=\"nursery\"] .timeline rect.episode")
                .await;
            let from_mark = wait_state(
                &mut chromium,
                &page,
                OPENED,
                "s.t > 0.5",
                Duration::from_secs(20),
            )
            .await;
            assert_eq!(from_mark["title"], opened["title"], "{name}: {from_mark}");
            chromium.eval(&page, "history.back()").await;
            println!("{name}: {item}; clip {clip_path}, {seekable:.1} s seekable");
        }

        // The picture is served under the panel's relative path; a wrong name is a 404.
        let (status, _) = http_get(
            web_port,
            &format!("/api/panel/cry-pictures/nursery/{started}.jpg"),
        );
        assert_eq!(status, 200);
        let (status, body) = http_get(web_port, "/api/panel/cry-pictures/nursery/..%2Fx.jpg");
        assert_eq!(status, 404, "{body}");
    });
    vigil.terminate();
}
