// Small helpers shared by the views: DOM and SVG building, colour maps, number formatting, the tooltip,
// and exporting a view as SVG, PNG or JSON. No dependencies, no network.

export const SVG_NS = "http://www.w3.org/2000/svg";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const child of children.flat()) if (child != null) node.append(child);
  return node;
}

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  for (const child of children.flat()) if (child != null) node.append(child);
  return node;
}

function setAttrs(node, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "class") node.setAttribute("class", v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
}

export function fmt(x, digits = 4) {
  if (x == null || Number.isNaN(x)) return "–";
  const s = Number(x).toFixed(digits);
  return /^-0\.0*$/.test(s) ? s.slice(1) : s;  // no "-0.0000"
}

export function pct(x) {
  if (x >= 0.9995) return "100%";
  if (x >= 0.01) return (100 * x).toFixed(1) + "%";
  if (x > 0) return x < 1e-4 ? x.toExponential(1) : (100 * x).toFixed(2) + "%";
  return "0";
}

// cividis-like ramp (the chapter's notebook uses cividis): dark blue -> grey -> yellow
const CIVIDIS = [[0, 34, 78], [38, 60, 109], [87, 92, 109], [124, 123, 120], [165, 157, 117], [209, 194, 98], [253, 234, 69]];
export function cividis(t) {
  t = Math.min(1, Math.max(0, t));
  const x = t * (CIVIDIS.length - 1), i = Math.min(CIVIDIS.length - 2, Math.floor(x)), f = x - i;
  const c = CIVIDIS[i].map((v, k) => Math.round(v + f * (CIVIDIS[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// blue - white - red for signed values in [-1, 1]
export function diverging(t) {
  t = Math.min(1, Math.max(-1, t));
  const a = Math.abs(t), base = t < 0 ? [33, 102, 172] : [178, 24, 43];
  const c = base.map((v) => Math.round(255 + a * (v - 255)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

export function inkOn(t) { return t > 0.6 ? "#111" : "#fff"; }

// ------------------------------------------------------------------------------------------ tooltip

let tip = null;
export function showTip(text, event) {
  tip = tip || document.getElementById("tooltip");
  tip.textContent = text;
  tip.hidden = false;
  let x, y;
  if (event && "clientX" in event && event.clientX) { x = event.clientX + 14; y = event.clientY + 14; }
  else if (event && event.target && event.target.getBoundingClientRect) {
    const r = event.target.getBoundingClientRect(); x = r.right + 6; y = r.bottom + 6;
  } else { x = 10; y = 10; }
  const w = tip.offsetWidth, h = tip.offsetHeight;
  tip.style.left = Math.max(4, Math.min(x, innerWidth - w - 8)) + "px";
  tip.style.top = Math.max(4, Math.min(y, innerHeight - h - 8)) + "px";
}
export function hideTip() { if (tip) tip.hidden = true; }

export function hoverable(node, text) {
  node.addEventListener("pointermove", (e) => showTip(typeof text === "function" ? text() : text, e));
  node.addEventListener("pointerleave", hideTip);
  return node;
}

// ------------------------------------------------------------------------------------------ export

function download(blob, name) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

export function svgText(node) {
  const copy = node.cloneNode(true);
  copy.setAttribute("xmlns", SVG_NS);
  if (!copy.getAttribute("font-family")) copy.setAttribute("font-family", "DejaVu Sans, Arial, sans-serif");
  const bg = svg("rect", { x: 0, y: 0, width: "100%", height: "100%", fill: "#fff" });
  copy.insertBefore(bg, copy.firstChild);
  return new XMLSerializer().serializeToString(copy);
}

export function exportSvg(node, name) {
  download(new Blob([svgText(node)], { type: "image/svg+xml" }), name + ".svg");
}

export function exportPng(node, name, scale = 2) {
  const text = svgText(node);
  const w = Number(node.getAttribute("width")), h = Number(node.getAttribute("height"));
  const img = new Image();
  img.onload = () => {
    const canvas = el("canvas", { width: Math.ceil(w * scale), height: Math.ceil(h * scale) });
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.scale(scale, scale);
    ctx.drawImage(img, 0, 0, w, h);
    canvas.toBlob((blob) => download(blob, name + ".png"), "image/png");
  };
  img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(text);
}

export function exportJson(data, name) {
  download(new Blob([JSON.stringify(data, null, 1)], { type: "application/json" }), name + ".json");
}

// A plain SVG worksheet of text lines (monospace), for the views that are HTML tables on the page.
export function linesSvg(lines, title = "") {
  const size = 13, lh = 17, pad = 12;
  const all = title ? [title, "", ...lines] : lines;
  const width = pad * 2 + Math.max(20, ...all.map((l) => l.length)) * size * 0.61;
  const node = svg("svg", { width: Math.ceil(width), height: pad * 2 + all.length * lh, "font-family": "DejaVu Sans Mono, monospace" });
  all.forEach((line, i) => node.append(svg("text", {
    x: pad, y: pad + (i + 1) * lh - 4, "font-size": size, "xml:space": "preserve",
    "font-weight": title && i === 0 ? "bold" : null, text: line,
  })));
  return node;
}

// Export buttons in a card's corner: getSvg() gives an <svg> element, getData() the view's numbers.
export function addExports(card, name, getSvg, getData) {
  const box = el("div", { class: "exports" });
  const mk = (label, fn) => el("button", { type: "button", class: "ghost", title: `export this view as ${label}`, onclick: fn, text: label });
  box.append(
    mk("PNG", () => { const s = getSvg(); if (s) exportPng(s, name()); }),
    mk("SVG", () => { const s = getSvg(); if (s) exportSvg(s, name()); }),
    mk("JSON", () => { const d = getData(); if (d) exportJson(d, name()); }),
  );
  card.append(box);
}
