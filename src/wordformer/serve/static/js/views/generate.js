// Generation, token by token: the KV cache grows by one position per token, and the attention of the token
// that made each prediction covers every cached position (layers x heads strips).

import { cividis, el, fmt, hideTip, pct, showTip, svg } from "../util.js";

export function renderCache(box, length, blockSize, fresh) {
  box.replaceChildren(el("span", { class: "muted", text: `KV cache: ${length} of ${blockSize} positions ` }));
  const shown = Math.min(blockSize, 256);
  for (let i = 0; i < shown; i++) {
    const cls = i < length ? (fresh && i === length - 1 ? "slot new" : "slot full") : "slot";
    box.append(el("span", { class: cls, title: i < length ? `position ${i}: keys and values cached` : `position ${i}: empty` }));
  }
  if (blockSize > shown) box.append(el("span", { class: "muted", text: ` … (${blockSize})` }));
}

// event: one streamed token; labels: the labels of the sequence before it (the cached positions)
export function newAttentionSvg(event, labels, layer, head) {
  const att = event.attention, s = att[0][0].length;
  const cell = Math.max(6, Math.min(26, Math.floor(520 / s))), left = 100, top = 40, rowH = 16;
  const rows = att.length * att[0].length;
  const who = labels[s - 1] ?? "";
  const title = `“${event.token.label}” (${pct(event.probability)}) was predicted by “${who}”, which attended to the ${s} cached positions:`;
  const width = Math.max(left + s * cell + 10, Math.ceil(title.length * 7.4) + 10), height = top + rows * (rowH + 2) + 8;
  const node = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "font-family": "DejaVu Sans, Arial, sans-serif",
    "aria-label": `attention of the last token over the ${s} cached positions, every layer and head` });
  node.append(svg("text", { x: 4, y: 14, "font-size": 12, "font-weight": "bold", text: title }));
  labels.slice(0, s).forEach((lab, j) => {
    if (cell >= 14) node.append(svg("text", { x: left + j * cell + cell / 2, y: top - 6, "font-size": 9, "text-anchor": "middle",
      text: lab.length > 3 ? lab.slice(0, 3) : lab }));
  });
  let r = 0;
  att.forEach((heads, l) => heads.forEach((weights, h) => {
    const y = top + r * (rowH + 2);
    const chosen = l === layer && h === head;
    node.append(svg("text", { x: left - 6, y: y + 12, "font-size": 10, "text-anchor": "end", "font-weight": chosen ? "bold" : null,
      text: `layer ${l} head ${h}` }));
    weights.forEach((w, j) => {
      const rect = svg("rect", { x: left + j * cell, y, width: cell - 1, height: rowH, fill: cividis(w) });
      rect.addEventListener("pointermove", (e) => showTip(`layer ${l} head ${h}\n${who} → ${labels[j]} (#${j}): ${fmt(w)}`, e));
      rect.addEventListener("pointerleave", hideTip);
      node.append(rect);
    });
    if (chosen) node.append(svg("rect", { x: left - 1, y: y - 1, width: s * cell + 1, height: rowH + 2, fill: "none", stroke: "#1f6fd1", "stroke-width": 2 }));
    r += 1;
  }));
  return node;
}
