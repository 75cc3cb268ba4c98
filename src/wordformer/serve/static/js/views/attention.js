// Attention of every layer and head (small maps) and one large causal map of the chosen head.
// Data: attention[layer][head][query] = weights over keys 0..query (the mask makes the rest 0).

import { cividis, el, fmt, hideTip, inkOn, showTip, svg } from "../util.js";

const MASKED = "#eceef2";

function drawMini(canvas, rows, size) {
  const t = rows.length, cell = size / t;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = MASKED;
  ctx.fillRect(0, 0, size, size);
  rows.forEach((row, i) => row.forEach((w, j) => {
    ctx.fillStyle = cividis(w);
    ctx.fillRect(j * cell, i * cell, Math.ceil(cell), Math.ceil(cell));
  }));
}

export function renderGrid(box, data, layer, head, onPick) {
  box.replaceChildren();
  const t = data.tokens.length;
  const room = (box.clientWidth || 480) - 64;  // the row label takes the rest
  const size = Math.max(40, Math.min(120, Math.max(48, 4 * t), Math.floor(room / data.num_heads) - 12));
  data.attention.forEach((heads, l) => {
    const row = el("div", { class: "row" }, el("span", { class: "row-label", text: `layer ${l}` }));
    heads.forEach((rows, h) => {
      const canvas = el("canvas", { width: size, height: size, "aria-hidden": "true" });
      drawMini(canvas, rows, size);
      const button = el("button", {
        type: "button", class: "mini", "aria-pressed": String(l === layer && h === head),
        "aria-label": `layer ${l}, head ${h}: show this head's attention`, dataset: { layer: l, head: h },
        onclick: () => onPick(l, h),
      }, canvas, el("span", { text: `head ${h}` }));
      canvas.addEventListener("pointermove", (e) => {
        const r = canvas.getBoundingClientRect();
        const i = Math.floor(((e.clientY - r.top) / r.height) * t), j = Math.floor(((e.clientX - r.left) / r.width) * t);
        if (i < 0 || j < 0 || i >= t || j >= t) return;
        const q = data.tokens[i].label, k = data.tokens[j].label;
        showTip(j > i ? `layer ${l} head ${h}\n${q} → ${k}: masked (a later token)` :
          `layer ${l} head ${h}\n${q} (#${i}) → ${k} (#${j}): ${fmt(rows[i][j])}`, e);
      });
      canvas.addEventListener("pointerleave", hideTip);
      row.append(button);
    });
    box.append(row);
  });
}

// The big map as SVG (also what the export writes). onRow(i) selects a query token.
export function bigMapSvg(data, layer, head, selected, onRow) {
  const rows = data.attention[layer][head];
  const labels = data.tokens.map((tok) => tok.label);
  const t = labels.length;
  const cell = Math.max(14, Math.min(44, Math.floor(520 / t)));
  const longest = Math.min(14, Math.max(...labels.map((s) => s.length)));
  const left = 28 + longest * 7.5, top = 28 + longest * 7.5, legend = 46;
  const title = `layer ${layer}, head ${head}: masked self-attention weights`;
  const width = Math.max(left + t * cell + legend + 10, title.length * 7 + 12), height = top + t * cell + 34;
  const node = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `attention of layer ${layer}, head ${head}: ${t} by ${t} causal map`, "font-family": "DejaVu Sans, Arial, sans-serif" });
  const short = (s) => (s.length > 14 ? s.slice(0, 13) + "…" : s);
  node.append(svg("text", { x: 4, y: 14, "font-size": 12, "font-weight": "bold", text: title }));
  labels.forEach((lab, j) => node.append(svg("text", {
    x: 0, y: 0, "font-size": 11, transform: `translate(${left + j * cell + cell / 2 + 4},${top - 6}) rotate(-60)`, text: short(lab),
  })));
  node.append(svg("text", { x: left + (t * cell) / 2, y: height - 6, "font-size": 11, "text-anchor": "middle", fill: "#5d6778", text: "key: the token looked at →" }));
  rows.forEach((row, i) => {
    const g = svg("g", { class: "map-row", "data-row": i });
    g.append(svg("text", { x: left - 6, y: top + i * cell + cell / 2 + 4, "font-size": 11, "text-anchor": "end",
      "font-weight": i === selected ? "bold" : null, text: short(labels[i]) }));
    for (let j = 0; j < t; j++) {
      const w = j <= i ? row[j] : null;
      const rect = svg("rect", { x: left + j * cell, y: top + i * cell, width: cell - 1, height: cell - 1,
        fill: w == null ? MASKED : cividis(w), "data-weight": w == null ? "" : w });
      rect.addEventListener("pointermove", (e) => showTip(w == null
        ? `${labels[i]} → ${labels[j]}: masked\n(the query cannot see later tokens)`
        : `query ${labels[i]} (#${i}) → key ${labels[j]} (#${j})\nweight ${fmt(w)}  (layer ${layer}, head ${head})`, e));
      rect.addEventListener("pointerleave", hideTip);
      if (onRow) rect.addEventListener("click", () => onRow(i));
      g.append(rect);
      if (w != null && cell >= 30) g.append(svg("text", { x: left + j * cell + cell / 2, y: top + i * cell + cell / 2 + 4,
        "font-size": 10, "text-anchor": "middle", fill: inkOn(w), "pointer-events": "none", text: w.toFixed(2) }));
    }
    if (i === selected) g.append(svg("rect", { x: left - 1, y: top + i * cell - 1, width: t * cell + 1, height: cell + 1,
      fill: "none", stroke: "#1f6fd1", "stroke-width": 2, "pointer-events": "none" }));
    node.append(g);
  });
  node.append(svg("text", { x: 4, y: top + (t * cell) / 2, "font-size": 11, fill: "#5d6778",
    transform: `rotate(-90 10 ${top + (t * cell) / 2})`, "text-anchor": "middle", text: "query: attending token" }));
  // colour legend 0..1
  const lx = left + t * cell + 16, steps = 20, lh = Math.max(80, t * cell);
  for (let s = 0; s < steps; s++) node.append(svg("rect", { x: lx, y: top + (lh * s) / steps, width: 12, height: lh / steps + 0.5, fill: cividis(1 - s / steps) }));
  node.append(svg("text", { x: lx + 16, y: top + 9, "font-size": 10, text: "1" }));
  node.append(svg("text", { x: lx + 16, y: top + lh, "font-size": 10, text: "0" }));
  return node;
}

// The whole grid as one SVG, for export.
export function gridSvg(data) {
  const t = data.tokens.length, cell = Math.max(4, Math.min(16, Math.floor(160 / t))), size = t * cell, gap = 24;
  const width = Math.max(70 + data.num_heads * (size + gap), 250), height = 30 + data.num_layers * (size + gap);
  const node = svg("svg", { width, height, "font-family": "DejaVu Sans, Arial, sans-serif" });
  node.append(svg("text", { x: 4, y: 14, "font-size": 12, "font-weight": "bold", text: "all layers and heads" }));
  data.attention.forEach((heads, l) => heads.forEach((rows, h) => {
    const x0 = 70 + h * (size + gap), y0 = 30 + l * (size + gap);
    if (h === 0) node.append(svg("text", { x: 4, y: y0 + size / 2, "font-size": 11, text: `layer ${l}` }));
    if (l === 0) node.append(svg("text", { x: x0, y: y0 - 4, "font-size": 10, text: `head ${h}` }));
    node.append(svg("rect", { x: x0, y: y0, width: size, height: size, fill: MASKED }));
    rows.forEach((row, i) => row.forEach((w, j) => node.append(svg("rect", { x: x0 + j * cell, y: y0 + i * cell, width: cell, height: cell, fill: cividis(w) }))));
  }));
  return node;
}
