// carsearch web page: plain JS over the /api/v1 JSON API. The URL holds the query (q, neg, like,
// filters, page) so a search can be shared and a reload restores it; an uploaded image stays in the page.
"use strict";

const FILTERS = ["color", "body_type", "view", "make", "model", "scene", "split"];
const LABELS = { color: "Colour", body_type: "Body type", view: "View", make: "Make", model: "Model", scene: "Scene", split: "Split" };
const SWATCH = { red: "#d7261e", blue: "#2458c6", green: "#2f9a47", yellow: "#f2c916", white: "#ffffff", black: "#16181b",
  silver: "#c3c8ce", grey: "#7d848c", orange: "#f07c12", purple: "#7c3fb5", brown: "#7a4d2b" };
const $ = (id) => document.getElementById(id);

const state = { q: "", neg: "", like: null, filters: {}, page: 1, balance: 0.5, image: null, imageUrl: null };
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
  for (const f of FILTERS) { const v = p.getAll(f); if (v.length) state.filters[f] = v; }
  $("q").value = state.q;
  $("neg").value = state.neg;
  $("balance").value = state.balance;
}

function urlFor() {
  const p = new URLSearchParams();
  if (state.q) p.set("q", state.q);
  if (state.neg) p.set("neg", state.neg);
  if (state.like) p.set("like", state.like);
  for (const f of FILTERS) for (const v of state.filters[f] || []) p.append(f, v);
  if (state.page > 1) p.set("page", String(state.page));
  if ((state.like || state.image) && state.q) p.set("balance", String(state.balance));
  const s = p.toString();
  return location.pathname + (s ? "?" + s : "");
}

function hasQuery() { return Boolean(state.q || state.like || state.image); }

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
      for (const f of FILTERS) for (const v of state.filters[f] || []) fd.append(f, v);
      resp = await api("/api/v1/search/image", { method: "POST", body: fd, signal: inflight.signal });
    } else {
      const p = new URLSearchParams();
      if (state.q) p.set("q", state.q);
      if (state.neg) p.set("neg", state.neg);
      if (state.like) p.set("like", state.like);
      if (state.like && state.q) { p.set("w_text", w.w_text); p.set("w_image", w.w_image); }
      p.set("offset", offset); p.set("limit", pageSize);
      for (const f of FILTERS) for (const v of state.filters[f] || []) p.append(f, v);
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
  setStatus(msg, true);
  document.body.dataset.renders = String(++renders);
  $("grid").innerHTML = "";
  $("pager").hidden = true;
}

function clearResults() {
  $("grid").innerHTML = "";
  $("facets").innerHTML = "";
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
  grid.innerHTML = "";
  const pages = Math.max(1, Math.ceil(data.candidates / data.limit));
  const from = data.hits.length ? data.offset + 1 : 0;
  setStatus(`${from}–${data.offset + data.hits.length} of the top ${data.candidates} for ${describe()} · ${Math.round(data.took_ms)} ms`);
  if (!data.hits.length) grid.append(el("div", { class: "empty", text: "No car matches these filters. Remove one on the left." }));
  data.hits.forEach((h, i) => grid.append(card(h, i)));
  renderFacets(data.facets);
  renderActive();
  $("pager").hidden = data.candidates <= data.limit;
  $("prev").disabled = state.page <= 1;
  $("next").disabled = !data.has_more;
  $("page-label").textContent = `page ${state.page} of ${pages}`;
  document.body.dataset.renders = String(++renders);
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
  const pct = Math.max(0, Math.min(1, h.score)) * 100;
  const c = el("div", { class: "card", role: "listitem", tabindex: "0", "data-id": h.id, "data-index": String(i),
    "data-color": h.color, "data-body-type": h.body_type, "data-view": h.view }, [
    el("a", { class: "thumb", href: h.image_url, target: "_blank", rel: "noopener", tabindex: "-1", title: "open the full image" }, [
      el("img", { src: h.thumb_url, alt: h.caption || h.id, loading: "lazy" }),
      el("span", { class: "rank", text: "#" + h.rank }),
      el("span", { class: "score", title: "cosine similarity", text: h.score.toFixed(3) }),
    ]),
    el("div", { class: "body" }, [
      el("p", { class: "caption", text: h.caption || "(no caption) " + h.id }),
      el("div", { class: "bar", title: "score" }, [el("span", { style: `width:${pct.toFixed(1)}%` })]),
      attrs,
      el("button", { class: "more", type: "button", text: "More like this", onclick: () => moreLike(h.id) }),
    ]),
  ]);
  return c;
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
  for (const f of FILTERS) for (const v of state.filters[f] || []) {
    box.append(el("button", { type: "button", class: "chip on", title: "remove", onclick: () => toggleFilter(f, v) },
      [el("span", { text: `${LABELS[f]}: ${v}` }), el("span", { class: "n", text: "×" })]));
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
  state.filters = {};
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
  state.page = 1;
  if (!hasQuery()) { showError("Type a description of a car, or drop a photo."); return; }
  run();
});
$("neg").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); $("search-form").requestSubmit(); } });
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

readURL();
loadInfo().then(() => { if (hasQuery()) run(false); else updateQueryChrome(); $("q").focus(); });
