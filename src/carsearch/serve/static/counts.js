// Counts (issue 33): the current search counted by hour and vehicle class through GET /api/v1/counts
// (vehicles, a track once; the same query, filters and time range as the results), drawn as a stacked
// bar per hour under the results. Clicking a bar keeps only that hour (after/before) and searches
// again; clicking it again clears the range. "CSV" downloads the same table.
"use strict";

const CLASS_COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
let countsSeq = 0;

function countsParams() {
  const p = new URLSearchParams();
  if (state.q) p.set("q", state.q);
  for (const f of REQUEST_FILTERS) for (const v of state.filters[f] || []) p.append(f, v);
  addScope((k, v) => p.set(k, v));
  p.set("by", "hour,class");
  return p;
}

function countsPanel() {
  let panel = $("counts-panel");
  if (panel) return panel;
  panel = el("section", { id: "counts-panel", class: "counts-panel", "aria-label": "vehicles per hour and class" }, [
    el("div", { class: "counts-head" }, [
      el("h3", { text: "Vehicles per hour" }),
      el("a", { id: "counts-csv", class: "counts-csv", text: "CSV", title: "this table as CSV (GET /api/v1/counts?format=csv)" }),
    ]),
    el("div", { id: "counts-chart", class: "counts-chart", role: "group", "aria-label": "stacked bars: vehicles per hour by class" }),
    el("div", { id: "counts-axis", class: "hours-axis" }, [el("span", { id: "counts-from" }), el("span", { id: "counts-to" })]),
    el("div", { id: "counts-legend", class: "counts-legend" }),
    el("div", { id: "counts-note", class: "counts-note" }),
  ]);
  $("pager").after(panel);
  return panel;
}

function stackedBars(table) {
  const hours = {};  // hour -> {class: n}
  const totals = {};  // class -> n
  let untimed = 0;
  for (const r of table) {
    if (r.hour === "unknown") { untimed += r.count; continue; }
    (hours[r.hour] = hours[r.hour] || {})[r.class] = r.count;
    totals[r.class] = (totals[r.class] || 0) + r.count;
  }
  const classes = Object.keys(totals).sort((a, b) => totals[b] - totals[a] || a.localeCompare(b));
  const seen = Object.keys(hours).sort();
  // every hour from the first to the last (empty ones too, up to four days), so the bars are a time axis
  let axis = [];
  for (let h = seen[0]; h && axis.length <= 96; h = hourAfter(h)) { axis.push(h); if (h >= seen[seen.length - 1]) break; }
  if (!axis.length || axis.length > 96 || axis[axis.length - 1] !== seen[seen.length - 1]) axis = seen;
  return { hours: axis.map((h) => ({ hour: h, by: hours[h] || {} })), classes, untimed };
}

function drawCountsChart(data) {
  const panel = countsPanel();
  const { hours, classes, untimed } = stackedBars(data.counts);
  const colour = Object.fromEntries(classes.map((c, i) => [c, CLASS_COLOURS[i % CLASS_COLOURS.length]]));
  const chart = $("counts-chart");
  chart.innerHTML = "";
  panel.hidden = !hours.length;
  const width = `min(100%, max(240px, ${hours.length * 44}px))`;  // a few hours stay bars, not a smear
  chart.style.width = width;
  $("counts-axis").style.width = width;
  const max = Math.max(1, ...hours.map((h) => Object.values(h.by).reduce((a, b) => a + b, 0)));
  for (const { hour, by } of hours) {
    const next = hourAfter(hour);
    const on = next && state.after === hour && state.before === next;
    const total = Object.values(by).reduce((a, b) => a + b, 0);
    const parts = classes.filter((c) => by[c]).map((c) => `${c} ${by[c]}`).join(", ");
    const label = `${hour.replace("T", " ")} UTC: ${total} vehicle${total === 1 ? "" : "s"} (${parts})`;
    chart.append(el("button", { type: "button", class: "cbar" + (on ? " on" : ""), "data-hour": hour, "data-total": String(total),
      title: label + (on ? " (click: every hour)" : " (click: only this hour)"), "aria-label": label,
      onclick: () => { if (on) { state.after = ""; state.before = ""; } else if (next) { state.after = hour; state.before = next; }
        state.page = 1; syncScopeInputs(); run(); } },
    classes.filter((c) => by[c]).map((c) => el("span", { class: "cseg", "data-class": c, "data-count": String(by[c]),
      style: `height:${(100 * by[c] / max).toFixed(1)}%;background:${colour[c]}` }))));
  }
  $("counts-from").textContent = hours.length ? hours[0].hour.replace("T", " ") : "";
  $("counts-to").textContent = hours.length > 1 ? hours[hours.length - 1].hour.replace("T", " ") : "";
  const legend = $("counts-legend");
  legend.innerHTML = "";
  for (const c of classes) legend.append(el("span", { class: "ckey", "data-class": c }, [el("i", { style: `background:${colour[c]}` }), c]));
  $("counts-note").textContent = `${data.total} vehicle${data.total === 1 ? "" : "s"} counted (tracks once)` +
    (state.q ? " among the best matches" : "") + (untimed ? `; ${untimed} without a time` : "");
  const csv = countsParams();
  csv.set("format", "csv");
  $("counts-csv").href = "/api/v1/counts?" + csv.toString();
}

async function drawCounts() {
  const seq = ++countsSeq;
  const panel = $("counts-panel");
  // an uploaded photo or "more like this" is not a GET query: no counts for those
  if (!hasQuery() || state.image || state.like) { if (panel) panel.hidden = true; return; }
  try {
    const r = await api("/api/v1/counts?" + countsParams().toString());
    if (seq !== countsSeq) return;  // a newer search asked meanwhile
    const data = await r.json();
    if (!r.ok) { if (panel) panel.hidden = true; return; }
    drawCountsChart(data);
  } finally {
    if (seq === countsSeq) document.body.dataset.counted = String(seq);  // tests wait on it
  }
}

new MutationObserver(drawCounts).observe(document.body, { attributes: true, attributeFilter: ["data-renders"] });
