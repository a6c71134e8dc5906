// A small SVG line/area chart (no library): series of {x: ms, y: number}.
import { h } from "./common.js";

export function lineChart(series, opts = {}) {
  const W = opts.width || 600, H = opts.height || 200;
  const pad = { l: 48, r: 12, t: 12, b: 24, ...(opts.pad || {}) };
  const pts = series.flatMap((s) => s.points).filter((p) => p.y !== null && p.y !== undefined);
  const svg = h("svg:svg", { viewBox: `0 0 ${W} ${H}`, class: "chart " + (opts.class || ""), role: "img",
    "aria-label": opts.label || "chart", preserveAspectRatio: "none" });
  if (!pts.length) {
    svg.setAttribute("viewBox", `0 0 ${W} 48`);
    svg.append(h("svg:text", { x: W / 2, y: 30, "text-anchor": "middle", class: "chart-empty" }, opts.empty || "—"));
    return svg;
  }
  const xs = pts.map((p) => p.x), ys = pts.map((p) => p.y);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || x0 + 1;
  const y0 = opts.yMin ?? Math.min(0, ...ys), y1 = opts.yMax ?? (Math.max(...ys) * 1.1 || 1);
  const X = (x) => pad.l + ((x - x0) / (x1 - x0 || 1)) * (W - pad.l - pad.r);
  const Y = (y) => H - pad.b - ((y - y0) / (y1 - y0 || 1)) * (H - pad.t - pad.b);
  const yFmt = opts.yFmt || ((v) => v.toFixed(1));
  for (let i = 0; i <= 4; i++) {
    const v = y0 + ((y1 - y0) * i) / 4, y = Y(v);
    svg.append(h("svg:line", { x1: pad.l, x2: W - pad.r, y1: y, y2: y, class: "grid" }));
    svg.append(h("svg:text", { x: pad.l - 6, y: y + 4, "text-anchor": "end", class: "axis" }, yFmt(v)));
  }
  if (opts.xFmt) {
    for (let i = 0; i <= 4; i++) {
      const x = x0 + ((x1 - x0) * i) / 4;
      svg.append(h("svg:text", { x: X(x), y: H - 6, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle",
        class: "axis" }, opts.xFmt(x)));
    }
  }
  for (const s of series) {
    const p = s.points.filter((q) => q.y !== null && q.y !== undefined);
    if (!p.length) continue;
    const d = p.map((q, i) => `${i ? "L" : "M"}${X(q.x).toFixed(1)},${Y(q.y).toFixed(1)}`).join("");
    if (opts.area) {
      svg.append(h("svg:path", { d: `${d}L${X(p[p.length - 1].x).toFixed(1)},${Y(y0)}L${X(p[0].x).toFixed(1)},${Y(y0)}Z`,
        fill: s.color, "fill-opacity": "0.18", stroke: "none" }));
    }
    svg.append(h("svg:path", { d, fill: "none", stroke: s.color, "stroke-width": opts.stroke || 2,
      "vector-effect": "non-scaling-stroke" }));
    if (p.length === 1) svg.append(h("svg:circle", { cx: X(p[0].x), cy: Y(p[0].y), r: 3, fill: s.color }));
  }
  return svg;
}

// A horizontal bar: share in [0, 1].
export function bar(share, cls = "") {
  const pct = Math.max(0, Math.min(1, share || 0)) * 100;
  const fill = h("div", { class: "bar-fill " + cls });
  fill.style.width = pct.toFixed(1) + "%";
  return h("div", { class: "bar" }, fill);
}
