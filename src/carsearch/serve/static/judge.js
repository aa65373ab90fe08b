// Judging hits (issue 34): ✓ / ✗ on a card, or on the focused card y / n (j / k move to the next /
// previous card). Each verdict is POSTed to /api/v1/judgments with the query that found the hit
// (text, like=<id>, or the uploaded picture by its sha256) and lands in data/feedback/judgments.jsonl.
"use strict";

async function sha256Hex(file) {
  if (!window.crypto || !crypto.subtle) return null;  // not a secure context (plain http beyond loopback)
  const d = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function judgeHit(c, verdict) {
  if (!last || !c) return;
  const h = last.hits[Number(c.dataset.index)];
  const q = last.query;
  const body = { q: q.q, neg: q.neg, like: q.like, filters: q.filters || {}, hit_id: h.id, rank: h.rank, verdict, source: "page" };
  if (q.image) {
    body.image_sha = state.image ? await sha256Hex(state.image) : null;
    if (!body.image_sha) { showError("This browser cannot name the uploaded picture (no crypto.subtle): judge it over the API"); return; }
  }
  const r = await api("/api/v1/judgments", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await r.json();
  if (!r.ok) { showError((data.error && data.error.message) || r.statusText); return; }
  c.dataset.verdict = verdict ? "yes" : "no";
  c.dataset.queryId = data.query_id;
  document.body.dataset.judged = String(Number(document.body.dataset.judged || 0) + 1);  // tests wait on it
}

function judgeButtons() {
  const mk = (v) => el("button", { class: "judge " + (v ? "yes" : "no"), type: "button", text: v ? "✓" : "✗",
    title: v ? "matches the query (y)" : "does not match (n)", onclick: (e) => judgeHit(e.target.closest(".card"), v) });
  return [mk(true), mk(false)];
}

document.addEventListener("keydown", (e) => {
  const t = e.target;
  if (!t.classList || !t.classList.contains("card") || e.ctrlKey || e.metaKey || e.altKey) return;
  const i = Number(t.dataset.index);
  if (e.key === "y" || e.key === "n") { e.preventDefault(); judgeHit(t, e.key === "y").then(() => focusCard(i + 1)); }
  else if (e.key === "j" || e.key === "k") { e.preventDefault(); focusCard(i + (e.key === "j" ? 1 : -1)); }
});
