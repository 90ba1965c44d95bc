// Vigil's panel: a live grid of cameras, a crying badge, the sound level, camera health, the
// night's timeline; its cries are in episodes.js. Every URL is relative, so the page works under
// Home Assistant's ingress path. Plain DOM and <video>: the companion app's Android WebView runs
// it as it is.
"use strict";

// Half a second: the crying badge shows within 2 s of a cry (detection takes about 1.2 s).
const STATE_EVERY_MS = 500;
const HISTORY_EVERY_MS = 60000;
const TIMELINE_HOURS = 12;
/** Tiles narrower than this (CSS pixels) play a camera's sub stream: the main one's detail
 * would not show, and it costs the network and the phone's decoder several times more. */
const SMALL_TILE_PX = 640;
/** A card's stream choice, cycled by its button: auto (by tile size and connection), or forced. */
const STREAM_CHOICES = ["auto", "main", "sub"];

const cards = new Map(); // camera name -> {el, player, camera}
let listening = localStorage.getItem("vigil.listen") || "";
let focused = "";
let cryingKey = ""; // which cameras cry now: the list is reloaded when that changes

function $(sel, root = document) {
  return root.querySelector(sel);
}

function title(name) {
  const s = name.replace(/_/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

async function getJson(path) {
  const res = await fetch(path, { cache: "no-store" });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

// ---- theme -------------------------------------------------------------------------------

function applyTheme() {
  const theme = localStorage.getItem("vigil.theme") || "auto";
  document.documentElement.dataset.theme = theme;
  $("#theme").title = `Theme: ${theme} (tap to change)`;
}

$("#theme").addEventListener("click", () => {
  const order = ["auto", "light", "dark"];
  const now = localStorage.getItem("vigil.theme") || "auto";
  localStorage.setItem("vigil.theme", order[(order.indexOf(now) + 1) % order.length]);
  applyTheme();
});

// ---- listening ---------------------------------------------------------------------------

function applyListening() {
  for (const [name, card] of cards) {
    const video = card.video;
    video.muted = name !== listening;
    if (!video.muted) video.play().catch(() => {});
    card.el.classList.toggle("listening", name === listening);
  }
  const button = $("#listen");
  button.setAttribute("aria-pressed", listening ? "true" : "false");
  $("#listen-label").textContent = listening ? title(listening) : "Listen";
}

function setListening(name) {
  listening = name;
  localStorage.setItem("vigil.listen", name);
  applyListening();
}

$("#listen").addEventListener("click", () => {
  if (listening) {
    setListening("");
    return;
  }
  // One tap is the gesture mobile browsers want before they play sound.
  const first = focused || [...cards.keys()][0] || "";
  setListening(first);
});

// ---- cards -------------------------------------------------------------------------------

function createCard(camera) {
  const el = $("#card").content.firstElementChild.cloneNode(true);
  el.dataset.camera = camera.name;
  $(".name", el).textContent = title(camera.name);
  const video = $("video", el);
  video.setAttribute("aria-label", `${title(camera.name)} live`);
  video.poster = `api/frame.jpeg?src=${encodeURIComponent(camera.name)}&width=640`;
  const card = { el, video, camera, player: null, history: null, remote: false };
  $(".video-box", el).addEventListener("click", () => openFocus(camera.name));
  const timeline = $(".timeline", el);
  timeline.dataset.camera = camera.name;
  timeline.addEventListener("click", onTimelineClick);
  $(".level", el).addEventListener("click", (ev) => {
    ev.stopPropagation();
    setListening(listening === camera.name ? "" : camera.name);
  });
  const streamButton = $(".stream", el);
  streamButton.hidden = !camera.sub;
  streamButton.addEventListener("click", (ev) => {
    ev.stopPropagation();
    const next = STREAM_CHOICES[(STREAM_CHOICES.indexOf(streamChoice(camera.name)) + 1) % STREAM_CHOICES.length];
    localStorage.setItem(`vigil.stream.${camera.name}`, next);
    applyStream(card);
  });
  $("#grid").append(el);
  cards.set(camera.name, card);
  applyStream(card);
  loadHistory(card);
  return card;
}

// ---- main or sub stream ------------------------------------------------------------------

function streamChoice(name) {
  const choice = localStorage.getItem(`vigil.stream.${name}`);
  return STREAM_CHOICES.includes(choice) ? choice : "auto";
}

/** The stream a card should play: the sub stream for a small tile and over MSE (remote access,
 * where WebRTC cannot connect), the main one in the full-screen view and in large tiles on
 * WebRTC; or what the user forced. */
function wantedStream(card) {
  const camera = card.camera;
  if (!camera.sub) return camera.name;
  const choice = streamChoice(camera.name);
  if (choice !== "auto") return choice === "sub" ? camera.sub.name : camera.name;
  if (card.remote) return camera.sub.name;
  if (focused === camera.name) return camera.name;
  const width = $(".video-box", card.el).clientWidth;
  return width < SMALL_TILE_PX ? camera.sub.name : camera.name;
}

/** (Re)starts the card's player on the stream it should play, when that changed. */
function applyStream(card) {
  const src = wantedStream(card);
  const button = $(".stream", card.el);
  const choice = streamChoice(card.camera.name);
  const isSub = card.camera.sub && src === card.camera.sub.name;
  button.textContent = choice === "auto" ? `Auto · ${isSub ? "SD" : "HD"}` : isSub ? "SD" : "HD";
  button.title = choice === "auto"
    ? "Stream chosen by tile size and connection (tap to force the main stream)"
    : choice === "main" ? "Main stream forced (tap for the sub stream)" : "Sub stream forced (tap for automatic)";
  if (card.player && card.player.src === src) return;
  if (card.player) card.player.stop();
  card.video.srcObject = null;
  card.video.removeAttribute("src");
  card.el.dataset.stream = src;
  const player = new LivePlayer(card.video, src, {
    // Once WebRTC failed to connect for this card, it is remote: go straight to MSE.
    mode: card.remote ? "mse" : "auto",
    onState: (s) => {
      if (card.player !== player) return;
      const t = $(".transport", card.el);
      t.textContent = s.transport === "webrtc" ? "WebRTC" : s.transport === "mse" ? "MSE" : s.transport;
      t.title = s.error || "";
      card.el.dataset.transport = s.transport;
      if (s.transport === "mse" && !card.remote) {
        card.remote = true;
        applyStream(card);
      }
    },
  });
  card.player = player;
  player.start();
}

function badge(camera) {
  if (camera.status.state !== "online") {
    return { text: camera.status.state === "connecting" ? "Connecting" : "Offline", cls: "offline" };
  }
  // The detector hears the sub stream when the main stream has no sound.
  const audio = camera.status.audio || (camera.sub && camera.sub.status.audio);
  if (!audio) return { text: "No audio", cls: "muted" };
  if (!camera.detection.enabled) return { text: "Detection off", cls: "muted" };
  if (!camera.detection.available) return { text: "Detection unavailable", cls: "muted" };
  if (!camera.cry) return { text: "Listening…", cls: "muted" };
  if (camera.cry.crying) return { text: "Crying", cls: "crying" };
  return { text: "Quiet", cls: "quiet" };
}

function kbps(n) {
  return n >= 1000 ? `${(n / 1000).toFixed(1)} Mbit/s` : `${n} kbit/s`;
}

/** One stream's health as text parts: state, format, bitrate, sound, viewers, reconnects. */
function streamHealth(s, viewers) {
  const parts = [];
  const dot = `<span class="dot ${s.state}"></span>`;
  if (s.state === "online") {
    parts.push(`${dot}Online`);
    if (s.video) parts.push(`${s.video.codec} ${s.video.width}×${s.video.height}`, `${Math.round(s.video.fps)} fps`);
    parts.push(kbps(s.bitrate_kbps));
    if (s.audio) parts.push(s.audio.restreamed_as ? `${s.audio.codec} → ${s.audio.restreamed_as}` : s.audio.codec);
  } else {
    parts.push(`${dot}${s.state === "connecting" ? "Connecting" : "Offline"}`);
  }
  viewers = viewers || 0;
  parts.push(`${viewers} viewer${viewers === 1 ? "" : "s"}`);
  if (s.reconnects) parts.push(`${s.reconnects} reconnect${s.reconnects === 1 ? "" : "s"}`);
  let html = parts.map((p) => `<span>${p}</span>`).join("");
  if (s.reason) html += `<div class="reason">${escapeHtml(s.reason)}</div>`;
  return html;
}

function health(camera) {
  const main = streamHealth(camera.status, camera.viewers);
  if (!camera.sub) return main + clipsNote(camera);
  return `<div class="stream-health"><b>Main</b>${main}</div>` +
    `<div class="stream-health sub"><b>Sub</b>${streamHealth(camera.sub.status, camera.sub.viewers)}</div>` +
    clipsNote(camera);
}

/** Why no cry clip can be written now (disk nearly full, media folder read-only), if so. */
function clipsNote(camera) {
  const clips = camera.clips;
  if (!clips || clips.state !== "paused" || !clips.reason) return "";
  return `<div class="reason">${escapeHtml(clips.reason)}</div>`;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function levelPercent(dbfs) {
  if (dbfs === null || dbfs === undefined || !isFinite(dbfs)) return 0;
  return Math.max(0, Math.min(100, ((dbfs + 90) / 90) * 100));
}

function updateCard(card, camera) {
  card.camera = camera;
  const el = card.el;
  const b = badge(camera);
  const badgeEl = $(".badge", el);
  badgeEl.textContent = b.text;
  badgeEl.className = `badge ${b.cls}`;
  el.classList.toggle("crying", b.cls === "crying");
  const level = camera.cry ? camera.cry.level_dbfs : null;
  $(".level-fill", el).style.width = `${levelPercent(level)}%`;
  $(".level-text", el).textContent =
    level === null || level === undefined || !isFinite(level) ? "—" : `${Math.round(level)} dBFS`;
  $(".health", el).innerHTML = health(camera);
  if (focused === camera.name) updateFocus(card);
}

// ---- timeline ----------------------------------------------------------------------------

async function loadHistory(card) {
  try {
    card.history = await getJson(
      `api/panel/history?camera=${encodeURIComponent(card.camera.name)}&hours=${TIMELINE_HOURS}`,
    );
  } catch (e) {
    card.history = null;
  }
  drawTimeline($(".timeline", card.el), card.history, false);
  if (focused === card.camera.name) drawTimeline($("#focus-timeline"), card.history, true);
}

/** An SVG of cry score (area) and sound level (line) with cry episodes shaded. */
function drawTimeline(box, history, large) {
  const w = Math.max(200, Math.round(box.clientWidth || 600));
  const h = large ? 160 : 64;
  const now = Date.now();
  const from = now - TIMELINE_HOURS * 3600 * 1000;
  const x = (t) => ((t - from) / (now - from)) * w;
  const yScore = (s) => h - 14 - s * (h - 18);
  const yLevel = (db) => h - 14 - (levelPercent(db) / 100) * (h - 18);
  const parts = [`<svg viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="Cry timeline, last ${TIMELINE_HOURS} hours">`];
  const step = w < 420 ? 3 : large ? 1 : 2;
  for (let i = 0; i <= TIMELINE_HOURS; i += step) {
    const t = now - i * 3600 * 1000;
    const hour = new Date(t).getHours();
    parts.push(`<line class="tick" x1="${x(t)}" x2="${x(t)}" y1="0" y2="${h - 12}"/>`);
    parts.push(`<text class="tick-label" x="${Math.min(w - 12, Math.max(12, x(t)))}" y="${h - 2}">${String(hour).padStart(2, "0")}h</text>`);
  }
  if (history) {
    for (const ep of history.episodes || []) {
      const x1 = x(ep.ended_ms || now);
      // At least 6 px wide, and inside the picture: a finger must be able to tap it.
      const x0 = Math.min(x(Math.max(ep.started_ms, from)), x1 - 6, w - 6);
      const when = new Date(ep.started_ms).toLocaleTimeString() +
        (ep.ended_ms ? " – " + new Date(ep.ended_ms).toLocaleTimeString() : " (now)");
      parts.push(`<rect class="episode" data-started="${ep.started_ms}" x="${x0}" y="0" width="${Math.min(w, x1) - x0}" height="${h - 12}"><title>Crying ${when}, peak ${Math.round(ep.peak_score * 100)}%</title></rect>`);
    }
    const pts = (history.buckets || [])
      .filter((b) => b.start_ms >= from)
      .map((b) => [b.start_ms, b.score, b.level_dbfs]);
    if (pts.length > 1) {
      const area = pts.map((p) => `${x(p[0]).toFixed(1)},${yScore(p[1]).toFixed(1)}`).join(" ");
      parts.push(`<polygon class="score" points="${x(pts[0][0]).toFixed(1)},${h - 14} ${area} ${x(pts[pts.length - 1][0]).toFixed(1)},${h - 14}"/>`);
      const line = pts.map((p) => `${x(p[0]).toFixed(1)},${yLevel(p[2]).toFixed(1)}`).join(" ");
      parts.push(`<polyline class="level-line" points="${line}"/>`);
    }
  }
  parts.push("</svg>");
  box.innerHTML = parts.join("");
}

// ---- focus view --------------------------------------------------------------------------

function openFocus(name) {
  const card = cards.get(name);
  if (!card) return;
  focused = name;
  $("#focus-title").textContent = title(name);
  $("#focus-timeline").dataset.camera = name;
  $("#focus-video").append(card.video); // the same video element; the main stream if wanted
  $("#focus").hidden = false;
  history.pushState({ focus: name }, "");
  applyStream(card);
  updateFocus(card);
  drawTimeline($("#focus-timeline"), card.history, true);
  drawEpisodes();
}

function closeFocus() {
  const card = cards.get(focused);
  if (card) $(".video-box", card.el).prepend(card.video);
  focused = "";
  $("#focus").hidden = true;
  if (card) applyStream(card);
}

function updateFocus(card) {
  const b = badge(card.camera);
  const el = $("#focus-badge");
  el.textContent = b.text;
  el.className = `badge ${b.cls}`;
  $("#focus-details").innerHTML = health(card.camera);
}

$("#back").addEventListener("click", () => history.back());
window.addEventListener("popstate", () => {
  if (episodeOpen) closeEpisode();
  else if (focused) closeFocus();
});
document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape" && (episodeOpen || focused)) history.back();
});

// ---- the loop ----------------------------------------------------------------------------

async function refresh() {
  let state;
  try {
    state = await getJson("api/panel/state");
    document.body.classList.remove("disconnected");
  } catch (e) {
    document.body.classList.add("disconnected");
    return;
  }
  const mqtt = $("#mqtt");
  mqtt.textContent = `MQTT ${state.mqtt.state.replace(/_/g, " ")}`;
  mqtt.title = state.mqtt.detail || "";
  mqtt.className = `chip ${state.mqtt.state}`;
  $("#empty").hidden = state.cameras.length > 0;
  for (const camera of state.cameras) {
    const card = cards.get(camera.name) || createCard(camera);
    updateCard(card, camera);
  }
  applyListening();
  // A cry began or ended: the list and the timelines show it now, and again a moment later,
  // once the onset's picture is kept.
  const nowCrying = state.cameras.map((c) => `${c.name}:${!!(c.cry && c.cry.crying)}`).join(",");
  if (nowCrying !== cryingKey) {
    const first = !cryingKey;
    cryingKey = nowCrying;
    loadEpisodes();
    if (!first) {
      cards.forEach(loadHistory);
      setTimeout(loadEpisodes, 3000);
    }
  }
}

applyTheme();
refresh();
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    for (const card of cards.values()) {
      drawTimeline($(".timeline", card.el), card.history, false);
      applyStream(card);
    }
    const card = cards.get(focused);
    if (card) drawTimeline($("#focus-timeline"), card.history, true);
  }, 200);
});
setInterval(refresh, STATE_EVERY_MS);
setInterval(() => {
  cards.forEach(loadHistory);
  loadEpisodes();
}, HISTORY_EVERY_MS);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refresh();
});
