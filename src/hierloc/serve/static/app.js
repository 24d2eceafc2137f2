// hierloc's page: pick or drop photos, see each model's answers and a zoomable world map.
// Plain JS, no build step, nothing loaded from elsewhere (the page's CSP is default-src 'self').
"use strict";

const $ = (id) => document.getElementById(id);
const LEVELS = ["country", "region", "subregion", "city"];
const state = { models: [], limits: null, token: sessionStorage.getItem("hierloc-token") || "",
                photos: [], zoom: 1, x: 0, y: 0, selected: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

async function api(path, options = {}) {
  // the exported site (hierloc export --web) answers in the page itself: local.js
  if (window.hierlocLocal) return window.hierlocLocal.api(path, options);
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const res = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await res.json(); } catch (e) { body = { error: res.statusText }; }
  return { status: res.status, body };
}

async function loadModels() {
  const status = $("models-status");
  const { status: code, body } = await api("/v1/models");
  if (code === 401) {
    $("token-field").hidden = false;
    status.textContent = "this server needs an access token (above), then reload";
    return;
  }
  if (code === 503) {
    status.textContent = "models are loading…";
    setTimeout(loadModels, 1000);
    return;
  }
  if (code !== 200) { status.textContent = body.error || "cannot list the models"; return; }
  state.models = body.models;
  state.limits = body.limits;
  status.remove();
  body.models.forEach((m, i) => {
    const box = el("input", { type: "checkbox", value: m.name, id: "model-" + i });
    box.checked = i === 0;
    const label = el("label", { for: "model-" + i }, box,
      " " + m.name + " (" + m.family + (m.encoder ? ", " + m.encoder : "") + ")");
    $("models").append(label);
  });
}

function chosenModels() {
  const boxes = [...document.querySelectorAll("#models input:checked")].map((b) => b.value);
  return boxes.length ? boxes : state.models.slice(0, 1).map((m) => m.name);
}

async function locate(files) {
  if (!state.models.length) { $("status").textContent = "no model is ready yet"; return; }
  const topK = Math.max(1, Math.min(20, parseInt($("top-k").value, 10) || 3));
  const models = chosenModels();
  const per = (state.limits && state.limits.max_photos) || 16;
  const entries = files.map((f) => ({ file: f, url: URL.createObjectURL(f), byModel: {},
                                      rejected: null, gps: null }));
  state.photos.unshift(...entries);
  render();
  for (let s = 0; s < entries.length; s += per) {
    const chunk = entries.slice(s, s + per);
    for (const model of models) {
      $("status").textContent = "locating " + chunk.length + " photo(s) with " + model + "…";
      const form = new FormData();
      chunk.forEach((e) => form.append("photos", e.file, e.file.name));
      form.append("top_k", String(topK));
      form.append("model", model);
      const { status, body } = await api("/v1/locate", { method: "POST", body: form });
      if (status === 200) {
        const results = body.results || [];
        const rejected = body.rejected || [];
        chunk.forEach((e, i) => {  // matched by position in the request
          const r = results.find((x) => x.index === i);
          const bad = rejected.find((x) => x.index === i);
          if (r) { e.byModel[model] = r.answers; e.gps = r.exif_gps; }
          else if (bad) e.rejected = bad.reason;
        });
      } else {
        chunk.forEach((e) => { e.rejected = body.error || ("HTTP " + status); });
      }
      render();
    }
  }
  $("status").textContent = "done";
}

function pct(v) { return v === null || v === undefined || isNaN(v) ? "—" : Math.round(100 * v) + "%"; }

function answerItem(a) {
  const names = a.places.slice().reverse().map((p) => p.name).join(", ");
  const li = el("li", {}, el("div", { class: "place", text: names }),
    el("div", { class: "coords",
      text: a.latitude.toFixed(3) + ", " + a.longitude.toFixed(3) + " · confidence " + pct(a.confidence) }));
  if (a.error_km !== undefined) {
    li.append(el("div", { class: "err", text: "error " + Math.round(a.error_km).toLocaleString() + " km" }));
  }
  if (!a.places.some((p) => p.confidence !== null && p.confidence !== undefined)) return li;
  const bars = el("div", { class: "bars", role: "list", "aria-label": "confidence per level" });
  for (const p of a.places) {
    const fill = el("span");
    fill.style.width = Math.round(100 * (p.confidence || 0)) + "%";
    bars.append(el("span", { text: p.level, role: "listitem" }), el("div", { class: "bar" }, fill),
                el("span", { text: pct(p.confidence) }));
  }
  li.append(bars);
  return li;
}

function render() {
  const root = $("results");
  root.replaceChildren();
  state.photos.forEach((e, k) => {
    const card = el("article", { class: "card", tabindex: "0", "aria-label": e.file.name });
    card.append(el("img", { class: "thumb", src: e.url, alt: "photo " + e.file.name }));
    const body = el("div", {}, el("h2", { text: e.file.name }));
    if (e.gps) {
      body.append(el("p", { class: "err",
        text: "EXIF GPS: " + e.gps.latitude.toFixed(4) + ", " + e.gps.longitude.toFixed(4) }));
    }
    if (e.rejected) body.append(el("p", { class: "reject", text: "could not be located: " + e.rejected }));
    const cols = el("div", { class: "columns" });
    for (const [model, answers] of Object.entries(e.byModel)) {
      const ol = el("ol", { class: "answers" });
      answers.forEach((a) => ol.append(answerItem(a)));
      cols.append(el("div", { class: "column" }, el("h3", { text: model }), ol));
    }
    if (!e.rejected && !Object.keys(e.byModel).length) body.append(el("p", { class: "muted", text: "locating…" }));
    body.append(cols);
    card.append(body);
    const focus = () => { state.selected = k; drawMarkers(); };
    card.addEventListener("focus", focus);
    card.addEventListener("mouseenter", focus);
    root.append(card);
  });
  drawMarkers();
}

// -- the map: equirectangular, x = lon + 180, y = 90 − lat in a 360 × 180 view box ---------
function drawMarkers() {
  const layer = $("overlay");
  layer.replaceChildren();
  const r = 2.2 / state.zoom;
  state.photos.forEach((e, k) => {
    const dim = state.selected !== null && state.selected !== k ? " dim" : "";
    for (const [model, answers] of Object.entries(e.byModel)) {
      answers.slice().reverse().forEach((a) => {
        const top = a.rank === 1;
        const c = svg("circle", { cx: a.longitude + 180, cy: 90 - a.latitude, r: top ? r * 1.4 : r,
          class: "answer" + (top ? " top" : "") + dim, "stroke-width": 0.4 / state.zoom });
        c.append(svg("title"));
        c.firstChild.textContent = e.file.name + " · " + model + " #" + a.rank + ": " +
          a.places.slice().reverse().map((p) => p.name).join(", ");
        layer.append(c);
      });
      if (e.gps && answers.length) {
        const a = answers[0];
        layer.append(svg("line", { x1: e.gps.longitude + 180, y1: 90 - e.gps.latitude,
          x2: a.longitude + 180, y2: 90 - a.latitude, class: "link" + dim,
          "stroke-width": 0.5 / state.zoom }));
      }
    }
    if (e.gps) {
      layer.append(svg("rect", { x: e.gps.longitude + 180 - r, y: 90 - e.gps.latitude - r,
        width: 2 * r, height: 2 * r, class: "truth" + dim, "stroke-width": 0.4 / state.zoom }));
    }
  });
}

function applyView() {
  const map = $("map");
  const w = map.clientWidth, h = map.clientHeight;
  state.zoom = Math.max(1, Math.min(32, state.zoom));
  state.x = Math.min(0, Math.max(w - w * state.zoom, state.x));
  state.y = Math.min(0, Math.max(h - h * state.zoom, state.y));
  $("map-inner").style.transform = "translate(" + state.x + "px," + state.y + "px) scale(" + state.zoom + ")";
  drawMarkers();
}

function zoomAt(factor, cx, cy) {
  const map = $("map");
  if (cx === undefined) { cx = map.clientWidth / 2; cy = map.clientHeight / 2; }
  const z = Math.max(1, Math.min(32, state.zoom * factor));
  state.x = cx - (cx - state.x) * (z / state.zoom);
  state.y = cy - (cy - state.y) * (z / state.zoom);
  state.zoom = z;
  applyView();
}

function setupMap() {
  const map = $("map");
  map.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const box = map.getBoundingClientRect();
    zoomAt(ev.deltaY < 0 ? 1.25 : 0.8, ev.clientX - box.left, ev.clientY - box.top);
  }, { passive: false });
  let drag = null;
  map.addEventListener("pointerdown", (ev) => {
    drag = { x: ev.clientX - state.x, y: ev.clientY - state.y };
    map.setPointerCapture(ev.pointerId);
    map.classList.add("dragging");
  });
  map.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    state.x = ev.clientX - drag.x;
    state.y = ev.clientY - drag.y;
    applyView();
  });
  const stop = () => { drag = null; map.classList.remove("dragging"); };
  map.addEventListener("pointerup", stop);
  map.addEventListener("pointercancel", stop);
  map.addEventListener("keydown", (ev) => {
    const step = 40;
    const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (moves[ev.key]) { state.x += moves[ev.key][0]; state.y += moves[ev.key][1]; applyView(); ev.preventDefault(); }
    else if (ev.key === "+" || ev.key === "=") { zoomAt(1.25); ev.preventDefault(); }
    else if (ev.key === "-") { zoomAt(0.8); ev.preventDefault(); }
  });
  $("zoom-in").addEventListener("click", () => zoomAt(1.5));
  $("zoom-out").addEventListener("click", () => zoomAt(1 / 1.5));
  $("zoom-reset").addEventListener("click", () => { state.zoom = 1; state.x = 0; state.y = 0; applyView(); });
  window.addEventListener("resize", applyView);
}

function setupInput() {
  const drop = $("drop");
  $("files").addEventListener("change", (ev) => {
    const files = [...ev.target.files];
    ev.target.value = "";
    if (files.length) locate(files);
  });
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    const files = [...ev.dataTransfer.files];
    if (files.length) locate(files);
  });
  $("token").value = state.token;
  $("token").addEventListener("change", (ev) => {
    state.token = ev.target.value.trim();
    sessionStorage.setItem("hierloc-token", state.token);
    loadModels();
  });
  if (state.token) $("token-field").hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  setupMap();
  setupInput();
  loadModels();
});
