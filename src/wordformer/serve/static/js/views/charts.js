// Model-wide charts: token embeddings (scatter), positional encoding (heatmap), training curves (lines).

import { diverging, fmt, hideTip, showTip, svg } from "../util.js";

function hover(node, text) {
  node.addEventListener("pointermove", (e) => showTip(text, e));
  node.addEventListener("pointerleave", hideTip);
  return node;
}

function axes(node, x0, y0, w, h, xr, yr, xlabel, ylabel) {
  const ticks = (lo, hi) => {  // "nice" steps: 1, 2 or 5 times a power of ten
    const raw = (hi - lo) / 4 || 1, mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const out = [], digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      const x = Math.abs(v) < step * 1e-9 ? 0 : v;
      out.push([x, Math.abs(x) >= 1e5 || (x !== 0 && digits > 4) ? x.toExponential(1) : x.toFixed(digits)]);
    }
    return out;
  };
  const sx = (x) => x0 + ((x - xr[0]) / (xr[1] - xr[0] || 1)) * w, sy = (y) => y0 + h - ((y - yr[0]) / (yr[1] - yr[0] || 1)) * h;
  node.append(svg("rect", { x: x0, y: y0, width: w, height: h, fill: "none", stroke: "#d9dee7" }));
  for (const [t, label] of ticks(...xr)) {
    node.append(svg("line", { x1: sx(t), x2: sx(t), y1: y0, y2: y0 + h, stroke: "#eef0f4" }));
    node.append(svg("text", { x: sx(t), y: y0 + h + 13, "font-size": 10, "text-anchor": "middle", text: label }));
  }
  for (const [t, label] of ticks(...yr)) {
    node.append(svg("line", { x1: x0, x2: x0 + w, y1: sy(t), y2: sy(t), stroke: "#eef0f4" }));
    node.append(svg("text", { x: x0 - 4, y: sy(t) + 3, "font-size": 10, "text-anchor": "end", text: label }));
  }
  node.append(svg("text", { x: x0 + w / 2, y: y0 + h + 28, "font-size": 11, "text-anchor": "middle", fill: "#5d6778", text: xlabel }));
  if (ylabel) node.append(svg("text", { x: 12, y: y0 + h / 2, "font-size": 11, "text-anchor": "middle", fill: "#5d6778", transform: `rotate(-90 12 ${y0 + h / 2})`, text: ylabel }));
  return [sx, sy];
}

function short(x) {
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(1);
  return Number(x.toPrecision(3)).toString();
}

function range(xs, floor = -Infinity) {
  let lo = Math.min(...xs), hi = Math.max(...xs);
  if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
  const pad = (hi - lo) * 0.08;
  return [Math.max(floor, lo - pad), hi + pad];
}

export function embeddingsSvg(data) {
  const width = 540, height = 440, x0 = 52, y0 = 26, w = width - x0 - 14, h = height - y0 - 46;
  const node = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "font-family": "DejaVu Sans, Arial, sans-serif",
    "aria-label": "token embeddings" });
  const pts = data.points;
  node.append(svg("text", { x: 4, y: 14, "font-size": 12, "font-weight": "bold",
    text: `token embeddings, d_model ${data.d_model} (${data.method === "pca" ? "projected by PCA" : "as they are"}${data.tied ? ", shared with the output layer" : ""})` }));
  const [sx, sy] = axes(node, x0, y0, w, h, range(pts.map((p) => p.x)), range(pts.map((p) => p.y)), data.x_label, data.y_label);
  const labelAll = pts.length <= 40;
  const placed = [];  // tokens on (almost) the same point: stack their labels instead of overprinting
  const spot = (x, y) => {
    let dy = 0;
    while (placed.some(([a, b]) => Math.abs(a - x) < 40 && Math.abs(b - (y + dy)) < 11)) dy += 11;
    placed.push([x, y + dy]);
    return y + dy;
  };
  for (const p of pts) {
    if (p.in_prompt) continue;
    const c = hover(svg("circle", { cx: sx(p.x), cy: sy(p.y), r: 3.5, fill: p.special ? "#8a8f99" : "#6b93c9", "fill-opacity": 0.8 }),
      `${p.label} (id ${p.id})\n(${fmt(p.x, 3)}, ${fmt(p.y, 3)})`);
    node.append(c);
    if (labelAll) node.append(svg("text", { x: sx(p.x) + 5, y: spot(sx(p.x), sy(p.y) - 4), "font-size": 10, fill: "#5d6778", text: p.label }));
  }
  for (const p of pts.filter((q) => q.in_prompt)) {  // the prompt's tokens on top, labelled
    node.append(hover(svg("circle", { cx: sx(p.x), cy: sy(p.y), r: 5, fill: "#e8710a", stroke: "#fff" }),
      `${p.label} (id ${p.id}, in the prompt)\n(${fmt(p.x, 3)}, ${fmt(p.y, 3)})`));
    const lx = Math.min(sx(p.x) + 6, x0 + w - 6 * p.label.length);
    node.append(svg("text", { x: lx, y: spot(lx, sy(p.y) - 5), "font-size": 11, "font-weight": "bold", fill: "#a34c00", text: p.label }));
  }
  return node;
}

// Words of ``text`` in lines of at most ``n`` characters.
function wrapWords(text, n) {
  const lines = [];
  for (const word of text.split(" ")) {
    const last = lines[lines.length - 1];
    if (last !== undefined && (last + " " + word).length <= n) lines[lines.length - 1] = last + " " + word;
    else lines.push(word);
  }
  return lines;
}

export function positionalSvg(data, used) {
  const table = data.table, P = table.length, C = table[0].length;
  const cw = Math.max(2, Math.min(36, Math.floor(380 / C))), ch = Math.max(2, Math.min(22, Math.floor(300 / P)));
  const x0 = 52, width = Math.max(x0 + C * cw + 60, 420);
  const titleLines = wrapWords(data.title, Math.floor((width - 8) / 7));  // ~7 px per bold 12-px character
  const y0 = 16 + 14 * titleLines.length, height = Math.max(y0 + P * ch + 36, 210);
  const node = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "font-family": "DejaVu Sans, Arial, sans-serif",
    "aria-label": data.title });
  titleLines.forEach((line, i) => node.append(svg("text", { x: 4, y: 14 + 14 * i, "font-size": 12, "font-weight": "bold", text: line })));
  const lim = Math.max(1e-8, ...table.map((r) => Math.max(...r.map(Math.abs))));
  table.forEach((row, p) => row.forEach((v, d) => node.append(hover(svg("rect", {
    x: x0 + d * cw, y: y0 + p * ch, width: cw, height: ch, fill: diverging(v / lim),
  }), `position ${p}, ${data.kind === "rope" ? `pair ${d >> 1}` : `dimension ${d}`}${data.kind === "learned" ? "" : (d % 2 ? " (cos)" : " (sin)")}\nvalue ${fmt(v)}`))));
  if (used > 0) node.append(svg("rect", { x: x0 - 2, y: y0 - 1, width: C * cw + 4, height: Math.min(used, P) * ch + 2, fill: "none", stroke: "#e8710a", "stroke-width": 2 }));
  const step = Math.max(1, Math.ceil(P / 12));
  for (let p = 0; p < P; p += step) node.append(svg("text", { x: x0 - 4, y: y0 + p * ch + ch / 2 + 3, "font-size": 9, "text-anchor": "end", text: p }));
  node.append(svg("text", { x: 4, y: height - 8, "font-size": 11, fill: "#5d6778", text: "dimension →  (rows: position; orange: the prompt's positions)" }));
  for (let s = 0; s < 20; s++) node.append(svg("rect", { x: x0 + C * cw + 16, y: y0 + s * 8, width: 10, height: 8, fill: diverging(1 - s / 10) }));
  node.append(svg("text", { x: x0 + C * cw + 30, y: y0 + 8, "font-size": 9, text: fmt(lim, 2) }));
  node.append(svg("text", { x: x0 + C * cw + 30, y: y0 + 160, "font-size": 9, text: fmt(-lim, 2) }));
  return node;
}

const CURVES = [
  ["loss", ["train_loss", "val_loss"], "cross-entropy loss"],
  ["perplexity", ["val_ppl"], "validation perplexity"],
  ["accuracy", ["val_acc"], "next-token accuracy"],
  ["learning rate", null, "learning rate"],
];
const COLOURS = ["#1f6fd1", "#e8710a", "#0f7b4a", "#7a3db8"];

export function curvesSvgs(data) {
  const out = [];
  for (const [title, names, ylabel] of CURVES) {
    const keys = names || Object.keys(data.series).filter((k) => k.startsWith("lr-")).slice(0, 1);
    const series = keys.filter((k) => data.series[k]).map((k) => [k, data.series[k]]);
    if (!series.length) continue;
    const width = 340, height = 220, x0 = 56, y0 = 24, w = width - x0 - 12, h = height - y0 - 44;
    const node = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, "font-family": "DejaVu Sans, Arial, sans-serif" });
    node.append(svg("text", { x: 4, y: 14, "font-size": 12, "font-weight": "bold", text: title }));
    const xs = series.flatMap(([, s]) => s.step), ys = series.flatMap(([, s]) => s.value);
    const [sx, sy] = axes(node, x0, y0, w, h, [Math.min(...xs), Math.max(...xs)], range(ys, Math.min(...ys) >= 0 ? 0 : -Infinity), "step", ylabel);
    series.forEach(([name, s], k) => {
      const d = s.step.map((x, i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(s.value[i]).toFixed(1)}`).join("");
      node.append(svg("path", { d, fill: "none", stroke: COLOURS[k], "stroke-width": 1.6 }));
      if (s.step.length <= 60) s.step.forEach((x, i) => node.append(hover(svg("circle", { cx: sx(x), cy: sy(s.value[i]), r: 3, fill: COLOURS[k] }),
        `${name}\nstep ${x}: ${short(s.value[i])}`)));
      node.append(svg("text", { x: x0 + 6 + k * 110, y: y0 + 12, "font-size": 10, fill: COLOURS[k], text: name.startsWith("lr-") ? "learning rate" : name }));
    });
    // hover anywhere: the nearest logged step of the first series
    const hit = svg("rect", { x: x0, y: y0, width: w, height: h, fill: "transparent" });
    hit.addEventListener("pointermove", (e) => {
      const r = hit.getBoundingClientRect(), frac = (e.clientX - r.left) / r.width;
      const lines = series.map(([name, s]) => {
        const target = s.step[0] + frac * (s.step[s.step.length - 1] - s.step[0]);
        let best = 0;
        s.step.forEach((x, i) => { if (Math.abs(x - target) < Math.abs(s.step[best] - target)) best = i; });
        return `${name} at step ${s.step[best]}: ${short(s.value[best])}`;
      });
      showTip(lines.join("\n"), e);
    });
    hit.addEventListener("pointerleave", hideTip);
    node.append(hit);
    out.push(node);
  }
  return out;
}
