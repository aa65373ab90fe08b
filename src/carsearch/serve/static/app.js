// carsearch web page: plain JS over the /api/v1 JSON API. The URL holds the query (q, neg, like,
// filters, page) so a search can be shared and a reload restores it; an uploaded image stays in the page.
"use strict";

// the filters come from the index row's declaration (carsearch.core.columns), served by /api/v1/info:
// `chips` ones are facet chips on the left, `scope` ones (camera) checkboxes in the "where and when" panel
let FILTERS = [];  // facet chips on the left
let REQUEST_FILTERS = [];  // every filter a search sends
let LABELS = {};
let INPUTS = [];  // filters typed into a box beside the search bar (page "input": the plate)
const SWATCH = { red: "#d7261e", blue: "#2458c6", green: "#2f9a47", yellow: "#f2c916", white: "#ffffff", black: "#16181b",
  silver: "#c3c8ce", grey: "#7d848c", orange: "#f07c12", purple: "#7c3fb5", brown: "#7a4d2b" };
const $ = (id) => document.getElementById(id);

// after / before: the text the API reads (2026-03-01T09:00, a date; UTC like the times shown); sort: score | time
const state = { q: "", neg: "", like: null, filters: {}, after: "", before: "", sort: "score", page: 1, balance: 0.5,
  image: null, imageUrl: null };
const SPEEDS = ["min_speed", "max_speed"];
let pageSize = 24;
let last = null;
let inflight = null;
let renders = 0;  // body[data-renders]: how many result sets were drawn (tests wait on it)

function readURL() {
  const p = new URLSearchParams(location.search);
  state.q = p.get("q") || "";
  state.neg = p.get("neg") || "";
  state.like = p.get("like") || null;
  state.page = Math.max(1, parseInt(p.get("page") || "1", 10) || 1);
  state.balance = p.has("balance") ? Math.min(1, Math.max(0, parseFloat(p.get("balance")) || 0.5)) : 0.5;
  state.filters = {};
  for (const f of REQUEST_FILTERS) { const v = p.getAll(f); if (v.length) state.filters[f] = v; }
  state.after = p.get("after") || "";
  state.before = p.get("before") || "";
  for (const k of SPEEDS) state[k] = p.get(k) || "";
  state.sort = p.get("sort") === "time" ? "time" : "score";
  state.minConf = p.has("min_confidence") ? Math.min(1, Math.max(0, parseFloat(p.get("min_confidence")) || 0)) : null;
  $("confident-only").checked = state.minConf !== null;
  $("q").value = state.q;
  syncInputs();
  $("neg").value = state.neg;
  $("balance").value = state.balance;
  syncScopeInputs();
}

function urlFor() {
  const p = new URLSearchParams();
  if (state.q) p.set("q", state.q);
  if (state.neg) p.set("neg", state.neg);
  if (state.like) p.set("like", state.like);
  for (const f of REQUEST_FILTERS) for (const v of state.filters[f] || []) p.append(f, v);
  addScope((k, v) => p.set(k, v));
  if (state.page > 1) p.set("page", String(state.page));
  if ((state.like || state.image) && state.q) p.set("balance", String(state.balance));
  const s = p.toString();
  return location.pathname + (s ? "?" + s : "");
}

// camera filters go with the other filters; the time range and the order are added here
function addScope(add) {
  if (state.after) add("after", state.after);
  for (const k of SPEEDS) if (state[k]) add(k, state[k]);
  if (state.before) add("before", state.before);
  if (state.sort === "time") add("sort", "time");
  if (state.minConf !== null && state.minConf !== undefined) add("min_confidence", String(state.minConf));
}

function hasQuery() { return Boolean(state.q || state.like || state.image || INPUTS.some((f) => (state.filters[f] || []).length)); }

// the `input` filters (from /api/v1/info): a labelled box each beside the negative text
function makeInputs(filters) {
  for (const f of filters) {
    if ($("filter-" + f.name)) continue;
    const box = el("input", { id: "filter-" + f.name, type: "search", maxlength: "40", "aria-label": f.label,
      placeholder: f.name === "plate" ? "e.g. AB12* or A8I2CDE" : "" });
    box.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); $("search-form").requestSubmit(); } });
    $("neg").closest("label").after(el("label", {}, [f.label.toLowerCase() + " ", box]));
  }
}

function readInputs() {
  for (const f of INPUTS) {
    const v = $("filter-" + f).value.trim();
    if (v) state.filters[f] = [v]; else delete state.filters[f];
  }
}

function syncInputs() { for (const f of INPUTS) $("filter-" + f).value = (state.filters[f] || [])[0] || ""; }

function weights() {
  // balance 0 = text only, 1 = image only; both weights 1 at the middle
  const b = Number(state.balance);
  return { w_text: Math.min(1, 2 * (1 - b)).toFixed(2), w_image: Math.min(1, 2 * b).toFixed(2) };
}

async function run(push = true) {
  updateQueryChrome();
  if (push) history.pushState(null, "", urlFor());
  if (!hasQuery()) { clearResults(); return; }
  const offset = (state.page - 1) * pageSize;
  const w = weights();
  let resp;
  if (inflight) inflight.abort();
  inflight = new AbortController();
  setStatus("Searching…");
  try {
    if (state.image) {
      const fd = new FormData();
      fd.append("image", state.image, state.image.name || "query.png");
      if (state.q) fd.append("q", state.q);
      if (state.neg) fd.append("neg", state.neg);
      fd.append("w_text", w.w_text); fd.append("w_image", w.w_image);
      fd.append("offset", offset); fd.append("limit", pageSize);
      for (const f of REQUEST_FILTERS) for (const v of state.filters[f] || []) fd.append(f, v);
      addScope((k, v) => fd.append(k, v));
      resp = await api("/api/v1/search/image", { method: "POST", body: fd, signal: inflight.signal });
    } else {
      const p = new URLSearchParams();
      if (state.q) p.set("q", state.q);
      if (state.neg) p.set("neg", state.neg);
      if (state.like) p.set("like", state.like);
      if (state.like && state.q) { p.set("w_text", w.w_text); p.set("w_image", w.w_image); }
      p.set("offset", offset); p.set("limit", pageSize);
      for (const f of REQUEST_FILTERS) for (const v of state.filters[f] || []) p.append(f, v);
      addScope((k, v) => p.set(k, v));
      resp = await api("/api/v1/search?" + p.toString(), { signal: inflight.signal });
    }
    const data = await resp.json();
    if (!resp.ok) { showError((data.error && data.error.message) || resp.statusText); return; }
    last = data;
    render(data);
  } catch (e) {
    if (e.name !== "AbortError") showError("The search service did not answer (" + e.message + ")");
  }
}

function setStatus(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", error);
}

function showError(msg) {
  hideFrame(true);
  setStatus(msg, true);
  document.body.dataset.renders = String(++renders);
  $("grid").innerHTML = "";
  $("pager").hidden = true;
}

function clearResults() {
  hideFrame(true);
  $("grid").innerHTML = "";
  $("facets").innerHTML = "";
  $("scope").hidden = true;
  $("active").innerHTML = "";
  $("pager").hidden = true;
  setStatus("Type what you are looking for, or drop a photo of a car anywhere on the page.");
}

function el(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of [].concat(children)) if (c) e.append(c);
  return e;
}

function describe() {
  const parts = [];
  if (state.image) parts.push("your image");
  if (state.like) parts.push("image " + state.like);
  if (state.q) parts.push("“" + state.q + "”");
  let s = parts.join(" + ");
  if (state.neg) s += " without “" + state.neg + "”";
  return s;
}

function render(data) {
  const grid = $("grid");
  hideFrame(true);
  grid.innerHTML = "";
  const pages = Math.max(1, Math.ceil(data.candidates / data.limit));
  const from = data.hits.length ? data.offset + 1 : 0;
  setStatus(`${from}–${data.offset + data.hits.length} of the top ${data.candidates} for ${describe()} · ${Math.round(data.took_ms)} ms`);
  if (!data.hits.length) grid.append(el("div", { class: "empty", text: "No car matches these filters. Remove one on the left." }));
  data.hits.forEach((h, i) => {
    const d = confidenceDivider(data, i);
    if (d) grid.append(d);
    grid.append(card(h, i));
  });
  if (data.confident !== null && data.confident !== undefined) {
    setStatus($("status").textContent + ` · ${data.confident} confident match${data.confident === 1 ? "" : "es"}`);
  }
  // a query kind without its own calibration (e.g. text + image) shows no confidence, and says so
  if (data.confidence_note && data.hits.length) setStatus($("status").textContent + ` · ${data.confidence_note}`);
  const understood = (data.query && data.query.understood) || [];  // motion words read as filters ("heading north")
  if (understood.length) setStatus($("status").textContent + " · " + understood.map((u) => u.note).join(" · "));
  renderFacets(data.facets);
  renderScope(data.facets);
  renderActive();
  $("pager").hidden = data.candidates <= data.limit;
  $("prev").disabled = state.page <= 1;
  $("next").disabled = !data.has_more;
  $("page-label").textContent = `page ${state.page} of ${pages}`;
  document.body.dataset.renders = String(++renders);
}

// ---- capture times: the API sends ISO 8601 in UTC and reads after / before in UTC, so the page shows
// them as they come (no conversion to the browser's zone: what you see is what you type)
const ISO = /^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d(?::\d\d)?)(?:\.\d+)?(Z|[+-]\d\d:?\d\d)?$/;
function zoneOf(z) { return !z ? "" : (z === "Z" || z === "+00:00" || z === "+0000") ? "UTC" : z; }
function showTime(iso) {
  const m = ISO.exec(iso || "");
  if (!m) return iso || "";
  return `${m[1]} ${m[2]}${m[3] ? " " + zoneOf(m[3]) : ""}`;
}
function showRange(a, b) {
  const x = ISO.exec(a || ""), y = ISO.exec(b || "");
  if (!x || !y) return `${showTime(a)} – ${showTime(b)}`;
  const zone = zoneOf(y[3]);
  if (x[1] === y[1] && zoneOf(x[3]) === zone) return `${x[1]} ${x[2]} – ${y[2]}${zone ? " " + zone : ""}`;
  return `${showTime(a)} – ${showTime(b)}`;
}
function basename(path) { return (path || "").split(/[\\/]/).filter(Boolean).pop() || ""; }
function hasFrame(h) { return Boolean(h.frame_url && Array.isArray(h.box) && h.box.length === 4); }

// calibrated relevance: the confident hits (confidence >= the index's threshold) come first; a
// divider marks where they end, on the page where that happens (best-first order only)
function confidenceDivider(data, i) {
  const h = data.hits[i];
  if (state.sort !== "score" || h.confidence === null || h.confidence === undefined || h.confident) return null;
  if (i > 0 ? !data.hits[i - 1].confident : data.offset > 0) return null;
  const n = data.confident || 0;
  const unreached = data.confidence_threshold === null && data.confidence_target !== null && data.confidence_target !== undefined;
  const text = unreached
    ? `No hit is marked confident: no confidence level reached ${Math.round(data.confidence_target * 100)} % precision on held-out queries · these are the closest`
    : n ? `${n} confident match${n === 1 ? "" : "es"} above · less likely matches below` : "No confident match · these are the closest";
  return el("div", { class: "confidence-divider", role: "separator", "data-confident": String(n), text });
}

function card(h, i) {
  const why = new Set(h.why.filter((m) => m.source !== "negative").map((m) => m.attribute));
  const attrs = el("div", { class: "attrs" });
  for (const m of h.why) {
    attrs.append(el("span", { class: "attr why" + (m.source === "negative" ? " negative" : ""),
      title: m.source === "text" ? "named in your query" : m.source === "image" ? "same as the query image" : "named in “without”",
      text: (m.source === "negative" ? "✕ " : "✓ ") + m.value }));
  }
  for (const a of ["color", "body_type", "view", "make", "model"]) {
    if (h[a] && !why.has(a)) {
      const chip = el("span", { class: "attr", text: h[a] });
      if (a === "color" && SWATCH[h[a]]) chip.prepend(el("span", { class: "swatch", style: `background:${SWATCH[h[a]]}` }));
      attrs.append(chip);
    }
  }
  const file = basename(h.origin);
  // where and when: camera, capture time, the source file (the frame, for a vehicle)
  const meta = el("div", { class: "meta" });
  if (h.camera) meta.append(el("span", { class: "cam", title: "camera", text: h.camera }));
  if (h.plate) meta.append(el("span", { class: "plate", title: "number plate (as read)", text: h.plate }));
  if (h.time && !h.track) meta.append(el("time", { class: "when", datetime: h.time, title: "captured", text: showTime(h.time) }));
  if (file) meta.append(el("span", { class: "origin", title: h.origin, text: h.folder ? `${basename(h.folder)}/${file}` : file }));
  const pct = Math.max(0, Math.min(1, h.score)) * 100;
  const thumb = el("a", { class: "thumb", href: h.image_url, target: "_blank", rel: "noopener", tabindex: "-1",
    title: hasFrame(h) ? "the vehicle (hover: the whole frame; click: open the crop)" : "open the full image" }, [
    el("img", { src: h.thumb_url, alt: h.caption || file || h.id, loading: "lazy" }),
    el("span", { class: "rank", text: "#" + h.rank }),
    el("span", { class: "score", title: "cosine similarity", text: h.score.toFixed(3) }),
    h.confidence !== null && h.confidence !== undefined
      ? el("span", { class: "confidence" + (h.confident ? " confident" : ""), title: "probability that this matches your query (calibrated)",
        text: Math.round(h.confidence * 100) + "%" })
      : null,
  ]);
  const actions = el("div", { class: "actions" }, [
    el("button", { class: "more", type: "button", text: "More like this", title: "search by this vehicle", onclick: () => moreLike(h.id) }),
    ...judgeButtons(),  // ✓ / ✗ (judge.js)
  ]);
  const c = el("div", { class: "card", role: "listitem", tabindex: "0", "data-id": h.id, "data-index": String(i),
    "data-color": h.color, "data-body-type": h.body_type, "data-view": h.view, "data-camera": h.camera || "",
    "data-time": h.time || "" }, [
    thumb,
    el("div", { class: "body" }, [
      el("p", { class: "caption", text: h.caption || (file ? (h.box_class ? `${h.box_class} in ${file}` : file) : "(no caption) " + h.id) }),
      meta.childNodes.length ? meta : null,
      h.track ? trackLine(h) : null,
      el("div", { class: "bar", title: "score" }, [el("span", { style: `width:${pct.toFixed(1)}%` })]),
      attrs,
      actions,
    ]),
  ]);
  if (hasFrame(h)) {
    thumb.addEventListener("mouseenter", () => showFrame(h, c, false));
    thumb.addEventListener("mouseleave", () => hideFrame(false));
    actions.append(el("button", { class: "in-frame", type: "button", text: "In frame", title: "the whole frame, with this vehicle boxed",
      "aria-pressed": "false", onclick: (e) => { e.stopPropagation(); toggleFrame(h, c); } }));
  }
  return c;
}

// ---- the whole frame with the vehicle's box: one popover beside the card, on hover (follows the mouse
// from card to card) or pinned by "In frame" (stays until closed). The box is placed in percent of the
// frame's natural size, so it stays on the vehicle at whatever size the frame is drawn.
let framed = null;  // {hit, card, pinned}

function showFrame(h, c, pinned) {
  if (framed && framed.pinned && !pinned) return;  // a pinned frame stays until it is closed
  const pop = $("frame-pop"), img = $("frame-img");
  document.querySelectorAll("#grid .in-frame[aria-pressed=true]").forEach((b) => b.setAttribute("aria-pressed", "false"));
  framed = { hit: h, card: c, pinned };
  if (pinned) { const b = c.querySelector(".in-frame"); if (b) b.setAttribute("aria-pressed", "true"); }
  pop.classList.toggle("pinned", pinned);
  pop.dataset.id = h.id;
  $("frame-cap").textContent = [h.camera, h.time ? showTime(h.time) : "", basename(h.origin)].filter(Boolean).join(" · ");
  $("frame-box").hidden = true;
  pop.hidden = false;
  if (img.dataset.src !== h.frame_url) { img.dataset.src = h.frame_url; img.removeAttribute("src"); img.src = h.frame_url; }
  if (img.complete && img.naturalWidth) placeBox();
  placeFrame();
}

function placeBox() {
  const img = $("frame-img"), box = $("frame-box");
  if (!framed || !img.naturalWidth || img.dataset.src !== framed.hit.frame_url) return;
  const [x1, y1, x2, y2] = framed.hit.box, W = img.naturalWidth, H = img.naturalHeight;
  const pc = (v, n) => `${(100 * Math.max(0, Math.min(n, v)) / n).toFixed(4)}%`;
  box.style.left = pc(x1, W); box.style.top = pc(y1, H);
  box.style.width = pc(x2 - x1, W); box.style.height = pc(y2 - y1, H);
  box.title = `${framed.hit.box_class || "vehicle"}: ${x1.toFixed(0)},${y1.toFixed(0)} – ${x2.toFixed(0)},${y2.toFixed(0)} px of ${W}×${H}`;
  box.hidden = false;
  placeFrame();
}

function placeFrame() {
  if (!framed) return;
  const pop = $("frame-pop"), r = framed.card.getBoundingClientRect();
  const vw = document.documentElement.clientWidth, vh = document.documentElement.clientHeight;
  const w = pop.offsetWidth, hgt = pop.offsetHeight, gap = 12;
  const clampX = (x) => Math.max(8, Math.min(x, vw - 8 - w)), clampY = (y) => Math.max(8, Math.min(y, vh - 8 - hgt));
  let left, top;
  if (r.right + gap + w <= vw - 8) { left = r.right + gap; top = clampY(r.top); }  // beside the card
  else if (r.left - gap - w >= 8) { left = r.left - gap - w; top = clampY(r.top); }
  else if (r.bottom + gap + hgt <= vh - 8) { left = clampX(r.left); top = r.bottom + gap; }  // below it
  else if (r.top - gap - hgt >= 8) { left = clampX(r.left); top = r.top - gap - hgt; }  // above it
  else { left = clampX(r.right + gap); top = clampY(r.top); }
  pop.style.left = `${Math.round(left)}px`;
  pop.style.top = `${Math.round(top)}px`;
}

function hideFrame(force) {
  if (!framed || (framed.pinned && !force)) return;
  document.querySelectorAll("#grid .in-frame[aria-pressed=true]").forEach((b) => b.setAttribute("aria-pressed", "false"));
  framed = null;
  $("frame-pop").hidden = true;
}

function toggleFrame(h, c) {
  if (framed && framed.pinned && framed.hit.id === h.id) { hideFrame(true); return; }
  if (framed) framed.pinned = false;
  showFrame(h, c, true);
}

$("frame-img").addEventListener("load", placeBox);
$("frame-close").addEventListener("click", () => hideFrame(true));
window.addEventListener("resize", () => placeFrame());
window.addEventListener("scroll", () => placeFrame(), { passive: true });

// ---- a video vehicle: one hit per track; "seen <first> – <last>, N frames" opens its member boxes as a
// strip (member frames are not served one by one: each tile draws the box in a frame-shaped outline)
function trackLine(h) {
  const t = h.track, boxes = t.boxes || [];
  const offs = boxes.map((b) => b.offset).filter((o) => typeof o === "number");
  const span = t.first_seen && t.last_seen ? showRange(t.first_seen, t.last_seen)
    : offs.length ? `${Math.min(...offs).toFixed(1)} s – ${Math.max(...offs).toFixed(1)} s into the video` : "";
  const label = `seen ${span}, ${boxes.length} frame${boxes.length === 1 ? "" : "s"}`;
  const wrap = el("div", { class: "track", "data-track": t.id });
  const strip = el("div", { class: "strip", role: "list", "aria-label": "the vehicle in each sampled frame" });
  strip.hidden = true;
  const btn = el("button", { type: "button", class: "track-toggle", "aria-expanded": "false", title: "its boxes frame by frame",
    text: label, onclick: (e) => {
      e.stopPropagation();
      strip.hidden = !strip.hidden;
      btn.setAttribute("aria-expanded", String(!strip.hidden));
      if (!strip.hidden && !strip.childNodes.length) fillStrip(h, strip);
    } });
  wrap.append(...(h.direction ? [motionArrow(h)] : []), btn, strip);
  return wrap;
}

// a track's way in the image (and compass heading, where its camera's geometry is known) and speed
const ARROWS = { left: "←", right: "→", towards: "↓", away: "↑", stopped: "■" };
function motionArrow(h) {
  const speed = typeof h.speed === "number" ? ` ${Math.round(h.speed)} ${h.speed_unit || ""}` : "";
  const heading = typeof h.heading === "number" ? ` · heading ${h.compass ? h.compass + " " : ""}${Math.round(h.heading)}°` : "";
  return el("span", { class: "motion", "data-direction": h.direction, title: `going ${h.direction}${heading}`,
    text: `${ARROWS[h.direction] || "?"} ${h.direction}${speed}${heading}` });
}

function fillStrip(h, strip) {
  const t0 = h.track.boxes.reduce((m, b) => (typeof b.offset === "number" ? Math.min(m, b.offset) : m), Infinity);
  const tiles = [];
  for (const b of h.track.boxes) {
    const best = b.frame_id === h.frame_id;
    const mbox = el("span", { class: "mbox" });
    const mini = el("span", { class: "mini" }, [mbox]);
    const when = b.time ? showTime(b.time) : "";
    const at = typeof b.offset === "number" ? `${b.offset.toFixed(2)} s` : "";
    const rel = typeof b.offset === "number" && isFinite(t0) ? `+${(b.offset - t0).toFixed(2)} s` : when;
    const [x1, y1, x2, y2] = b.box || [0, 0, 0, 0];
    const tile = el("div", { class: "member" + (best ? " best" : ""), role: "listitem", "data-frame": b.frame_id || "",
      title: [when, at && `${at} into the video`, `box ${x1.toFixed(0)},${y1.toFixed(0)} – ${x2.toFixed(0)},${y2.toFixed(0)}`,
        best ? "the frame shown for this vehicle" : ""].filter(Boolean).join(" · ") }, [
      mini, el("span", { class: "mt", text: rel || "?" }),
    ]);
    tiles.push({ mini, mbox, box: b.box });
    strip.append(tile);
  }
  // the frame's size (every member is from the same video) from the hit's frame, where it has one
  const draw = (W, H) => {
    for (const { mini, mbox, box } of tiles) {
      mini.style.aspectRatio = `${W} / ${H}`;
      if (!box) { mbox.hidden = true; continue; }
      mbox.style.left = `${(100 * box[0] / W).toFixed(2)}%`; mbox.style.top = `${(100 * box[1] / H).toFixed(2)}%`;
      mbox.style.width = `${(100 * (box[2] - box[0]) / W).toFixed(2)}%`; mbox.style.height = `${(100 * (box[3] - box[1]) / H).toFixed(2)}%`;
    }
    strip.classList.add("drawn");
  };
  if (h.frame_url) {
    const probe = new Image();
    probe.onload = () => draw(probe.naturalWidth, probe.naturalHeight);
    probe.src = h.frame_url;
  }
}

function renderFacets(facets) {
  const box = $("facets");
  box.innerHTML = "";
  for (const f of FILTERS) {
    const values = facets[f] || [];
    const active = state.filters[f] || [];
    if (!values.length && !active.length) continue;
    if (values.length < 2 && !active.length) continue;  // one value for every hit: nothing to narrow
    const chips = el("div", { class: "chips" });
    const shown = new Set();
    for (const { value, count } of values) {
      shown.add(value);
      chips.append(facetChip(f, value, count, active.includes(value)));
    }
    for (const v of active) if (!shown.has(v)) chips.append(facetChip(f, v, 0, true));
    box.append(el("div", { class: "facet", "data-facet": f }, [el("h3", { text: LABELS[f] }), chips]));
  }
}

// ---- where and when: camera checkboxes (from facets.camera), after / before, the order, and the vehicles
// per hour (facets.hour: counted over the same candidates as the other facets)
let cameraMemo = { key: null, values: [] };  // the cameras of this query before a camera was ticked

function scopeKey() { return JSON.stringify([state.q, state.neg, state.like, Boolean(state.image), state.after, state.before,
  FILTERS.map((f) => state.filters[f] || [])]); }

function syncScopeInputs() {
  const local = (v) => (/^\d{4}-\d\d-\d\d$/.test(v) ? v + "T00:00" : v);  // a date: its midnight
  $("after").value = local(state.after);
  for (const k of SPEEDS) $(k).value = state[k] || "";
  $("before").value = local(state.before);
  $("sort").value = state.sort;
}

function renderScope(facets) {
  const cams = facets.camera || [], hours = facets.hour || [];
  const active = state.filters.camera || [];
  const timed = hours.length || state.after || state.before || state.sort === "time";
  $("scope").hidden = !(cams.length || active.length || timed);
  syncScopeInputs();
  // cameras: those of the current hits, and (while some are ticked) the others this query had
  const key = scopeKey();
  if (!active.length || cameraMemo.key !== key) cameraMemo = { key, values: cams.map((c) => c.value) };
  const count = Object.fromEntries(cams.map((c) => [c.value, c.count]));
  const names = [...new Set([...cams.map((c) => c.value), ...(active.length ? cameraMemo.values : []), ...active])];
  const box = $("cameras");
  box.innerHTML = "";
  for (const name of names) {
    const on = active.includes(name);
    const input = el("input", { type: "checkbox", value: name, "data-camera": name,
      onchange: () => toggleFilter("camera", name) });
    input.checked = on;
    box.append(el("label", { class: "check" + (on ? " on" : ""), title: on ? "remove this filter" : "only " + name }, [
      input, el("span", { class: "v", text: name }), el("span", { class: "n", text: name in count ? String(count[name]) : "" }),
    ]));
  }
  $("camera-facet").hidden = !(names.length > 1 || active.length);
  $("when-facet").querySelectorAll(".when-input").forEach((l) => { l.hidden = !timed; });
  renderHours(hours);
}

function hourAfter(h) {  // "2026-03-01T08:00" -> "2026-03-01T09:00" (UTC wall clock, as the API reads it)
  const t = Date.parse(h + ":00Z");
  return isNaN(t) ? null : new Date(t + 3600e3).toISOString().slice(0, 16);
}

function renderHours(hours) {
  const box = $("hours");
  box.innerHTML = "";
  $("hours-axis").hidden = !hours.length;
  box.hidden = !hours.length;
  if (!hours.length) return;
  // every hour from the first to the last (empty ones too, up to four days), so the bars are a time axis
  let bins = hours;
  const have = Object.fromEntries(hours.map((x) => [x.value, x.count]));
  const filled = [];
  for (let h = hours[0].value; h && filled.length <= 96; h = hourAfter(h)) {
    filled.push({ value: h, count: have[h] || 0 });
    if (h >= hours[hours.length - 1].value) break;
  }
  if (filled.length <= 96 && filled[filled.length - 1].value === hours[hours.length - 1].value) bins = filled;
  const max = Math.max(...bins.map((b) => b.count), 1);
  for (const { value, count } of bins) {
    const next = hourAfter(value);
    const on = next && state.after === value && state.before === next;
    const label = `${value.replace("T", " ")}–${next ? next.slice(11) : ""} UTC: ${count} vehicle${count === 1 ? "" : "s"}`;
    box.append(el("button", { type: "button", class: "hbar" + (count ? "" : " zero") + (on ? " on" : ""), "data-hour": value,
      "data-count": String(count), title: label + (on ? " (click: every hour)" : " (click: only this hour)"), "aria-label": label,
      onclick: () => { if (on) { state.after = ""; state.before = ""; } else if (next) { state.after = value; state.before = next; }
        state.page = 1; run(); } },
    [el("span", { style: `height:${(100 * count / max).toFixed(1)}%` })]));
  }
  $("hours-from").textContent = bins[0].value.replace("T", " ");
  $("hours-to").textContent = bins.length > 1 ? bins[bins.length - 1].value.replace("T", " ") : "";
}

function facetChip(f, value, count, on) {
  const b = el("button", { type: "button", class: "chip" + (on ? " on" : ""), "data-facet": f, "data-value": value,
    "aria-pressed": on ? "true" : "false", title: on ? "remove this filter" : "only " + value,
    onclick: () => toggleFilter(f, value) }, [el("span", { text: value }), el("span", { class: "n", text: String(count) })]);
  if (f === "color" && SWATCH[value]) b.prepend(el("span", { class: "swatch", style: `background:${SWATCH[value]}` }));
  return b;
}

function renderActive() {
  const box = $("active");
  box.innerHTML = "";
  for (const f of REQUEST_FILTERS) for (const v of state.filters[f] || []) {
    box.append(el("button", { type: "button", class: "chip on", title: "remove", onclick: () => toggleFilter(f, v) },
      [el("span", { text: `${LABELS[f]}: ${v}` }), el("span", { class: "n", text: "×" })]));
  }
  for (const k of ["after", "before"]) if (state[k]) {
    box.append(el("button", { type: "button", class: "chip on", title: "remove", "data-scope": k,
      onclick: () => { state[k] = ""; state.page = 1; run(); } },
      [el("span", { text: `${k} ${showTime(state[k])}${(ISO.exec(state[k]) || [])[3] ? "" : " UTC"}` }), el("span", { class: "n", text: "×" })]));
  }
}

function toggleFilter(f, value) {
  const cur = state.filters[f] || [];
  state.filters[f] = cur.includes(value) ? cur.filter((v) => v !== value) : [...cur, value];
  if (!state.filters[f].length) delete state.filters[f];
  state.page = 1;
  run();
}

function moreLike(id) {
  clearImage(false);
  state.like = id;
  state.q = "";
  state.neg = "";
  state.filters = {};  // the same vehicle on any camera, at any time
  state.after = "";
  state.before = "";
  state.page = 1;
  $("q").value = "";
  $("neg").value = "";
  run();
  window.scrollTo({ top: 0, behavior: "smooth" });
}

function updateQueryChrome() {
  const chip = $("image-chip");
  const img = $("image-preview");
  if (state.image) { chip.hidden = false; img.src = state.imageUrl; img.title = "your image"; }
  else if (state.like) { chip.hidden = false; img.src = `/api/v1/thumbs/${encodeURIComponent(state.like)}`; img.title = "more like " + state.like; }
  else chip.hidden = true;
  $("balance-wrap").hidden = !((state.image || state.like) && state.q);
  document.title = hasQuery() ? `${describe()} · carsearch` : "carsearch";
}

function setImage(file) {
  if (!file || !file.type.startsWith("image/")) { setStatus("That is not an image file.", true); return; }
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.image = file;
  state.imageUrl = URL.createObjectURL(file);
  state.like = null;
  state.page = 1;
  run();
}

function clearImage(rerun = true) {
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.image = null; state.imageUrl = null; state.like = null;
  $("file").value = "";
  if (rerun) { state.page = 1; run(); }
}

// ---- keyboard: Enter searches (the form); arrows move between results; Enter on a result: more like this
function columns() {
  const cards = [...document.querySelectorAll("#grid .card")];
  if (!cards.length) return 1;
  const top = cards[0].offsetTop;
  return Math.max(1, cards.filter((c) => c.offsetTop === top).length);
}

function focusCard(i) {
  const cards = document.querySelectorAll("#grid .card");
  if (!cards.length) return;
  const c = cards[Math.max(0, Math.min(cards.length - 1, i))];
  c.focus();
  c.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

document.addEventListener("keydown", (e) => {
  const t = e.target;
  const typing = t.tagName === "INPUT" || t.tagName === "TEXTAREA";
  if (e.key === "Escape" && framed) { hideFrame(true); return; }
  if (e.key === "/" && !typing) { e.preventDefault(); $("q").focus(); $("q").select(); return; }
  if (t.classList && t.classList.contains("card")) {
    const i = Number(t.dataset.index);
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() }[e.key];
    if (step !== undefined) { e.preventDefault(); focusCard(i + step); return; }
    if (e.key === "Enter") { e.preventDefault(); moreLike(t.dataset.id); return; }
  } else if (t.id === "q" && e.key === "ArrowDown" && document.querySelector("#grid .card")) {
    e.preventDefault(); focusCard(0);
  }
});

$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.q = $("q").value.trim();
  state.neg = $("neg").value.trim();
  readInputs();
  state.page = 1;
  if (!hasQuery()) { showError("Type a description of a car, a plate, or drop a photo."); return; }
  run();
});
$("neg").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); $("search-form").requestSubmit(); } });
// a video track's speed range (min_speed / max_speed: the index row's range filter on `speed`)
for (const k of SPEEDS) {
  $(k).addEventListener("change", () => {
    const v = $(k).value.trim();
    if (v === state[k] || (v && !Number.isFinite(Number(v)))) return;
    state[k] = v;
    state.page = 1;
    if (hasQuery()) run();
  });
}
for (const k of ["after", "before"]) {
  $(k).addEventListener("change", () => {
    const v = $(k).value;  // "2026-03-01T09:00" (datetime-local) or "" when cleared
    if (v === state[k] || (!v && $(k).validity.badInput)) return;  // unchanged, or half typed
    state[k] = v;
    state.page = 1;
    if (hasQuery()) run();
  });
}
$("confident-only").addEventListener("change", () => {
  state.minConf = $("confident-only").checked ? ((last && last.confidence_threshold) ?? 1) : null;
  state.page = 1; run();
});
$("sort").addEventListener("change", () => { state.sort = $("sort").value === "time" ? "time" : "score"; state.page = 1; run(); });
$("balance").addEventListener("change", () => { state.balance = Number($("balance").value); state.page = 1; run(); });
$("file").addEventListener("change", () => { if ($("file").files[0]) setImage($("file").files[0]); });
$("image-clear").addEventListener("click", () => clearImage());
$("prev").addEventListener("click", () => { if (state.page > 1) { state.page--; run(); window.scrollTo({ top: 0 }); } });
$("next").addEventListener("click", () => { state.page++; run(); window.scrollTo({ top: 0 }); });
window.addEventListener("popstate", () => { clearImage(false); readURL(); run(false); });

// ---- drag and drop anywhere, and paste
let dragDepth = 0;
document.addEventListener("dragenter", (e) => {
  if (![...(e.dataTransfer && e.dataTransfer.types || [])].includes("Files")) return;
  dragDepth++; $("drop-overlay").hidden = false; $("dropzone").classList.add("dragging");
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) { $("drop-overlay").hidden = true; $("dropzone").classList.remove("dragging"); }
});
document.addEventListener("dragover", (e) => { e.preventDefault(); });
document.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0; $("drop-overlay").hidden = true; $("dropzone").classList.remove("dragging");
  const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
  if (f) setImage(f);
});
document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData && e.clipboardData.items || [])].find((it) => it.type.startsWith("image/"));
  if (item) { e.preventDefault(); setImage(item.getAsFile()); }
});

// ---- the access token: a server bound beyond loopback asks for one. It is kept for this tab
// (sessionStorage) and in a cookie for /api only, so image URLs and shared links never carry it.
const TOKEN_KEY = "carsearch_token";
function askToken() {
  const t = window.prompt("This carsearch server needs its access token:");
  if (!t) return false;
  sessionStorage.setItem(TOKEN_KEY, t);
  document.cookie = `${TOKEN_KEY}=${encodeURIComponent(t)}; path=/api; SameSite=Strict`;
  return true;
}
async function api(url, opts = {}) {
  for (let tries = 0; ; tries++) {
    const headers = new Headers(opts.headers || {});
    const t = sessionStorage.getItem(TOKEN_KEY);
    if (t) headers.set("Authorization", "Bearer " + t);
    const r = await fetch(url, { ...opts, headers });
    if (r.status !== 401 || tries >= 2 || !askToken()) return r;
  }
}

// ---- which model built the index
async function loadInfo() {
  try {
    const r = await api("/api/v1/info");
    const info = await r.json();
    const filters = info.filters || [];
    FILTERS = filters.filter((f) => f.page === "chips").map((f) => f.name);
    REQUEST_FILTERS = filters.map((f) => f.name);
    INPUTS = filters.filter((f) => f.page === "input").map((f) => f.name);
    makeInputs(filters.filter((f) => f.page === "input"));
    LABELS = Object.fromEntries(filters.map((f) => [f.name, f.label]));
    pageSize = Math.min(info.limits.default_page_size, info.limits.max_page_size);
    const m = $("model");
    m.innerHTML = "";
    const reg = info.registered_model && info.registered_model.version ? ` · registered v${info.registered_model.version}` : "";
    m.append(el("span", { class: "tag" + (info.model === "base" ? " base" : ""), text: info.model || "model" }), " ",
      el("b", { text: info.model_ref || "" }), el("br"),
      `${info.rows.toLocaleString()} images · index ${info.index_version || "?"}${reg}`);
    m.title = (info.promotion && info.promotion.reason) || "";
    m.dataset.version = info.index_version || "";
  } catch (e) { $("model").textContent = "index info unavailable"; }
}

loadInfo().then(() => { readURL(); if (hasQuery()) run(false); else updateQueryChrome(); $("q").focus(); });
