// Vigil's live player: WebRTC first (lowest delay on the home network), MSE over WebSocket when
// WebRTC does not deliver a frame in time (remote access through Home Assistant's ingress or a
// tunnel). Both speak go2rtc's WebSocket protocol on api/ws?src=<camera>, relative to the page,
// so they work under the ingress path prefix.
"use strict";

/** How long WebRTC gets to show a first frame before MSE takes over. */
const WEBRTC_TIMEOUT_MS = 2500;
/** How far behind the live edge MSE playback may fall before it jumps forward. */
const MSE_MAX_LAG_S = 1.5;

/** The codecs this browser can play from MP4, in go2rtc's MSE offer form. */
function mseCodecs() {
  const MS = window.ManagedMediaSource || window.MediaSource;
  if (!MS) return "";
  const candidates = [
    "avc1.640029", "avc1.64002A", "avc1.640033", "hvc1.1.6.L153.B0",
    "mp4a.40.2", "mp4a.40.5", "flac", "opus",
  ];
  return candidates
    .filter((c) => MS.isTypeSupported(`video/mp4; codecs="${c}"`))
    .join();
}

function wsUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

class LivePlayer {
  /**
   * @param {HTMLVideoElement} video
   * @param {string} src camera name
   * @param {{mode?: "auto"|"webrtc"|"mse", onState?: (s: {transport: string, error?: string}) => void}} options
   */
  constructor(video, src, options = {}) {
    this.video = video;
    this.src = src;
    this.mode = options.mode || "auto";
    this.onState = options.onState || (() => {});
    this.ws = null;
    this.pc = null;
    this.timer = null;
    this.closed = false;
    this.transport = "";
    this.retryTimer = null;
    this.watchdog = null;
  }

  start() {
    this.closed = false;
    if (this.mode !== "mse" && window.RTCPeerConnection) {
      this.startWebRTC();
    } else {
      this.startMSE();
    }
  }

  stop() {
    this.closed = true;
    this.teardown();
    clearTimeout(this.retryTimer);
  }

  teardown() {
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close();
      this.ws = null;
    }
    if (this.pc) {
      this.pc.close();
      this.pc = null;
    }
  }

  setState(transport, error) {
    if (this.closed) return;
    this.transport = transport;
    this.onState({ transport, error });
  }

  /** Reconnects after a lost connection, as long as the player is wanted. */
  retry(reason) {
    if (this.closed) return;
    this.teardown();
    this.setState("reconnecting", reason);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.start(), 1000);
  }

  openSocket() {
    const ws = new WebSocket(wsUrl(`api/ws?src=${encodeURIComponent(this.src)}`));
    ws.binaryType = "arraybuffer";
    ws.onclose = () => this.retry("connection lost");
    this.ws = ws;
    return ws;
  }

  startWebRTC() {
    this.setState("connecting");
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    pc.ontrack = (ev) => {
      stream.addTrack(ev.track);
      if (this.video.srcObject !== stream) this.video.srcObject = stream;
    };
    const ws = this.openSocket();
    pc.onicecandidate = (ev) => {
      if (ev.candidate && ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify({ type: "webrtc/candidate", value: ev.candidate.candidate }));
      }
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") this.fallback("WebRTC connection failed");
    };
    ws.onopen = async () => {
      try {
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        ws.send(JSON.stringify({ type: "webrtc/offer", value: pc.localDescription.sdp }));
      } catch (e) {
        this.fallback(`WebRTC offer failed: ${e}`);
      }
    };
    ws.onmessage = async (ev) => {
      if (typeof ev.data !== "string") return;
      const msg = JSON.parse(ev.data);
      try {
        if (msg.type === "webrtc/answer") {
          await pc.setRemoteDescription({ type: "answer", sdp: msg.value });
        } else if (msg.type === "webrtc/candidate" && msg.value) {
          await pc.addIceCandidate({ candidate: msg.value, sdpMid: "0" });
        } else if (msg.type === "error") {
          this.fallback(msg.value);
        }
      } catch (e) {
        this.fallback(`WebRTC: ${e}`);
      }
    };
    const onFrame = () => {
      clearTimeout(this.timer);
      this.setState("webrtc");
      this.watchFrames();
    };
    this.video.addEventListener("playing", onFrame, { once: true });
    this.video.play().catch(() => {});
    this.timer = setTimeout(() => {
      this.video.removeEventListener("playing", onFrame);
      this.fallback("no WebRTC video in time");
    }, WEBRTC_TIMEOUT_MS);
  }

  fallback(reason) {
    if (this.closed || this.transport === "mse") return;
    if (this.mode === "webrtc") {
      this.retry(reason);
      return;
    }
    this.teardown();
    this.video.srcObject = null;
    this.startMSE(reason);
  }

  startMSE(reason) {
    const MS = window.ManagedMediaSource || window.MediaSource;
    if (!MS) {
      this.setState("error", "this browser plays neither WebRTC nor MSE");
      return;
    }
    this.setState("connecting", reason);
    const ms = new MS();
    this.video.disableRemotePlayback = true;
    this.video.srcObject = null;
    this.video.src = URL.createObjectURL(ms);
    const queue = [];
    let sb = null;
    const pump = () => {
      if (!sb || sb.updating || queue.length === 0) return;
      try {
        sb.appendBuffer(queue.shift());
      } catch (e) {
        // QuotaExceeded: drop what is played and go on.
        queue.length = 0;
        this.trim(sb, true);
      }
    };
    ms.addEventListener("sourceopen", () => {
      const ws = this.openSocket();
      ws.onopen = () => ws.send(JSON.stringify({ type: "mse", value: mseCodecs() }));
      ws.onmessage = (ev) => {
        if (typeof ev.data === "string") {
          const msg = JSON.parse(ev.data);
          if (msg.type === "mse") {
            sb = ms.addSourceBuffer(msg.value);
            sb.mode = "segments";
            sb.addEventListener("updateend", () => {
              this.keepLive(sb);
              pump();
            });
          } else if (msg.type === "error") {
            this.setState("error", msg.value);
          }
          return;
        }
        queue.push(ev.data);
        pump();
      };
    }, { once: true });
    this.video.addEventListener("playing", () => {
      this.setState("mse", reason);
      this.watchFrames();
    }, { once: true });
    this.video.play().catch(() => {});
  }

  /** Stays at the live edge: a baby monitor shows now, not what was buffered. */
  keepLive(sb) {
    const b = this.video.buffered;
    if (b.length === 0) return;
    const end = b.end(b.length - 1);
    if (end - this.video.currentTime > MSE_MAX_LAG_S) {
      this.video.currentTime = end - 0.2;
    }
    if (this.video.paused) this.video.play().catch(() => {});
    this.trim(sb, false);
  }

  trim(sb, hard) {
    const b = sb.buffered;
    if (b.length === 0 || sb.updating) return;
    const keepFrom = this.video.currentTime - (hard ? 1 : 10);
    if (keepFrom - b.start(0) > (hard ? 0 : 20)) {
      try {
        sb.remove(b.start(0), keepFrom);
      } catch (e) { /* removal is best effort */ }
    }
  }

  /** Reconnects when the picture freezes (a lost network path that no socket noticed). */
  watchFrames() {
    clearInterval(this.watchdog);
    if (this.closed) return;
    let last = -1;
    let still = 0;
    this.watchdog = setInterval(() => {
      const t = this.video.currentTime;
      still = t === last ? still + 1 : 0;
      last = t;
      if (still >= 5) this.retry("the picture stopped");
    }, 1000);
  }
}

window.LivePlayer = LivePlayer;
