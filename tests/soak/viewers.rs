//! The soak's viewers: MSE viewers over WebSocket that stay the whole run (and reconnect when
//! closed), and the ones that misbehave: an RTSP player killed with SIGKILL, one frozen with
//! SIGSTOP (a reader that stops reading), a WebSocket that never reads, and one whose socket is
//! reset without a goodbye.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::common::{die_with_test, signal};

type Ws = tokio_tungstenite::WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Asks for MSE on a fresh WebSocket to `camera`; `None` when refused.
async fn mse_socket(api_port: u16, camera: &str) -> Option<Ws> {
    let url = format!("ws://127.0.0.1:{api_port}/api/ws?src={camera}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.ok()?;
    let request = serde_json::json!({"type": "mse", "value": ""}).to_string();
    socket.send(Message::text(request)).await.ok()?;
    Some(socket)
}

/// An MSE viewer for the whole run: reads everything, counts bytes, reconnects when closed.
pub struct MseViewer {
    pub bytes: Arc<AtomicU64>,
    pub sessions: Arc<AtomicU64>,
}

impl MseViewer {
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        api_port: u16,
        camera: &str,
        stop: CancellationToken,
    ) -> Self {
        let bytes = Arc::new(AtomicU64::new(0));
        let sessions = Arc::new(AtomicU64::new(0));
        let (counted, opened, camera) = (bytes.clone(), sessions.clone(), camera.to_string());
        runtime.spawn(async move {
            while !stop.is_cancelled() {
                if let Some(mut socket) = mse_socket(api_port, &camera).await {
                    opened.fetch_add(1, Ordering::Relaxed);
                    loop {
                        let message = tokio::select! {
                            _ = stop.cancelled() => return,
                            message = socket.next() => message,
                        };
                        match message {
                            Some(Ok(Message::Binary(data))) => {
                                counted.fetch_add(data.len() as u64, Ordering::Relaxed);
                            }
                            Some(Ok(_)) => {}
                            None | Some(Err(_)) => break,
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self { bytes, sessions }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// How many times it connected (once, plus once per close it saw).
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }
}

/// A WebSocket MSE viewer whose receive window is tiny and who never reads.
pub async fn stuck_mse(api_port: u16, camera: &str) -> Option<Ws> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.set_recv_buffer_size(2048).ok()?;
    let stream = socket
        .connect(format!("127.0.0.1:{api_port}").parse().ok()?)
        .await
        .ok()?;
    let url = format!("ws://127.0.0.1:{api_port}/api/ws?src={camera}");
    let (mut socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .ok()?;
    let request = serde_json::json!({"type": "mse", "value": ""}).to_string();
    socket.send(Message::text(request)).await.ok()?;
    Some(socket)
}

/// An MSE viewer that reads its first media, then vanishes: its socket is reset (no close
/// frame, no FIN), as when a phone leaves Wi-Fi. True when it got media first.
pub async fn vanishing_mse(api_port: u16, camera: &str) -> bool {
    let Some(mut socket) = mse_socket(api_port, camera).await else {
        return false;
    };
    let mut got_media = false;
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(10), socket.next()).await
    {
        if matches!(message, Message::Binary(_)) {
            got_media = true;
            break;
        }
    }
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    }
    drop(socket);
    got_media
}

/// `gst-launch-1.0` playing `url` over RTSP/TCP into a fakesink: a player in its own process,
/// to be killed or frozen.
pub struct PlayerProcess(Child);

impl PlayerProcess {
    pub fn start(url: &str) -> Self {
        let child = die_with_test(&mut Command::new("gst-launch-1.0"))
            .args(["-q", "rtspsrc", &format!("location={url}")])
            .args(["protocols=tcp", "!", "fakesink"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gst-launch-1.0 is needed (gstreamer1.0-tools)");
        Self(child)
    }

    /// Stops reading without closing: the socket stays open and fills.
    pub fn freeze(&self) {
        signal(self.0.id(), "STOP");
    }

    /// SIGKILL: the connection drops without a TEARDOWN.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for PlayerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
