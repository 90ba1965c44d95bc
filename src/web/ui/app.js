// Vigil's panel: a live grid of cameras, a crying badge, the sound level, camera health and the
// night's timeline. Every URL is relative, so the page works under Home Assistant's ingress path.
"use strict";

// Half a second: the crying badge shows within 2 s of a cry (detection takes about 1.2 s).
const STATE_EVERY_MS = 500;
const HISTORY_EVERY_MS = 60000;
const TIMELINE_HOURS = 12;

const cards = new Map(); // camera name -> {el, player, camera}
let listening = localStorage.getItem("vigil.listen") || "";
let focused = "";

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
  const card = { el, video, camera, player: null, history: null };
  card.player = new LivePlayer(video, camera.name, {
    onState: (s) => {
      const t = $(".transport", el);
      t.textContent = s.transport === "webrtc" ? "WebRTC" : s.transport === "mse" ? "MSE" : s.transport;
      t.title = s.error || "";
      el.dataset.transport = s.transport;
    },
  });
  $(".video-box", el).addEventListener("click", () => openFocus(camera.name));
  $(".level", el).addEventListener("click", (ev) => {
    ev.stopPropagation();
    setListening(listening === camera.name ? "" : camera.name);
  });
  $("#grid").append(el);
  cards.set(camera.name, card);
  card.player.start();
  loadHistory(card);
  return card;
}

function badge(camera) {
  if (camera.status.state !== "online") {
    return { text: camera.status.state === "connecting" ? "Connecting" : "Offline", cls: "offline" };
  }
  if (!camera.status.audio) return { text: "No audio", cls: "muted" };
  if (!camera.detection.enabled) return { text: "Detection off", cls: "muted" };
  if (!camera.detection.available) return { text: "Detection unavailable", cls: "muted" };
  if (!camera.cry) return { text: "Listening…", cls: "muted" };
  if (camera.cry.crying) return { text: "Crying", cls: "crying" };
  return { text: "Quiet", cls: "quiet" };
}

function kbps(n) {
  return n >= 1000 ? `${(n / 1000).toFixed(1)} Mbit/s` : `${n} kbit/s`;
}

function health(camera) {
  const s = camera.status;
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
  const viewers = camera.viewers || 0;
  parts.push(`${viewers} viewer${viewers === 1 ? "" : "s"}`);
  if (s.reconnects) parts.push(`${s.reconnects} reconnect${s.reconnects === 1 ? "" : "s"}`);
  let html = parts.map((p) => `<span>${p}</span>`).join("");
  if (s.reason) html += `<div class="reason">${escapeHtml(s.reason)}</div>`;
  return html;
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
      const x0 = x(Math.max(ep.started_ms, from));
      const x1 = x(ep.ended_ms || now);
      const when = new Date(ep.started_ms).toLocaleTimeString() +
        (ep.ended_ms ? " – " + new Date(ep.ended_ms).toLocaleTimeString() : " (now)");
      parts.push(`<rect class="episode" x="${x0}" y="0" width="${Math.max(2, x1 - x0)}" height="${h - 12}"><title>Crying ${when}, peak ${Math.round(ep.peak_score * 100)}%</title></rect>`);
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
  $("#focus-video").append(card.video); // the same player: no second connection
  $("#focus").hidden = false;
  history.pushState({ focus: name }, "");
  updateFocus(card);
  drawTimeline($("#focus-timeline"), card.history, true);
}

function closeFocus() {
  const card = cards.get(focused);
  if (card) $(".video-box", card.el).prepend(card.video);
  focused = "";
  $("#focus").hidden = true;
}

function updateFocus(card) {
  const b = badge(card.camera);
  const el = $("#focus-badge");
  el.textContent = b.text;
  el.className = `badge ${b.cls}`;
  $("#focus-details").innerHTML = health(card.camera);
}

$("#back").addEventListener("click", () => history.back());
window.addEventListener("popstate", () => focused && closeFocus());
document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape" && focused) history.back();
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
}

applyTheme();
refresh();
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    for (const card of cards.values()) drawTimeline($(".timeline", card.el), card.history, false);
    const card = cards.get(focused);
    if (card) drawTimeline($("#focus-timeline"), card.history, true);
  }, 200);
});
setInterval(refresh, STATE_EVERY_MS);
setInterval(() => cards.forEach(loadHistory), HISTORY_EVERY_MS);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refresh();
});
