//! A real headless Chromium (Debian's `/usr/bin/chromium`) driven over the DevTools protocol:
//! open a page, evaluate JavaScript in it, wait for a condition. A small CDP client over
//! WebSocket (tokio-tungstenite, serde_json); nothing else of the protocol is needed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::TempDir;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Makes a recvonly offer (video and audio) in the page as `window.pc` and returns its SDP once
/// ICE gathering is done, so that it carries the browser's candidates.
pub const RECVONLY_OFFER: &str = r#"(async () => {
  const pc = window.pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  window.video = document.createElement('video');
  video.muted = true; video.autoplay = true; document.body.appendChild(video);
  pc.ontrack = e => { video.srcObject = video.srcObject || new MediaStream(); video.srcObject.addTrack(e.track); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
    setTimeout(done, 3000);
  });
  return pc.localDescription.sdp;
})()"#;

/// How many video frames `window.pc` decoded, once more than 5 (else 0).
pub const FRAMES_DECODED: &str = "(async () => { let n = 0; (await pc.getStats()).forEach(s => { \
    if (s.type === 'inbound-rtp' && s.kind === 'video') n = s.framesDecoded || 0; }); \
    return n > 5 ? n : 0; })()";

/// A running Chromium with its DevTools connection. Killed when dropped.
pub struct Chromium {
    child: Child,
    socket: Socket,
    next_id: u64,
    log: Arc<Mutex<String>>,
    _profile: TempDir,
}

/// One page (tab), attached for commands.
#[derive(Debug, Clone)]
pub struct Page {
    session: String,
    target: String,
}

impl Chromium {
    /// Starts Chromium with a fresh profile and connects to its DevTools socket.
    pub async fn launch() -> Chromium {
        Self::launch_with(&[]).await
    }

    /// Like [`Chromium::launch`], with extra command-line switches.
    pub async fn launch_with(extra: &[&str]) -> Chromium {
        let profile = TempDir::new("chromium");
        let mut child = super::die_with_test(&mut Command::new("chromium"))
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--mute-audio",
                "--autoplay-policy=no-user-gesture-required",
                // Host candidates as IP addresses, not mDNS names (webrtcbin resolves no mDNS).
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--remote-debugging-port=0",
            ])
            .args(extra)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start chromium (scripts/install-deps.sh installs it)");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let log_writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://")
                    && line.contains("DevTools listening on")
                {
                    let _ = url_tx.send(line[at..].trim().to_string());
                }
                let mut log = log_writer.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let url = url_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!("chromium printed no DevTools URL:\n{}", log.lock().unwrap())
            });
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("cannot connect to chromium's DevTools socket");
        Chromium {
            child,
            socket,
            next_id: 0,
            log,
            _profile: profile,
        }
    }

    /// The browser process (to kill it as a crash would).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Chromium's own log so far (for failure messages).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends one command (to the browser, or to a page's session) and returns its result.
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .expect("DevTools socket closed");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 60 s"))
                .expect("DevTools socket closed")
                .expect("DevTools socket failed");
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).expect("DevTools sent bad JSON");
            if value["id"] == json!(id) {
                if let Some(error) = value.get("error") {
                    panic!("{method} failed: {error}");
                }
                return value["result"].clone();
            }
        }
    }

    /// Opens `url` in a new tab and attaches to it.
    pub async fn open(&mut self, url: &str) -> Page {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": url }))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        Page {
            session: attached["sessionId"].as_str().unwrap().to_string(),
            target: target["targetId"].as_str().unwrap().to_string(),
        }
    }

    /// Opens Vigil's `live` page at `url` and waits until it shows a first picture; returns
    /// the page and how long that took in the page (ms from its start).
    pub async fn open_playing(&mut self, url: &str) -> (Page, f64) {
        let page = self.open(url).await;
        let first = self
            .wait_for(
                &page,
                "window.vigil && vigil.firstFrameMs",
                Duration::from_secs(30),
            )
            .await;
        (page, first.as_f64().unwrap_or_default())
    }

    /// Makes `page` a `width` × `height` CSS-pixel screen (`mobile`: a phone's viewport and
    /// touch) in a light or dark colour scheme, as a phone or a desktop browser would be.
    pub async fn emulate(
        &mut self,
        page: &Page,
        width: u32,
        height: u32,
        mobile: bool,
        dark: bool,
    ) {
        let session = Some(page.session.as_str());
        self.call(
            session,
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": if mobile { 2 } else { 1 }, "mobile": mobile }),
        )
        .await;
        self.call(
            session,
            "Emulation.setTouchEmulationEnabled",
            json!({ "enabled": mobile }),
        )
        .await;
        self.call(
            session,
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": if dark { "dark" } else { "light" } }] }),
        )
        .await;
    }

    /// Makes `page`'s clock read in `timezone` (an IANA name such as `UTC`), as a phone set to
    /// that zone would, so that the times it shows can be checked.
    pub async fn set_timezone(&mut self, page: &Page, timezone: &str) {
        self.call(
            Some(&page.session),
            "Emulation.setTimezoneOverride",
            json!({ "timezoneId": timezone }),
        )
        .await;
    }

    /// Clicks (or, on an emulated phone, taps) at `x`, `y` in CSS pixels of the viewport, as a
    /// user's finger would: what is drawn on top there gets it.
    pub async fn click_at(&mut self, page: &Page, x: f64, y: f64) {
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                Some(&page.session),
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Scrolls the element `selector` into view and clicks its centre ([`Chromium::click_at`]);
    /// panics if nothing matches.
    pub async fn click(&mut self, page: &Page, selector: &str) {
        let selector_js = serde_json::to_string(selector).unwrap();
        let at = self
            .eval(
                page,
                &format!(
                    "(() => {{ const e = document.querySelector({selector_js}); if (!e) return null; \
                     e.scrollIntoView({{ block: 'center' }}); const r = e.getBoundingClientRect(); \
                     return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
                ),
            )
            .await;
        let (Some(x), Some(y)) = (at[0].as_f64(), at[1].as_f64()) else {
            panic!("nothing to click at {selector}");
        };
        self.click_at(page, x, y).await;
    }

    /// Loads `url` in `page`; returns once the new document is committed (so that evaluating
    /// in it no longer races the navigation).
    pub async fn navigate(&mut self, page: &Page, url: &str) {
        self.call(Some(&page.session), "Page.navigate", json!({ "url": url }))
            .await;
    }

    /// A PNG of what `page` shows.
    pub async fn screenshot(&mut self, page: &Page) -> Vec<u8> {
        use base64::Engine;
        let shot = self
            .call(
                Some(&page.session),
                "Page.captureScreenshot",
                json!({ "format": "png" }),
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("no screenshot data"))
            .expect("a screenshot in base64")
    }

    /// Closes a tab (its peer connections and sockets close with it).
    pub async fn close(&mut self, page: Page) {
        self.call(
            None,
            "Target.closeTarget",
            json!({ "targetId": page.target }),
        )
        .await;
    }

    /// Evaluates `expression` in `page` (awaiting a promise) and returns its value.
    pub async fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let result = self
            .call(
                Some(&page.session),
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `state` (an expression giving an object, or null) until `condition` (on `s`)
    /// holds, and returns that state; after `timeout` fails saying `what`, with the state then.
    pub async fn wait_state(
        &mut self,
        page: &Page,
        state: &str,
        condition: &str,
        timeout: Duration,
        what: &str,
    ) -> Value {
        let test =
            format!("(() => {{ const s = {state}; return s && ({condition}) ? s : null; }})()");
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.eval(page, &test).await;
            if !value.is_null() {
                return value;
            }
            if Instant::now() > deadline {
                let now = self.eval(page, state).await;
                panic!("{what} after {timeout:?}: {now}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Evaluates `expression` until it is truthy; returns that value, or panics with the
    /// last value after `timeout`.
    pub async fn wait_for(&mut self, page: &Page, expression: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.eval(page, expression).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let state = self
                    .eval(
                        page,
                        "JSON.stringify({ page: location.href, ready: document.readyState, \
                         vigil: window.vigil || null })",
                    )
                    .await;
                panic!("{expression} still {value} after {timeout:?}; page state: {state}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Chromium {
    /// SIGTERM first, so that Chromium takes its renderer and GPU processes with it.
    fn drop(&mut self) {
        super::signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The picture the page's video shows now, as a PNG in base64 (null before the first frame).
pub const GRAB_PICTURE: &str = r#"(() => {
  const v = document.getElementById('video');
  if (!v || !v.videoWidth || v.readyState < 2) return null;
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  c.getContext('2d').drawImage(v, 0, 0);
  return c.toDataURL('image/png').split(',')[1];
})()"#;
