// The panel's list of the night's cries (every camera's under the grid, one camera's in its
// full view) and the view of one cry: its clip in a <video controls> (seeking included), or its
// picture while the clip is being written or when there is none. Loaded after app.js, whose
// helpers ($, title, getJson, cards, focused) it uses; app.js calls loadEpisodes, drawEpisodes,
// onTimelineClick and closeEpisode.
"use strict";

let episodes = []; // the night's cries, every camera, newest first
let episodeOpen = false;
let episodeWait = null; // while an opened cry's clip is being written: the timer asking again
let episodePart = 0; // which of the opened cry's clips plays (a long cry has one per 2 minutes)
let episodeShown = null; // the opened cry

async function loadEpisodes() {
  try {
    episodes = (await getJson(`api/panel/episodes?hours=${TIMELINE_HOURS}`)).episodes || [];
  } catch (e) {
    return;
  }
  drawEpisodes();
}

function pad(n) {
  return String(n).padStart(2, "0");
}

/** A cry's start as the clock showed it: 03:12. */
function clock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** How long a cry lasted: "25 s", "1 min 5 s", or "crying now". */
function lasted(ep) {
  if (!ep.ended_ms) return "crying now";
  const s = Math.max(1, Math.round((ep.ended_ms - ep.started_ms) / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
}

function peak(ep) {
  return `peak ${Math.round(ep.peak_score * 100)} %`;
}

/** A clip's URL: its path under the clips folder, each part escaped, relative to the panel. */
function clipUrl(path) {
  return "api/clips/" + path.split("/").map(encodeURIComponent).join("/");
}

function episodeItem(ep, showCamera) {
  const li = $("#episode-item").content.firstElementChild.cloneNode(true);
  const button = $(".episode-item", li);
  button.dataset.camera = ep.camera;
  button.dataset.started = ep.started_ms;
  button.classList.toggle("ongoing", !ep.ended_ms);
  $(".ep-time", li).textContent = clock(ep.started_ms);
  $(".ep-camera", li).textContent = showCamera ? title(ep.camera) : "";
  $(".ep-duration", li).textContent = lasted(ep);
  $(".ep-peak", li).textContent = peak(ep);
  $(".ep-clip", li).textContent = ep.clips && ep.clips.length ? " · ▶ clip" : "";
  if (ep.picture) {
    const img = $("img", li);
    img.src = ep.picture;
    img.hidden = false;
  }
  button.addEventListener("click", () => openEpisode(ep.camera, ep.started_ms));
  return li;
}

/** Fills `list` with `items`, unless they are what it already shows (no flicker). */
function drawEpisodeList(list, items, showCamera) {
  const key = JSON.stringify(items.map((e) => [e.camera, e.started_ms, e.ended_ms, e.peak_score, e.picture, e.clips, showCamera]));
  list.parentElement.querySelector(".episodes-empty").hidden = items.length > 0;
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  fill(list, items.map((ep) => episodeItem(ep, showCamera)));
}

function drawEpisodes() {
  drawEpisodeList($("#episode-list"), episodes, cards.size > 1);
  if (focused) drawEpisodeList($("#focus-episodes"), episodes.filter((e) => e.camera === focused), false);
}

/** An episode by camera and start: from the list, else from the camera's timeline. */
function findEpisode(camera, started) {
  const listed = episodes.find((e) => e.camera === camera && e.started_ms === started);
  if (listed) return listed;
  const card = cards.get(camera);
  const timeline = (card && card.history && card.history.episodes) || [];
  const ep = timeline.find((e) => e.started_ms === started);
  if (!ep) return null;
  // The timeline knows the clips' paths, not whether they are finished: asked again when shown.
  const clips = (ep.clips || []).map((path) => ({ path, ready: false }));
  return Object.assign({}, ep, { camera, clips, picture: null });
}

function onTimelineClick(ev) {
  const rect = ev.target.closest && ev.target.closest("rect.episode");
  if (!rect) return;
  ev.stopPropagation();
  openEpisode(ev.currentTarget.dataset.camera, Number(rect.dataset.started));
}

/** Opens a cry: its clip with the player's controls (seeking included) once it is finished;
 * until then, or without a clip, its picture with a note. */
function openEpisode(camera, started) {
  const ep = findEpisode(camera, started);
  if (!ep) return;
  $("#episode-title").textContent = `${title(camera)} · ${clock(ep.started_ms)}`;
  $("#episode-details").textContent = `${lasted(ep)} · ${peak(ep)}`;
  episodePart = 0;
  showEpisode(ep);
  $("#episode").hidden = false;
  if (!episodeOpen) history.pushState({ episode: started }, "");
  episodeOpen = true;
}

function showEpisode(ep) {
  const video = $("#episode-video");
  const picture = $("#episode-picture");
  const note = $("#episode-note");
  clearTimeout(episodeWait);
  episodeWait = null;
  episodeShown = ep;
  const clips = ep.clips || [];
  episodePart = Math.min(episodePart, Math.max(0, clips.length - 1));
  drawParts(clips);
  const clip = clips[episodePart];
  if (clip && clip.ready) {
    note.hidden = true;
    picture.hidden = true;
    video.hidden = false;
    const src = clipUrl(clip.path);
    if (video.getAttribute("src") !== src) {
      video.poster = ep.picture || "";
      video.src = src;
      video.play().catch(() => {});
    }
    return;
  }
  stopClip();
  video.hidden = true;
  picture.hidden = !ep.picture;
  if (ep.picture) picture.src = ep.picture;
  if (clip || !ep.ended_ms) {
    note.textContent = "Its clip is being recorded: it plays here a few seconds after the cry ends.";
    episodeWait = setTimeout(() => refreshOpenEpisode(ep.camera, ep.started_ms), 2000);
  } else {
    note.textContent = "No clip of this cry.";
  }
  note.hidden = false;
}

/** Asks again about a cry whose clip is being written, and plays it once it is finished. */
async function refreshOpenEpisode(camera, started) {
  await loadEpisodes();
  if (!episodeOpen) return;
  const ep = findEpisode(camera, started);
  if (ep) {
    $("#episode-details").textContent = `${lasted(ep)} · ${peak(ep)}`;
    showEpisode(ep);
  }
}

/** A button per clip when a cry has several (one per 2 minutes of crying). */
function drawParts(clips) {
  const parts = $("#episode-parts");
  parts.hidden = clips.length < 2;
  fill(parts, clips.length < 2 ? [] : clips.map((clip, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn small";
    button.textContent = `Part ${i + 1}`;
    button.setAttribute("aria-pressed", i === episodePart ? "true" : "false");
    button.addEventListener("click", () => {
      episodePart = i;
      showEpisode(episodeShown);
    });
    return button;
  }));
}

/** Replaces `parent`'s children with `children` (older WebViews lack replaceChildren). */
function fill(parent, children) {
  parent.textContent = "";
  for (const child of children) parent.appendChild(child);
}

function stopClip() {
  const video = $("#episode-video");
  video.pause();
  video.removeAttribute("src");
  video.removeAttribute("poster");
  video.load();
}

function closeEpisode() {
  clearTimeout(episodeWait);
  episodeWait = null;
  stopClip();
  $("#episode").hidden = true;
  episodeOpen = false;
}

$("#episode-back").addEventListener("click", () => history.back());
// One part after the other, as one cry.
$("#episode-video").addEventListener("ended", () => {
  const clips = (episodeShown && episodeShown.clips) || [];
  if (episodeOpen && episodePart + 1 < clips.length) {
    episodePart += 1;
    showEpisode(episodeShown);
  }
});
$("#episode-video").addEventListener("error", () => {
  if (!$("#episode-video").getAttribute("src")) return;
  const note = $("#episode-note");
  note.textContent = "This clip cannot be played yet: it is still being recorded, or it was removed.";
  note.hidden = false;
});

$("#focus-timeline").addEventListener("click", onTimelineClick);
