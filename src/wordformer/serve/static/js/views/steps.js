// The chapter's seven steps of masked self-attention for one (layer, head, token), with the model's own
// numbers: the same library function and the same numbers as `wordformer explain --json`.

import { el, fmt, linesSvg } from "../util.js";

export function vec(v, full) {
  const xs = v.map((x) => fmt(x));
  if (!full && xs.length > 8) return `[${xs.slice(0, 6).join(", ")}, …, ${xs.slice(-2).join(", ")}] (${xs.length} values)`;
  return `[${xs.join(", ")}]`;
}

function step(n, title, ...body) {
  return el("div", { class: "step", dataset: { step: n } },
    el("div", { class: "step-title" }, el("span", { class: "n", text: String(n) }), title), ...body);
}

function cell(text, field, row, cls = "") {
  return el("td", { class: cls, dataset: { field, row }, text });
}

export function renderSteps(box, e, labels, full) {
  box.replaceChildren();
  const t = e.token, d = e.head_size, me = labels[t];
  const xname = e.norm === "pre" ? "norm(x)" : "x";
  box.append(el("p", { class: "summary" },
    el("strong", { text: `token #${t} “${me}”` }),
    ` · layer ${e.layer} of ${e.num_layers} · head ${e.head} of ${e.num_heads} · head size ${d} · d_model ${e.d_model} · norm: ${e.norm}`));

  // step 0: what the layer reads
  const input = el("table", {}, el("tr", {}, el("th", { text: "token" }),
    ...(e.layer === 0 ? [el("th", { text: e.embedding_scale !== 1 ? `token embedding × √d_model (${fmt(e.embedding_scale, 3)})` : "token embedding" }),
      el("th", { text: "+ positional encoding" })] : []),
    el("th", { text: e.layer === 0 ? "= input x" : `input x (output of layer ${e.layer - 1})` }),
    ...(e.norm === "pre" ? [el("th", { text: "norm(x), what attention reads" })] : [])));
  for (let i = 0; i <= t; i++) {
    input.append(el("tr", { class: i === t ? "self" : "" }, el("td", { class: "tokcell", text: labels[i] }),
      ...(e.layer === 0 ? [cell(vec(e.embedding[i], full), "embedding", i, "vec"), cell(vec(e.position[i], full), "position", i, "vec")] : []),
      cell(vec(e.block_input[i], full), "block_input", i, "vec"),
      ...(e.norm === "pre" ? [cell(vec(e.attention_input[i], full), "attention_input", i, "vec")] : [])));
  }
  box.append(step(0, e.layer === 0 ? "input: token embedding + positional encoding" : `input of layer ${e.layer}`, input));

  box.append(step(1, `query of “${me}”: q = W_q ${xname} + b_q`,
    el("div", { class: "eq", dataset: { field: "query" }, text: `q = ${vec(e.query, full)}` })));

  const scores = el("table", {}, el("tr", {},
    el("th", { text: "token" }), el("th", { text: "2 · key k" }), el("th", { text: "3 · q · k" }),
    el("th", { text: `÷ √${d}` }), el("th", { text: "4 · softmax weight" })));
  const values = el("table", {}, el("tr", {},
    el("th", { text: "token" }), el("th", { text: "weight" }), el("th", { text: "5 · value v" }), el("th", { text: "6 · weight × v" })));
  for (let i = 0; i <= t; i++) {
    const w = e.weights[i];
    const wcell = cell(fmt(w), "weights", i);
    wcell.append(el("span", { class: "bar", style: `width:${Math.round(50 * w)}px`, "aria-hidden": "true" }));
    scores.append(el("tr", { class: i === t ? "self" : "" }, el("td", { class: "tokcell", text: labels[i] }),
      cell(vec(e.keys[i], full), "keys", i, "vec"), cell(fmt(e.dot_products[i]), "dot_products", i),
      cell(fmt(e.scores[i]), "scores", i), wcell));
    values.append(el("tr", { class: i === t ? "self" : "" }, el("td", { class: "tokcell", text: labels[i] }),
      el("td", { text: fmt(w) }), cell(vec(e.values[i], full), "values", i, "vec"),
      cell(vec(e.weighted[i], full), "weighted", i, "vec")));
  }
  box.append(step("2–4", `keys of “${me}” and of every token before it (later tokens are masked), their dot products with the query, scaled by 1/√${d}, and the softmax: the attention weights, which sum to 1`, scores));
  box.append(step("5–6", `the values of the same tokens (v = W_v ${xname} + b_v), each multiplied by its attention weight`, values));

  box.append(step(7, `sum of the weighted values = the masked self-attention value of “${me}” (head ${e.head})`,
    el("div", { class: "eq", dataset: { field: "summed" }, text: vec(e.summed, full) }),
    t === 0 ? el("div", { class: "muted", text: "the first token sees only itself: its weight is 1 and the sum is its own value" }) : null));

  const after = [];
  if (e.num_heads > 1) after.push(el("div", { class: "eq", dataset: { field: "head_outputs" }, text: `all ${e.num_heads} heads' sums side by side: ${vec(e.head_outputs, full)}` }));
  after.push(el("div", { class: "eq", dataset: { field: "attention_output" }, text: `attention output (W_o · heads + b_o): ${vec(e.attention_output, full)}` }));
  after.push(el("div", { class: "eq", dataset: { field: "residual" },
    text: `residual connection = input + attention output = ${vec(e.block_input[t], full)} + ${vec(e.attention_output, full)} = ${vec(e.residual, full)}` }));
  if (e.normed_residual) after.push(el("div", { class: "eq", dataset: { field: "normed_residual" }, text: `after the layer norm (post-norm): ${vec(e.normed_residual, full)}` }));
  box.append(el("div", { class: "step" }, el("div", { class: "step-title", text: "residual connection" }), ...after));

  const top = el("table", {}, el("tr", {}, el("th", { text: "next token" }), el("th", { text: "probability" })));
  e.top.forEach((x, i) => top.append(el("tr", {}, el("td", { class: "tokcell", text: x.label || x.token }), cell(fmt(x.probability), "top", i))));
  box.append(el("div", { class: "step" }, el("div", { class: "step-title",
    text: `next token after “${me}” (the whole model: feed-forward, ${e.num_layers} layer(s), output layer)` }), top));
}

// The steps as a text worksheet (what the SVG/PNG export draws), like `wordformer explain`.
export function stepsSvg(e, labels) {
  const t = e.token, lines = [];
  const row = (i, s) => `  ${String(i).padStart(3)} ${labels[i].padEnd(10)} ${s}`;
  lines.push(`layer ${e.layer}, head ${e.head}, head size ${e.head_size}, d_model ${e.d_model}, norm ${e.norm}`, "");
  lines.push("0. input" + (e.layer === 0 ? ": token embedding + positional encoding" : ""));
  for (let i = 0; i <= t; i++) lines.push(row(i, vec(e.block_input[i])));
  lines.push(`1. query q = ${vec(e.query)}`, "2. keys");
  for (let i = 0; i <= t; i++) lines.push(row(i, `k = ${vec(e.keys[i])}`));
  lines.push(`3. q . k, / sqrt(${e.head_size})`);
  for (let i = 0; i <= t; i++) lines.push(row(i, `${fmt(e.dot_products[i])}  ${fmt(e.scores[i])}`));
  lines.push("4. softmax weights");
  for (let i = 0; i <= t; i++) lines.push(row(i, fmt(e.weights[i])));
  lines.push("5. values");
  for (let i = 0; i <= t; i++) lines.push(row(i, `v = ${vec(e.values[i])}`));
  lines.push("6. weighted values");
  for (let i = 0; i <= t; i++) lines.push(row(i, vec(e.weighted[i])));
  lines.push(`7. sum = ${vec(e.summed)}`, "", `attention output ${vec(e.attention_output)}`, `residual ${vec(e.residual)}`, "", "next token:");
  e.top.forEach((x) => lines.push(`  ${(x.label || x.token).padEnd(12)} ${fmt(x.probability)}`));
  return linesSvg(lines, `masked self-attention of token ${t} “${labels[t]}”`);
}
