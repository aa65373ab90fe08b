// Sightings (issue 32): each hit says on how many cameras its vehicle was seen ("seen at N cameras",
// from GET /api/v1/sightings/{id}, asked once the card scrolls into view); clicking it opens a
// timeline strip under the card: one row per camera in the order the vehicle reached them, the crops
// in time order with their same-vehicle probability; confident sightings first, the rest dimmed.
"use strict";

(function () {
  const K = 30;  // candidates weighed per hit
  const style = document.createElement("style");
  style.textContent = `
    .seen { font-size: 12px; border: 1px solid #bbb; border-radius: 10px; background: #f4f4f4; padding: 1px 8px; cursor: pointer; }
    .seen[aria-expanded="true"] { background: #dde8ff; }
    .timeline { display: flex; flex-direction: column; gap: 4px; margin-top: 6px; font-size: 11px; }
    .timeline .tl-row { display: flex; align-items: center; gap: 4px; overflow-x: auto; }
    .timeline .tl-row.other { opacity: .55; }
    .timeline .tl-cam { min-width: 88px; font-weight: 600; }
    .timeline figure { margin: 0; text-align: center; }
    .timeline img { height: 48px; border-radius: 3px; display: block; }
    .timeline .tl-note { color: #666; }`;
  document.head.append(style);

  const cache = new Map();  // hit id -> the API's body
  async function sightingsOf(id) {
    if (!cache.has(id)) {
      cache.set(id, api(`/api/v1/sightings/${encodeURIComponent(id)}?k=${K}`).then(async (r) => {
        const d = await r.json();
        if (!r.ok) throw new Error((d.error && d.error.message) || r.statusText);
        return d;
      }));
    }
    return cache.get(id);
  }

  function label(d) {
    const n = d.calibrated && d.confident_cameras ? d.confident_cameras : d.cameras;
    return `seen at ${n} camera${n === 1 ? "" : "s"}`;
  }

  function strip(d) {
    const box = el("div", { class: "timeline", role: "list" });
    const rows = (groups, other) => {
      for (const g of groups) {
        const row = el("div", { class: "tl-row" + (other ? " other" : ""), role: "listitem", "data-camera": g.camera || "" },
          [el("span", { class: "tl-cam", text: `${g.camera || "?"} ${g.first ? showTime(g.first) : ""}` })]);
        for (const s of g.sightings) {
          const p = s.probability === null || s.probability === undefined ? "" : `${Math.round(s.probability * 100)}%`;
          row.append(el("figure", { class: "tl-crop", "data-id": s.id, title: `${s.time ? showTime(s.time) : ""} ${s.plate || ""}` }, [
            el("a", { href: s.image_url, target: "_blank", rel: "noopener" }, [el("img", { src: s.thumb_url, alt: s.id, loading: "lazy" })]),
            el("figcaption", { text: p }),
          ]));
        }
        box.append(row);
      }
    };
    rows(d.confident, false);
    rows(d.others, true);
    if (d.note) box.append(el("div", { class: "tl-note", text: d.note }));
    if (!d.confident.length && !d.others.length) box.append(el("div", { class: "tl-note", text: "seen nowhere else" }));
    return box;
  }

  function attach(c) {
    if (c.dataset.seen || !c.dataset.id) return;
    c.dataset.seen = "asking";
    const btn = el("button", { class: "seen", type: "button", "aria-expanded": "false", text: "seen at … cameras",
      title: "this vehicle at the other cameras, on a timeline" });
    (c.querySelector(".actions") || c).append(btn);
    const show = (d) => { btn.textContent = label(d); c.dataset.seen = String(d.cameras); };
    const ask = () => sightingsOf(c.dataset.id).then(show, (e) => { btn.textContent = "sightings: error"; btn.title = e.message; });
    new IntersectionObserver((entries, obs) => { if (entries.some((e) => e.isIntersecting)) { obs.disconnect(); ask(); } }).observe(c);
    btn.addEventListener("click", async (e) => {
      e.stopPropagation();
      const open = c.querySelector(".timeline");
      if (open) { open.remove(); btn.setAttribute("aria-expanded", "false"); return; }
      try {
        const d = await sightingsOf(c.dataset.id);
        show(d);
        c.querySelector(".body").append(strip(d));
        btn.setAttribute("aria-expanded", "true");
        document.body.dataset.timelines = String(Number(document.body.dataset.timelines || 0) + 1);  // tests wait on it
      } catch (err) { showError(err.message); }
    });
  }

  new MutationObserver(() => document.querySelectorAll("#grid .card").forEach(attach))
    .observe(document.getElementById("grid"), { childList: true });
})();
