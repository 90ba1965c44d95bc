//! The go2rtc-compatible API through the real binary, with the demo camera: `/api`, stream
//! names, snapshots, `stream.mp4`, MSE over WebSocket, access, bad input and slow viewers.
//! (WebRTC offers start webrtcbin, which gathers candidates on every interface: those tests
//! live in `live_browser.rs` and `ha_go2rtc.rs`, inside a private network namespace.)

mod common;

use std::time::{Duration, Instant};

use common::{Vigil, free_port, jpeg_size};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

struct Running {
    vigil: Vigil,
    api: u16,
    web: u16,
    rtsp: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- vigil log ---\n{}", self.vigil.output());
        }
    }
}

fn start(extra: &str) -> Running {
    let (api, web, rtsp) = (free_port(), free_port(), free_port());
    let mut vigil = Vigil::start(&format!(
        "api_port: {api}\nweb_port: {web}\nrtsp_port: {rtsp}\nlog_level: debug\n{extra}"
    ));
    vigil.wait_for_log("demo camera online", Duration::from_secs(20));
    Running {
        vigil,
        api,
        web,
        rtsp,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.expect("request failed")
}

/// `url` with the pairs as its query, encoded (a key may repeat).
fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.query_pairs_mut().extend_pairs(pairs);
    url.to_string()
}

/// Child processes of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may hold spaces, so read after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

#[test]
fn snapshots_are_jpegs_at_the_cameras_size_and_start_no_process() {
    let running = start("");
    runtime().block_on(async {
        let url = format!("http://127.0.0.1:{}/api/frame.jpeg?src=demo", running.api);
        let response = get(&url).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "image/jpeg");
        let jpeg = response.bytes().await.unwrap();
        assert_eq!(jpeg_size(&jpeg), Some((640, 360)), "not a 640x360 JPEG");

        let scaled = get(&format!("{url}&width=320"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(jpeg_size(&scaled), Some((320, 180)));
        let both = get(&format!("{url}&width=100&height=100"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(jpeg_size(&both), Some((100, 100)));

        let before = children(running.vigil.pid());
        let started = Instant::now();
        for i in 0..20 {
            let response = get(&format!("{url}&width={}", 160 + 2 * i)).await;
            assert_eq!(response.status(), 200);
            let jpeg = response.bytes().await.unwrap();
            assert_eq!(jpeg_size(&jpeg).map(|s| s.0), Some(160 + 2 * i as u16));
        }
        let took = started.elapsed();
        assert_eq!(
            children(running.vigil.pid()),
            before,
            "a snapshot started a process"
        );
        println!("20 scaled snapshots in {took:?}");

        // The panel port serves the same endpoint (relative to the ingress path).
        let panel = get(&format!(
            "http://127.0.0.1:{}/api/frame.jpeg?src=demo",
            running.web
        ))
        .await;
        assert_eq!(panel.status(), 200);

        let bad = get(&format!("{url}&width=0")).await;
        assert_eq!(bad.status(), 400);
        assert!(bad.text().await.unwrap().contains("width=0"));
        let bad = get(&format!("{url}&height=tall")).await;
        assert_eq!(bad.status(), 400);
    });
}

#[test]
fn the_api_answers_like_go2rtc_and_maps_home_assistant_names() {
    let running = start("");
    runtime().block_on(async {
        let base = format!("http://127.0.0.1:{}", running.api);
        let info: Value = get(&format!("{base}/api")).await.json().await.unwrap();
        assert_eq!(info["version"], "1.9.14");

        // What HA sends: the entity id, the camera's stream source (our restream), and an
        // ffmpeg hint.
        let client = reqwest::Client::new();
        let put = client
            .put(with_query(
                &format!("{base}/api/streams"),
                &[
                    ("name", "camera.nursery"),
                    ("src", &format!("rtsp://127.0.0.1:{}/demo", running.rtsp)),
                    (
                        "src",
                        "ffmpeg:camera.nursery#audio=opus#query=log_level=debug",
                    ),
                ],
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());
        let streams: Value = get(&format!("{base}/api/streams"))
            .await
            .json()
            .await
            .unwrap();
        let producers = &streams["camera.nursery"]["producers"];
        assert_eq!(
            producers[0]["url"],
            json!(format!("rtsp://127.0.0.1:{}/demo", running.rtsp)),
            "{streams}"
        );
        assert!(streams.get("demo").is_some(), "{streams}");
        let jpeg = get(&format!("{base}/api/frame.jpeg?src=camera.nursery")).await;
        assert_eq!(jpeg.status(), 200);

        let foreign = client
            .put(with_query(
                &format!("{base}/api/streams"),
                &[("name", "x"), ("src", "rtsp://admin:hunter2@10.0.0.9/live")],
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(foreign.status(), 400);
        let text = foreign.text().await.unwrap();
        assert!(
            text.contains("own cameras") && !text.contains("hunter2"),
            "{text}"
        );

        for path in ["frame.jpeg", "stream.mp4"] {
            let missing = get(&format!("{base}/api/{path}?src=attic")).await;
            assert_eq!(missing.status(), 404, "{path}");
            let text = missing.text().await.unwrap();
            assert!(
                text.contains("'attic' not found") && text.contains("demo"),
                "{text}"
            );
        }
        let missing = client
            .post(format!("{base}/api/webrtc?src=attic"))
            .body("v=0")
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        let no_src = get(&format!("{base}/api/frame.jpeg")).await;
        assert_eq!(no_src.status(), 400);
        let bad_offer = client
            .post(format!("{base}/api/webrtc?src=demo"))
            .header("content-type", "application/json")
            .body("{\"type\":")
            .send()
            .await
            .unwrap();
        assert_eq!(bad_offer.status(), 400);
        assert!(bad_offer.text().await.unwrap().contains("malformed"));
    });
}

#[test]
fn the_api_asks_for_basic_auth_when_set() {
    let running = start("api_username: ha\napi_password: s3cret-pw\n");
    runtime().block_on(async {
        let url = format!("http://127.0.0.1:{}/api", running.api);
        let open = get(&url).await;
        assert_eq!(open.status(), 401);
        assert!(open.headers().contains_key("www-authenticate"));
        let client = reqwest::Client::new();
        let wrong = client
            .get(&url)
            .basic_auth("ha", Some("nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        let right = client
            .get(&url)
            .basic_auth("ha", Some("s3cret-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200);
    });
    assert!(!running.vigil.output().contains("s3cret-pw"));
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(port: u16, src: &str) -> Ws {
    let (socket, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/api/ws?src={src}"))
            .await
            .expect("WebSocket refused");
    socket
}

async fn send(socket: &mut Ws, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// The next text message as JSON, skipping binary ones; `None` when the socket closed.
async fn next_json(socket: &mut Ws) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("no message within 15 s")?;
        match message.ok()? {
            Message::Text(text) => return Some(serde_json::from_str(&text).unwrap()),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// True once the server closed the socket (a close frame or the end of the stream).
async fn closed(socket: &mut Ws) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => continue,
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn websocket_bad_input_gets_an_error_and_a_closed_connection() {
    let running = start("");
    runtime().block_on(async {
        let check = |message: &'static str, words: &'static [&'static str]| {
            let port = running.api;
            async move {
                let mut socket = ws(port, "demo").await;
                socket.send(Message::text(message)).await.unwrap();
                let reply = next_json(&mut socket).await.expect("closed without a word");
                assert_eq!(reply["type"], "error", "{reply}");
                let text = reply["value"].as_str().unwrap();
                for w in words {
                    assert!(text.contains(w), "{text:?} lacks {w:?}");
                }
                assert!(closed(&mut socket).await, "still open after {message}");
            }
        };
        check("{not json", &["malformed JSON"]).await;
        check(r#"{"type":"webrtc/offer","value":"hello"}"#, &["webrtc/offer", "v=0"]).await;
        check(
            r#"{"type":"webrtc","value":{"type":"offer","sdp":"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}}"#,
            &["webrtc", "ice-ufrag"],
        )
        .await;
        check(r#"{"type":"webrtc/offer","value":42}"#, &["webrtc/offer", "malformed"]).await;

        let mut unknown = ws(running.api, "attic").await;
        send(&mut unknown, json!({"type": "mse", "value": ""})).await;
        let reply = next_json(&mut unknown).await.unwrap();
        assert!(reply["value"].as_str().unwrap().contains("'attic' not found"), "{reply}");
        assert!(closed(&mut unknown).await);

        // A request go2rtc knows but Vigil does not serve is refused without closing.
        let mut socket = ws(running.api, "demo").await;
        send(&mut socket, json!({"type": "hls", "value": "avc1"})).await;
        let reply = next_json(&mut socket).await.unwrap();
        assert!(reply["value"].as_str().unwrap().starts_with("hls: not supported"));
        send(&mut socket, json!({"type": "mse", "value": "avc1.640029,mp4a.40.2"})).await;
        let reply = next_json(&mut socket).await.unwrap();
        assert_eq!(reply["type"], "mse", "{reply}");
    });
}

#[test]
fn mse_streams_fmp4_and_a_viewer_that_never_reads_is_dropped_alone() {
    let mut running = start("");
    let api = running.api;
    runtime().block_on(async {
        let mut good = ws(running.api, "demo").await;
        send(
            &mut good,
            json!({"type": "mse", "value": "avc1.640029,mp4a.40.2,opus"}),
        )
        .await;
        let reply = next_json(&mut good).await.unwrap();
        assert_eq!(reply["type"], "mse");
        let content_type = reply["value"].as_str().unwrap();
        assert!(
            content_type.starts_with("video/mp4; codecs=\"avc1.64")
                && content_type.contains("mp4a.40.2"),
            "{content_type}"
        );
        let Some(Ok(Message::Binary(init))) = good.next().await else {
            panic!("no init segment");
        };
        assert_eq!(
            &init[4..8],
            b"ftyp",
            "the stream starts with an init segment"
        );

        // A viewer whose socket never drains: a tiny receive window, and no reads.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(2048).unwrap();
        let stream = socket
            .connect(format!("127.0.0.1:{}", running.api).parse().unwrap())
            .await
            .unwrap();
        let (mut stuck, _) = tokio_tungstenite::client_async(
            format!("ws://127.0.0.1:{}/api/ws?src=demo", running.api),
            stream,
        )
        .await
        .unwrap();
        let request = json!({"type": "mse", "value": ""}).to_string();
        stuck.send(Message::text(request)).await.unwrap();

        // The good viewer keeps receiving while the stuck one is dropped.
        let started = Instant::now();
        let mut received = 0usize;
        let vigil = &mut running.vigil;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), good.next()).await {
                Ok(Some(Ok(Message::Binary(data)))) => received += data.len(),
                Ok(Some(Ok(_))) => {}
                other => panic!("the good viewer stopped receiving: {other:?}"),
            }
            if vigil
                .output()
                .contains("WebSocket client gone or not reading: dropped")
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the stuck viewer was never dropped:\n{}",
                vigil.output()
            );
        }
        let dropped_after = started.elapsed();
        let mut more = 0usize;
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if let Ok(Some(Ok(Message::Binary(data)))) =
                tokio::time::timeout(Duration::from_secs(5), good.next()).await
            {
                more += data.len();
            }
        }
        assert!(
            received > 0 && more > 10_000,
            "{received} then {more} bytes"
        );
        println!(
            "stuck viewer dropped after {dropped_after:?}; the other got {received} + {more} bytes"
        );
        vigil.wait_for_log("MP4 viewer ended", Duration::from_secs(10));
        drop(stuck);
        // The camera is unaffected.
        let jpeg = get(&format!("http://127.0.0.1:{api}/api/frame.jpeg?src=demo")).await;
        assert_eq!(jpeg.status(), 200);
    });
}

#[test]
fn stream_mp4_is_playable_fragmented_mp4() {
    let running = start("");
    let data = runtime().block_on(async {
        let mut response = get(&format!(
            "http://127.0.0.1:{}/api/stream.mp4?src=demo",
            running.api
        ))
        .await;
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(content_type.starts_with("video/mp4"), "{content_type}");
        let mut data = Vec::new();
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            match tokio::time::timeout(Duration::from_secs(5), response.chunk()).await {
                Ok(Ok(Some(chunk))) => data.extend_from_slice(&chunk),
                other => panic!("stream ended: {other:?}"),
            }
        }
        data
    });
    let dir = common::TempDir::new("mp4");
    let path = dir.path().join("stream.mp4");
    std::fs::write(&path, &data).unwrap();
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe (ffmpeg) is installed by scripts/install-deps.sh");
    let streams = String::from_utf8_lossy(&probe.stdout);
    assert!(streams.contains("h264,640,360"), "{streams}");
    assert!(streams.contains("aac"), "{streams}");
}

#[test]
fn a_camera_serves_at_most_sixteen_live_viewers() {
    let running = start("");
    runtime().block_on(async {
        let mut viewers = Vec::new();
        for _ in 0..16 {
            let mut socket = ws(running.api, "demo").await;
            send(&mut socket, json!({"type": "mse", "value": "avc1.640029"})).await;
            let reply = next_json(&mut socket).await.unwrap();
            assert_eq!(reply["type"], "mse", "{reply}");
            viewers.push(socket);
        }
        let mut extra = ws(running.api, "demo").await;
        send(&mut extra, json!({"type": "mse", "value": "avc1.640029"})).await;
        let reply = next_json(&mut extra).await.unwrap();
        assert!(
            reply["value"]
                .as_str()
                .unwrap()
                .contains("already has 16 live viewers"),
            "{reply}"
        );
        // Leaving frees a slot.
        drop(viewers.pop());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut again = ws(running.api, "demo").await;
        send(&mut again, json!({"type": "mse", "value": "avc1.640029"})).await;
        let reply = next_json(&mut again).await.unwrap();
        assert_eq!(reply["type"], "mse", "{reply}");
    });
}

#[test]
fn vigil_stops_cleanly_with_viewers_connected() {
    let mut running = start("");
    let api = running.api;
    let runtime = runtime();
    let (_mse, _mp4) = runtime.block_on(async {
        let mut mse = ws(api, "demo").await;
        send(&mut mse, json!({"type": "mse", "value": ""})).await;
        assert_eq!(next_json(&mut mse).await.unwrap()["type"], "mse");
        let mut mp4 = get(&format!("http://127.0.0.1:{api}/api/stream.mp4?src=demo")).await;
        assert!(mp4.chunk().await.unwrap().is_some());
        (mse, mp4)
    });
    let (status, took) = running.vigil.terminate();
    assert!(status.success(), "exit {status}");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
}
