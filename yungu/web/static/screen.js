// The big screen (大屏): a 1920x1080 stage scaled to the display, updated by server-sent events.
// The map is a stylised network of the regions drawn here (no geographic base map, no borders).
import { h, clear, t, addStrings, lang, setLang, nameOf, fmtTime, fmtHour, fmtNum, fmtPct, methodTag } from "./common.js";
import { lineChart, bar } from "./chart.js";

addStrings({
  title: ["云谷 · 算力网络调度监测大屏", "Yungu compute network — live operations"],
  compute: ["算力总量（P，申报 / 在用）", "Compute (P, declared / in use)"],
  util: ["资源利用率", "Utilisation"], util_dev: ["加速卡", "Accelerators"], util_cpu: ["CPU", "CPUs"],
  power: ["实时功率", "Power now"], energy_today: ["今日电量", "Energy today"], pue: ["PUE", "PUE"],
  it_power: ["IT 功率", "IT power"], nodes: ["节点上报", "nodes reporting"],
  green: ["绿电占比（当前 / 48 小时预测）", "Green share (now / 48 h forecast)"],
  carbon: ["今日碳减排（对比电网平均）", "Carbon avoided today (vs grid average)"],
  jobs: ["作业", "Jobs"], running: ["运行", "running"], queued: ["排队", "queued"],
  index: ["算力价格指数", "Price index"], ticker: ["交易与结算", "Trades and settlements"],
  trade: ["成交", "trade"], settlement: ["结算", "settlement"], live: ["实时", "LIVE"], stale: ["连接中断", "reconnecting"],
  signin_needed: ["大屏需要运营人员会话：运行 `yungu screen` 获取一次性登录链接，或先登录控制台。",
    "The big screen needs an operator session: run `yungu screen` for a one-time sign-in link, or sign in to the console first."],
  flows: ["作业流向", "Job flows"], map_note: ["示意网络图（非地理底图）", "Stylised network map (not a geographic base map)"],
  no_trades: ["暂无成交", "No trades yet"],
});
if (new URLSearchParams(location.search).get("lang") === "en") setLang("en");

// Stylised positions (viewBox 1000x760), placed by hand to echo the regions' relative places.
const POS = { horinger: [400, 170], beijing: [690, 200], wuhu: [740, 470], suzhou: [900, 440], chongqing: [240, 500], guizhou: [330, 650] };
const CLASS_COLORS = { general: "#37d0ff", intelligent: "#7cf29c", supercomputing: "#b18cff" };
const stage = document.getElementById("stage");
let doc = null, lastMsg = 0, arcSig = "", tickSig = "", es = null;
const sigs = {};
// Re-draw a part only when what it shows changed: the stream sends the whole document every
// second, and rebuilding unchanged SVG and cards would churn the DOM for nothing.
function changed(key, value) {
  const sig = JSON.stringify(value);
  if (sigs[key] === sig) return false;
  sigs[key] = sig;
  return true;
}

function fit() {
  const s = Math.min(innerWidth / 1920, innerHeight / 1080);
  stage.style.transform = `translate(${(innerWidth - 1920 * s) / 2}px, ${(innerHeight - 1080 * s) / 2}px) scale(${s})`;
}
addEventListener("resize", fit);

const el = {};
function panel(title, id, ...body) { return h("div", { class: "panel", id }, h("div", { class: "panel-title" }, title, h("span", { class: "m", id: id + "-m" })), ...body); }
function big(id, unit) { el[id] = h("span", { class: "num", id }); return h("div", { class: "big" }, el[id], unit ? h("span", { class: "unit" }, unit) : null); }

function build() {
  clear(stage);
  el.clock = h("div", { class: "clock", id: "clock" });
  el.live = h("div", { class: "live", id: "live" }, t("stale"));
  const classRows = ["intelligent", "general", "supercomputing"].map((k) => {
    el["cls-" + k] = h("span", { class: "num", id: "total-" + k });
    el["use-" + k] = h("span", { class: "sub", id: "inuse-" + k });
    el["bar-" + k] = h("div", { class: "barwrap" });
    return h("div", { class: "cls" }, h("div", { class: "cls-name" }, h("i", { class: "dot c-" + k }), t(k)), el["cls-" + k], h("span", { class: "unit" }, "P"), el["use-" + k], el["bar-" + k]);
  });
  el.utilDev = h("div", { class: "barwrap" }); el.utilCpu = h("div", { class: "barwrap" });
  el.utilDevN = h("span", { class: "num sm", id: "util-dev" }); el.utilCpuN = h("span", { class: "num sm", id: "util-cpu" });
  el.map = h("svg:svg", { viewBox: "0 0 1000 760", class: "map", id: "map" });
  el.greenChart = h("div", { class: "chartbox", id: "green-chart" });
  el.indexChart = h("div", { class: "chartbox", id: "index-chart" });
  el.cards = h("div", { class: "regions", id: "region-cards" });
  el.ticker = h("div", { class: "ticker-track", id: "ticker" });
  stage.append(
    h("header", {}, h("div", { class: "logo" }, h("img", { src: "/static/favicon.svg", alt: "" })), h("h1", { id: "screen-title" }, t("title")),
      h("div", { class: "platform", id: "platform" }), el.live, el.clock),
    h("div", { class: "body" },
      h("div", { class: "col" },
        panel(t("compute"), "p-compute", ...classRows),
        panel(t("util"), "p-util", h("div", { class: "kv" }, h("span", {}, t("util_dev")), el.utilDevN, el.utilDev),
          h("div", { class: "kv" }, h("span", {}, t("util_cpu")), el.utilCpuN, el.utilCpu)),
        panel(t("power"), "p-power", big("power-kw", "kW"),
          h("div", { class: "trio" },
            h("div", {}, h("label", {}, t("it_power")), h("span", { id: "it-kw", class: "num sm" }), " kW"),
            h("div", {}, h("label", {}, t("energy_today")), h("span", { id: "energy-kwh", class: "num sm" }), " kWh", h("span", { class: "m", id: "energy-m" })),
            h("div", {}, h("label", {}, t("pue")), h("span", { id: "pue", class: "num sm" }), h("span", { class: "m", id: "pue-m" }))),
          h("div", { class: "sub", id: "nodes" }))),
      h("div", { class: "center" }, h("div", { class: "map-title" }, t("flows"), h("span", { class: "map-note" }, t("map_note"))), el.map),
      h("div", { class: "col" },
        panel(t("green"), "p-green", h("div", { class: "row2" }, big("green-now", "%"), el.greenChart)),
        panel(t("carbon"), "p-carbon", big("carbon-kg", "kgCO₂e"), h("div", { class: "sub", id: "carbon-sub" })),
        panel(t("jobs"), "p-jobs", h("div", { class: "row2" },
          h("div", {}, h("label", {}, t("running")), h("span", { class: "num", id: "jobs-running" })),
          h("div", {}, h("label", {}, t("queued")), h("span", { class: "num", id: "jobs-queued" })))),
        panel(t("index"), "p-index", el.indexChart))),
    el.cards,
    h("div", { class: "ticker" }, h("div", { class: "ticker-label" }, t("ticker")), h("div", { class: "ticker-view" }, el.ticker)));
  drawMapBase();
  fit();
}

const $ = (id) => document.getElementById(id);
function setNum(id, v, digits = 1) { const e = $(id); if (e) { e.textContent = fmtNum(v, digits); e.dataset.value = v; } }
function setMethod(id, m) { if (!changed("m-" + id, m)) return; const e = $(id); if (e) clear(e).append(methodTag(m)); }

function pos(id, i, n) {
  if (POS[id]) return POS[id];
  const a = (2 * Math.PI * i) / Math.max(n, 1);
  return [500 + 320 * Math.cos(a), 400 + 280 * Math.sin(a)];
}

function drawMapBase() {
  const defs = h("svg:defs", {},
    h("svg:pattern", { id: "dots", width: 16, height: 16, patternUnits: "userSpaceOnUse" }, h("svg:circle", { cx: 2, cy: 2, r: 1, fill: "#1b3a63" })),
    h("svg:radialGradient", { id: "glow" }, h("svg:stop", { offset: "0%", "stop-color": "#37d0ff", "stop-opacity": "0.55" }), h("svg:stop", { offset: "100%", "stop-color": "#37d0ff", "stop-opacity": "0" })));
  el.map.append(defs, h("svg:rect", { width: 1000, height: 760, fill: "url(#dots)" }));
  el.mesh = h("svg:g", { class: "mesh" }); el.arcs = h("svg:g", { class: "arcs", id: "arcs" }); el.nodes = h("svg:g", { class: "nodes" });
  el.map.append(el.mesh, el.arcs, el.nodes);
}

function drawNodes(regions) {
  clear(el.mesh); clear(el.nodes);
  regions.forEach((a, i) => regions.forEach((b, j) => {
    if (j <= i) return;
    const [x1, y1] = pos(a.id, i, regions.length), [x2, y2] = pos(b.id, j, regions.length);
    el.mesh.append(h("svg:line", { x1, y1, x2, y2 }));
  }));
  regions.forEach((r, i) => {
    const [x, y] = pos(r.id, i, regions.length);
    const p = Object.values(r.declared_pflops).reduce((s, v) => s + v, 0);
    const rad = 10 + Math.min(26, Math.sqrt(p) / 3);
    el.nodes.append(h("svg:g", { class: "node" + (r.home ? " home" : ""), "data-region": r.id },
      h("svg:circle", { cx: x, cy: y, r: rad * 2.4, fill: "url(#glow)" }),
      h("svg:circle", { cx: x, cy: y, r: rad, class: "core" }),
      h("svg:text", { x, y: y - rad - 12, "text-anchor": "middle", class: "label" }, nameOf(r)),
      h("svg:text", { x, y: y + rad + 22, "text-anchor": "middle", class: "sub", id: "node-p-" + r.id }, fmtNum(p, 0) + " P")));
  });
}

function drawArcs(regions, flows) {
  const sig = JSON.stringify(flows.arcs);
  if (sig === arcSig) return;
  arcSig = sig;
  clear(el.arcs);
  const idx = Object.fromEntries(regions.map((r, i) => [r.id, i]));
  for (const a of flows.arcs) {
    if (!(a.from in idx) || !(a.to in idx)) continue;
    const n = a.running + a.finished;
    const [x1, y1] = pos(a.from, idx[a.from], regions.length), [x2, y2] = pos(a.to, idx[a.to], regions.length);
    const cls = a.running ? "arc live" : "arc done";
    const w = 1.5 + Math.min(6, Math.log2(1 + n));
    if (a.from === a.to) {
      el.arcs.append(h("svg:circle", { cx: x1, cy: y1, r: 34, class: "loop " + cls, "stroke-width": w, "data-from": a.from, "data-to": a.to }));
      continue;
    }
    const mx = (x1 + x2) / 2, my = (y1 + y2) / 2, dx = x2 - x1, dy = y2 - y1, len = Math.hypot(dx, dy) || 1;
    const cx = mx - (dy / len) * len * 0.25, cy = my + (dx / len) * len * 0.25;
    const d = `M${x1},${y1} Q${cx},${cy} ${x2},${y2}`;
    el.arcs.append(h("svg:path", { d, class: cls, "stroke-width": w, "data-from": a.from, "data-to": a.to }));
    if (a.running) {
      for (let k = 0; k < Math.min(3, a.running); k++) {
        el.arcs.append(h("svg:circle", { r: 4, class: "pulse" },
          h("svg:animateMotion", { dur: "2.4s", repeatCount: "indefinite", path: d, begin: `${(k * 0.8).toFixed(1)}s` })));
      }
    }
    el.arcs.append(h("svg:text", { x: cx, y: cy, "text-anchor": "middle", class: "arc-n" }, String(n)));
  }
}

function drawCards(regions) {
  clear(el.cards);
  for (const r of regions) {
    const decl = Object.values(r.declared_pflops).reduce((s, v) => s + v, 0);
    const use = Object.values(r.in_use_pflops).reduce((s, v) => s + v, 0);
    el.cards.append(h("div", { class: "rcard" + (r.home ? " home" : ""), "data-region": r.id },
      h("div", { class: "rname" }, nameOf(r)),
      h("div", { class: "rrow" }, h("span", {}, fmtNum(decl, 0)), h("small", {}, " P"), h("em", {}, fmtNum(use, 2) + " P")),
      bar(decl ? use / decl : 0),
      h("div", { class: "rgrid" },
        h("span", {}, fmtNum(r.facility_kw, 3) + " kW"), methodTag(r.power_method),
        h("span", {}, (lang === "zh" ? "绿电 " : "green ") + fmtPct(r.green_share_now)), methodTag("modelled"),
        h("span", {}, `${t("running")} ${r.jobs_running}`), h("span", {}, "PUE " + (r.pue ?? "—")))));
  }
}

const regionLabel = (id) => (id ? nameOf(doc.regions.find((r) => r.id === id) || { id }) : "");

function drawTicker(activity) {
  const sig = activity.items.map((x) => x.at + (x.job_id || x.product)).join("|");
  if (sig === tickSig) return;
  tickSig = sig;
  clear(el.ticker);
  const items = activity.items.length ? activity.items : [{ kind: "none" }];
  const row = () => items.map((x) => x.kind === "none" ? h("span", { class: "tick" }, t("no_trades")) :
    x.kind === "trade" ? h("span", { class: "tick trade" }, `${fmtTime(x.at, false)} ${t("trade")} ${regionLabel(x.region)} ${x.accelerator_class} ¥${x.price ?? "—"}/${lang === "zh" ? "卡·时" : "device-h"} × ${x.volume}`)
      : h("span", { class: "tick settle" }, `${fmtTime(x.at, false)} ${t("settlement")} ${regionLabel(x.region)} ${x.pool_id} ¥${x.amount} · ${Number(x.facility_kwh).toFixed(4)} kWh`));
  el.ticker.append(...row(), ...row()); // twice: the CSS loop scrolls by half
  el.ticker.style.animationDuration = Math.max(20, items.length * 6) + "s";
}

function update(d) {
  const first = !doc || doc.regions.length !== d.regions.length;
  doc = d; lastMsg = Date.now();
  $("platform").textContent = d.platform.name;
  for (const k of ["intelligent", "general", "supercomputing"]) {
    const c = d.capacity.classes[k];
    setNum("total-" + k, c.declared_pflops, 1);
    el["use-" + k].textContent = `${t("running")} ${fmtNum(c.in_use_pflops, 2)} P`;
    el["use-" + k].dataset.value = c.in_use_pflops;
    if (changed("bar-" + k, [c.in_use_pflops, c.declared_pflops]))
      clear(el["bar-" + k]).append(bar(c.declared_pflops ? c.in_use_pflops / c.declared_pflops : 0, "c-" + k));
  }
  setMethod("p-compute-m", d.capacity.method);
  el.utilDevN.textContent = fmtPct(d.utilisation.devices, 2); el.utilCpuN.textContent = fmtPct(d.utilisation.cpus, 2);
  el.utilDevN.dataset.value = d.utilisation.devices; el.utilCpuN.dataset.value = d.utilisation.cpus;
  if (changed("util", d.utilisation)) { clear(el.utilDev).append(bar(d.utilisation.devices)); clear(el.utilCpu).append(bar(d.utilisation.cpus)); }
  setMethod("p-util-m", d.utilisation.method);
  setNum("power-kw", d.power.facility_kw, 3); setNum("it-kw", d.power.it_kw, 3); setMethod("p-power-m", d.power.method);
  setNum("energy-kwh", d.energy.facility_kwh, 3); setMethod("energy-m", d.energy.method);
  setNum("pue", d.pue.value, 2); setMethod("pue-m", d.pue.method);
  $("nodes").textContent = `${d.power.nodes_reporting} ${t("nodes")}`;
  setNum("green-now", d.green.now === null ? null : 100 * d.green.now, 1); setMethod("p-green-m", d.green.method);
  if (changed("green", [d.green.forecast, lang])) clear(el.greenChart).append(lineChart([{ color: "#7cf29c", points: d.green.forecast.map((p) => ({ x: Date.parse(p.t), y: p.share === null ? null : 100 * p.share })) }],
    { width: 300, height: 120, area: true, yMin: 0, yMax: 100, yFmt: (v) => v.toFixed(0) + "%", xFmt: (x) => fmtHour(new Date(x).toISOString()), pad: { l: 36, b: 18 }, class: "dark" }));
  setNum("carbon-kg", d.carbon.avoided_kg, 3); setMethod("p-carbon-m", d.carbon.method);
  $("carbon-sub").textContent = `${lang === "zh" ? "位置法" : "location"} ${fmtNum(d.carbon.location_kg, 3)} kg · ${lang === "zh" ? "市场法" : "market"} ${fmtNum(d.carbon.market_kg, 3)} kg`;
  setNum("jobs-running", d.jobs.running, 0); setNum("jobs-queued", d.jobs.queued, 0); setMethod("p-jobs-m", d.jobs.method);
  const colors = ["#ffb547", "#37d0ff", "#7cf29c", "#ff6b8b", "#b18cff"];
  const series = Object.entries(d.price_index).map(([, v], i) => ({ color: colors[i % colors.length], points: v.points.map((p) => ({ x: Date.parse(p.at), y: Number(p.price) })) }));
  if (changed("index", [d.price_index, lang])) clear(el.indexChart).append(lineChart(series, { width: 420, height: 150, yFmt: (v) => "¥" + v.toFixed(0), pad: { l: 44 }, empty: t("no_trades"), class: "dark" }));
  setMethod("p-index-m", "measured");
  if (first) drawNodes(d.regions);
  for (const r of d.regions) {
    const e = $("node-p-" + r.id);
    if (e) e.textContent = `${fmtNum(Object.values(r.declared_pflops).reduce((s, v) => s + v, 0), 0)} P · ${r.jobs_running}`;
  }
  drawArcs(d.regions, d.flows);
  if (changed("cards", d.regions)) drawCards(d.regions);
  drawTicker(d.activity);
}

async function connect() {
  const who = await fetch("/api/v1/session", { credentials: "same-origin", cache: "no-store" }).then((x) => x.json()).catch(() => null);
  if (!who || !who.signed_in) { showNotice(t("signin_needed")); setTimeout(connect, 5000); return; }
  es = new EventSource("/api/v1/overview/stream");
  es.addEventListener("overview", (m) => { hideNotice(); update(JSON.parse(m.data)); });
  es.onerror = () => {
    if (es.readyState !== EventSource.CLOSED) return; // the browser reconnects by itself
    es.close();
    setTimeout(connect, 3000);
  };
}
let notice = null;
function showNotice(text) { if (!notice) { notice = h("div", { class: "notice", id: "notice" }, text); document.body.append(notice); } }
function hideNotice() { if (notice) { notice.remove(); notice = null; } }

setInterval(() => {
  el.clock.textContent = fmtTime(new Date().toISOString());
  const fresh = Date.now() - lastMsg < 3000;
  el.live.textContent = fresh ? "● " + t("live") : t("stale");
  el.live.className = "live" + (fresh ? " on" : "");
}, 500);

build();
connect();
