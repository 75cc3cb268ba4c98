// The next-token distribution: the model's probabilities, then temperature, top-k and top-p together.
// Grey bar: the model's probability (temperature 1). Blue bar: what sampling draws from (renormalised).
// A cut token keeps its grey bar, loses its blue one, and is struck through.

import { fmt, hideTip, pct, showTip, svg } from "../util.js";

export function distributionSvg(data, shown = 20) {
  const rows = data.tokens.slice(0, shown);
  const labelW = 120, barW = 300, numW = 150, rowH = 20, top = 34;
  const width = labelW + barW + numW, height = top + rows.length * rowH + 10;
  const node = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "next-token probabilities", "font-family": "DejaVu Sans, Arial, sans-serif" });
  node.append(svg("rect", { x: labelW, y: 8, width: 10, height: 10, fill: "#c4cad4" }),
    svg("text", { x: labelW + 14, y: 17, "font-size": 11, text: "model (temperature 1)" }),
    svg("rect", { x: labelW + 160, y: 8, width: 10, height: 10, fill: "#1f6fd1" }),
    svg("text", { x: labelW + 174, y: 17, "font-size": 11, text: "sampled from" }));
  const max = Math.max(1e-9, ...rows.map((r) => Math.max(r.probability, r.renormalised)));
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const g = svg("g", { class: r.kept ? "kept" : "cut", "data-id": r.id });
    const label = r.label.length > 16 ? r.label.slice(0, 15) + "…" : r.label;
    g.append(svg("text", { x: labelW - 6, y: y + 13, "font-size": 12, "text-anchor": "end", "font-family": "DejaVu Sans Mono, monospace",
      fill: r.kept ? "#1c2330" : "#8a8f99", "text-decoration": r.kept ? null : "line-through", text: label }));
    g.append(svg("rect", { x: labelW, y: y + 2, width: Math.max(0.5, (barW * r.probability) / max), height: 7, fill: "#c4cad4" }));
    if (r.kept) g.append(svg("rect", { x: labelW, y: y + 9, width: Math.max(0.5, (barW * r.renormalised) / max), height: 8, fill: "#1f6fd1", class: "renorm" }));
    else g.append(svg("text", { x: labelW + 4 + (barW * r.probability) / max, y: y + 16, "font-size": 9, fill: "#b3261e", text: "cut" }));
    g.append(svg("text", { x: labelW + barW + 6, y: y + 13, "font-size": 11, "font-family": "DejaVu Sans Mono, monospace",
      text: r.kept ? `${pct(r.probability)} → ${pct(r.renormalised)}` : `${pct(r.probability)} → cut` }));
    const hit = svg("rect", { x: 0, y, width, height: rowH, fill: "transparent" });
    hit.addEventListener("pointermove", (e) => showTip(`${r.label} (id ${r.id})\nmodel: ${fmt(r.probability, 6)}\n`
      + `after temperature: ${fmt(r.tempered, 6)}\n${r.kept ? "renormalised: " + fmt(r.renormalised, 6) : "cut by top-k / top-p"}`, e));
    hit.addEventListener("pointerleave", hideTip);
    g.append(hit);
    node.append(g);
  });
  return node;
}

export function distributionSummary(data) {
  const after = data.tokens.length ? data.tokens[0] : null;
  const parts = [
    `after token #${data.position}: `,
    data.temperature === 0 ? "greedy (temperature 0): only the most likely token" :
      `${data.kept_count} of ${data.vocab_size} tokens kept (${pct(data.kept_mass)} of the tempered mass)`,
    ` · entropy ${fmt(data.entropy, 3)} nats (${fmt(data.entropy_bits, 3)} bits), the model's own: ${fmt(data.entropy_before, 3)} nats`,
  ];
  if (after) parts.push(` · most likely: ${after.label}`);
  return parts.join("");
}
