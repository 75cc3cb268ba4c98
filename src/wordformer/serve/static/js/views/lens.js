// The logit lens (each stage's top token per position) and the head switches (ablation).

import { el, fmt, hoverable, linesSvg, pct } from "../util.js";

export function renderSwitches(box, numLayers, numHeads, off, onToggle) {
  box.replaceChildren(el("span", { class: "muted", text: "heads (click to switch off):" }));
  const isOff = (l, h) => off.some(([a, b]) => a === l && b === h);
  for (let l = 0; l < numLayers; l++) {
    const group = el("span", { class: "layer" }, el("span", { class: "muted", text: `layer ${l}` }));
    for (let h = 0; h < numHeads; h++) {
      group.append(el("button", { type: "button", "aria-pressed": String(!isOff(l, h)), dataset: { layer: l, head: h },
        "aria-label": `layer ${l} head ${h} ${isOff(l, h) ? "off" : "on"}`, onclick: () => onToggle(l, h), text: `h${h}` }));
    }
    box.append(group);
  }
}

export function renderAblation(box, data, labels) {
  box.replaceChildren();
  if (!data.ablate.length) {
    box.append(el("p", { class: "muted", text: `Every head is on. Switch heads off above to see how the prediction after “${labels[data.position]}” changes (their step-7 sums are set to zero before W_o).` }));
    return;
  }
  const off = data.ablate.map(([l, h]) => `layer ${l} head ${h}`).join(", ");
  const table = el("table", {}, el("tr", {}, el("th", { text: "all heads on" }), el("th", {}), el("th", { text: `with ${off} off` })));
  for (let i = 0; i < Math.max(data.before.length, data.after.length); i++) {
    const b = data.before[i], a = data.after[i];
    table.append(el("tr", {}, el("td", { text: b ? `${b.label} ${pct(b.probability)}` : "" }), el("td", { text: "│" }),
      el("td", { text: a ? `${a.label} ${pct(a.probability)}` : "" })));
  }
  box.append(el("p", {}, `Prediction after “${labels[data.position]}”: `,
    el("strong", { text: data.top_changed ? "the most likely token changes" : "the most likely token stays" }),
    ` · KL divergence ${data.kl_divergence > 0 && data.kl_divergence < 1e-3 ? data.kl_divergence.toExponential(2) : fmt(data.kl_divergence, 4)} nats`), table);
}

export function renderLens(box, data, labels, selected) {
  box.replaceChildren();
  const table = el("table", { class: "lens" });
  const head = el("tr", {}, el("th", { text: "stage ↓ · position →" }));
  labels.forEach((lab, i) => head.append(el("th", { text: `${lab}`, title: `position ${i}`, style: i === selected ? "color:#1f6fd1" : null })));
  table.append(head);
  const last = data.stages[data.stages.length - 1];
  data.stages.forEach((stage) => {
    const row = el("tr", {}, el("th", { text: stage.name === "embedding" ? "embedding (input)" : `after ${stage.name}` }));
    stage.top.forEach((tops, i) => {
      const best = tops[0];
      const p = best.probability;
      const final = best.id === last.top[i][0].id;
      const td = el("td", { class: final ? "final" : "", style: `background:rgba(31,111,209,${(0.08 + 0.7 * p).toFixed(2)});color:${p > 0.55 ? "#fff" : "#1c2330"}` },
        best.label, el("span", { class: "p", text: pct(p) }));
      hoverable(td, `${stage.name}, position ${i} (“${labels[i]}”) predicts next:\n` + tops.map((x) => `${x.label}  ${fmt(x.probability)}`).join("\n"));
      row.append(td);
    });
    table.append(row);
  });
  box.append(table, el("p", { class: "muted", text: "Each cell: the most likely next token if the model stopped after that stage (outlined: the same as the model's final answer)." }));
}

export function lensSvg(data, labels) {
  const lines = [];
  const w = 12;
  lines.push("stage".padEnd(16) + labels.map((l) => l.slice(0, w - 1).padEnd(w)).join(""));
  data.stages.forEach((s) => lines.push(s.name.padEnd(16) + s.top.map((t) => `${t[0].label.slice(0, 6)} ${Math.round(100 * t[0].probability)}%`.padEnd(w)).join("")));
  if (data.ablate.length) lines.push("", "heads off: " + data.ablate.map(([l, h]) => `L${l}H${h}`).join(" "), `KL divergence ${fmt(data.kl_divergence)}`);
  return linesSvg(lines, "logit lens: the most likely next token after each stage");
}
