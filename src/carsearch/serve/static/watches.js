// Watchlists (issue 33): a bell in the header with a badge counting unseen alerts (GET /api/v1/alerts),
// and a panel listing the watches (remove ✕), the latest alerts, and a form to add a watch (the
// current text query by default). Opening the panel marks the alerts seen (POST /api/v1/alerts/seen).
"use strict";

const watchUi = (() => {
  const style = document.createElement("style");
  style.textContent = `
    .watch-bell { position: absolute; right: 28px; top: 100%; margin-top: 12px; width: 38px; height: 34px; z-index: 6;
      background: #161a1f; border: 1px solid #f5b700; color: #f5b700; border-radius: 8px; padding: 4px; cursor: pointer; }
    .watch-bell svg { width: 20px; height: 20px; display: block; margin: auto; }
    .alert-badge { position: absolute; top: -6px; right: -8px; min-width: 18px; height: 18px; border-radius: 9px;
      background: #d7263d; color: #fff; font: bold 11px/18px sans-serif; text-align: center; padding: 0 4px; }
    .alert-badge[hidden] { display: none; }
    .watch-panel { position: fixed; top: 150px; right: 16px; width: 380px; max-height: 75vh; overflow: auto; z-index: 50;
      background: #1d2228; color: #eee; border: 1px solid #444; border-radius: 10px; padding: 12px; font-size: 13px;
      box-shadow: 0 8px 24px rgba(0,0,0,.4); }
    .watch-panel[hidden] { display: none; }
    .watch-panel h3 { margin: 8px 0 4px; font-size: 14px; }
    .watch-panel li { margin: 3px 0; }
    .watch-panel form input { width: 100%; box-sizing: border-box; margin: 2px 0; }
    .watch-panel .rm { background: none; border: none; color: #f77; cursor: pointer; }`;
  document.head.append(style);

  const badge = el("span", { id: "alert-badge", class: "alert-badge", hidden: "" });
  const bell = el("button", { id: "watch-bell", class: "watch-bell", type: "button", title: "watches and alerts",
    "aria-label": "watches and alerts" }, [badge]);
  bell.insertAdjacentHTML("afterbegin", '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6 17V11a6 6 0 0 1 12 0v6l2 2H4z' +
    'M10 21h4" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linejoin="round"/></svg>');
  const list = el("ul", { id: "watch-list" });
  const recent = el("ul", { id: "alert-list" });
  const field = (name, ph) => el("input", { name, placeholder: ph, "aria-label": name });
  const form = el("form", { id: "watch-form" }, [
    field("name", "name (e.g. white-van)"), field("text", "text (default: the current query)"),
    field("plate", "plate (exact matches alert)"), field("min_confidence", "min confidence 0-1 (default: confident only)"),
    field("url", "webhook URL (optional)"), el("button", { type: "submit", text: "Add watch" }),
  ]);
  const msg = el("div", { id: "watch-msg" });
  const panel = el("section", { id: "watch-panel", class: "watch-panel", hidden: "" },
    [el("h3", { text: "Watches" }), list, el("h3", { text: "Latest alerts" }), recent, el("h3", { text: "Add a watch" }), form, msg]);
  (document.querySelector("header.top") || document.body).append(bell);
  document.body.append(panel);

  async function refresh() {
    const r = await api("/api/v1/watches");
    if (!r.ok) { bell.hidden = r.status === 404; return; }
    const data = await r.json();
    badge.textContent = String(data.total_unseen);
    badge.hidden = !data.total_unseen;
    list.replaceChildren(...data.watches.map((w) => el("li", { "data-name": w.name }, [
      `${w.name}: ${w.text || w.image || ""}${w.plate ? " plate " + w.plate : ""} — ${w.alerts} alerts `,
      el("button", { class: "rm", type: "button", title: "remove this watch", text: "✕", onclick: () => remove(w.name) }),
    ])));
    document.body.dataset.watches = String(data.watches.length);
    document.body.dataset.unseen = String(data.total_unseen);  // tests wait on it
  }

  async function showRecent() {
    const r = await api("/api/v1/alerts?last=10");
    if (!r.ok) return;
    const data = await r.json();
    recent.replaceChildren(...data.recent.reverse().map((a) => el("li", {},
      `${a.watch}: ${a.id}${a.camera ? " @ " + a.camera : ""}${a.time ? " " + a.time : ""} (${a.reason}` +
      `${a.confidence != null ? " " + Number(a.confidence).toFixed(2) : ""})`)));
  }

  async function remove(name) {
    const r = await api("/api/v1/watches/" + encodeURIComponent(name), { method: "DELETE" });
    msg.textContent = r.ok ? `removed ${name}` : ((await r.json()).error || {}).message;
    await refresh();
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = Object.fromEntries(new FormData(form).entries());
    const q = document.getElementById("q");
    const body = { name: f.name, text: f.text || (f.plate ? null : (q && q.value) || null), plate: f.plate || null,
      min_confidence: f.min_confidence ? Number(f.min_confidence) : null, url: f.url || null };
    const r = await api("/api/v1/watches", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const data = await r.json();
    msg.textContent = r.ok ? `saved ${data.name}` : ((data.error || {}).message || r.statusText);
    if (r.ok) form.reset();
    await refresh();
  });

  bell.addEventListener("click", async () => {
    panel.hidden = !panel.hidden;
    if (!panel.hidden) {
      await showRecent();
      await api("/api/v1/alerts/seen", { method: "POST" });
      await refresh();
    }
  });

  refresh().then(() => { document.body.dataset.alertsLoaded = "1"; });
  setInterval(refresh, 30000);
  return { refresh };
})();
