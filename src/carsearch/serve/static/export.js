// Evidence bundles (issue 33): tick hits on their cards ("Pick"), then "Export picked" downloads a zip
// from POST /api/v1/export with their ids: each hit's original, its crop with the box drawn, a video
// track's clip (first seen to last seen, plus margins) and the manifest (CSV + JSON). Picks survive
// paging; "Export page" bundles every hit shown; "Export all" bundles every hit of the search (as
// POST /api/v1/search would page through them, up to serve.export_max_hits).
"use strict";

const picked = new Map();  // id -> rank when picked (the order of the bundle is the order picked)

function exportBar() {
  let bar = document.getElementById("export-bar");
  if (bar) return bar;
  bar = el("div", { id: "export-bar", class: "export-bar" }, [
    el("button", { id: "export-picked", type: "button", text: "Export picked (0)", disabled: "",
      title: "a zip of the picked hits: originals, crops with boxes, clips, manifest", onclick: () => exportIds([...picked.keys()]) }),
    el("button", { id: "export-page", type: "button", text: "Export page", title: "a zip of every hit on this page",
      onclick: () => exportIds([...document.querySelectorAll("#grid .card")].map((c) => c.dataset.id)) }),
    el("button", { id: "export-all", type: "button", text: "Export all", title: "a zip of every hit of this search (up to the server's export_max_hits)",
      onclick: () => exportBody({ search: searchBody() }, "every hit of this search") }),
    el("button", { id: "export-clear", type: "button", text: "Clear picks", onclick: () => { picked.clear(); syncPicks(); } }),
  ]);
  document.getElementById("grid").before(bar);
  return bar;
}

function syncPicks() {
  // an uploaded photo is not a JSON search: "Export all" is for text, "more like this" and filters
  document.getElementById("export-all").disabled = Boolean(state.image) || !hasQuery();
  const b = document.getElementById("export-picked");
  b.textContent = `Export picked (${picked.size})`;
  b.disabled = picked.size === 0;
  for (const box of document.querySelectorAll("#grid .card input.pick")) box.checked = picked.has(box.closest(".card").dataset.id);
}

function addPicks() {
  exportBar();
  for (const c of document.querySelectorAll("#grid .card")) {
    const actions = c.querySelector(".actions");
    if (!actions || actions.querySelector("input.pick")) continue;
    const box = el("input", { type: "checkbox", class: "pick", title: "pick for the evidence bundle" });
    box.addEventListener("change", () => { if (box.checked) picked.set(c.dataset.id, true); else picked.delete(c.dataset.id); syncPicks(); });
    actions.append(el("label", { class: "pick-label" }, [box, " Pick"]));
  }
  syncPicks();
}

// the page's search as the JSON body of POST /api/v1/search (the export's `search`)
function searchBody() {
  const body = { filters: {} };
  if (state.q) body.q = state.q;
  if (state.neg) body.neg = state.neg;
  if (state.like) { body.like = state.like; if (state.q) { const w = weights(); body.w_text = Number(w.w_text); body.w_image = Number(w.w_image); } }
  for (const f of REQUEST_FILTERS) if ((state.filters[f] || []).length) body.filters[f] = state.filters[f];
  addScope((k, v) => { if (SPEEDS.includes(k)) body.filters[k] = Number(v); else if (k === "min_confidence") body[k] = Number(v); else body[k] = v; });
  return body;
}

async function exportIds(ids) {
  if (!ids.length) return;
  await exportBody({ ids }, `${ids.length} hit${ids.length === 1 ? "" : "s"}`);
}

async function exportBody(body, what) {
  setStatus(`Bundling ${what}…`);
  const r = await api("/api/v1/export", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!r.ok) { const d = await r.json().catch(() => ({})); showError((d.error && d.error.message) || r.statusText); return; }
  const url = URL.createObjectURL(await r.blob());
  const a = el("a", { href: url, download: "evidence.zip" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  const rejects = Number(r.headers.get("X-Export-Rejects") || 0);
  setStatus(`Exported ${r.headers.get("X-Export-Hits")} hits to evidence.zip` + (rejects ? ` · ${rejects} could not go in (rejects.csv)` : ""));
  document.body.dataset.exported = String(Number(document.body.dataset.exported || 0) + 1);  // tests wait on it
}

new MutationObserver(addPicks).observe(document.getElementById("grid"), { childList: true });
