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

// What happens to q and k between the projection and step 3 (qk_norm, RoPE), and step 3's factor.
export function qkTransforms(e) {
  const rope = e.positional === "rope";
  const then = (e.qk_norm ? ", then RMS-normalised per head (qk_norm)" : "") + (rope ? ", then rotated by its position (RoPE)" : "");
  const d = e.head_size, sqrt = Math.sqrt(d);
  const plain = !e.scale || Math.abs(e.scale - sqrt) <= 1e-9 * sqrt;
  return { rope, then, scaleLabel: plain ? `÷ √${d}` : `× attn_scale ${fmt(1 / e.scale, 4)}`,
    scaleText: plain ? `scaled by 1/√${d}` : `scaled by attn_scale = ${fmt(1 / e.scale, 4)}` };
}

export function renderSteps(box, e, labels, full) {
  box.replaceChildren();
  const t = e.token, d = e.head_size, me = labels[t];
  const xname = e.norm === "pre" ? "norm(x)" : "x";
  const qk = qkTransforms(e);
  const qStages = e.query_stages || [], kStages = e.keys_stages || [];
  const addsPosition = e.layer === 0 && !qk.rope;
  box.append(el("p", { class: "summary" },
    el("strong", { text: `token #${t} “${me}”` }),
    ` · layer ${e.layer} of ${e.num_layers} · head ${e.head} of ${e.num_heads} · head size ${d} · d_model ${e.d_model} · norm: ${e.norm}`));

  // step 0: what the layer reads
  const input = el("table", {}, el("tr", {}, el("th", { text: "token" }),
    ...(addsPosition ? [el("th", { text: e.embedding_scale !== 1 ? `token embedding × √d_model (${fmt(e.embedding_scale, 3)})` : "token embedding" }),
      el("th", { text: "+ positional encoding" })] : []),
    el("th", { text: e.layer === 0 ? "= input x" : `input x (output of layer ${e.layer - 1})` }),
    ...(e.norm === "pre" ? [el("th", { text: "norm(x), what attention reads" })] : [])));
  for (let i = 0; i <= t; i++) {
    input.append(el("tr", { class: i === t ? "self" : "" }, el("td", { class: "tokcell", text: labels[i] }),
      ...(addsPosition ? [cell(vec(e.embedding[i], full), "embedding", i, "vec"), cell(vec(e.position[i], full), "position", i, "vec")] : []),
      cell(vec(e.block_input[i], full), "block_input", i, "vec"),
      ...(e.norm === "pre" ? [cell(vec(e.attention_input[i], full), "attention_input", i, "vec")] : [])));
  }
  const title0 = e.layer > 0 ? `input of layer ${e.layer}`
    : qk.rope ? "input: token embedding (RoPE adds no positional vector: positions rotate the queries and keys in steps 1–2)"
    : "input: token embedding + positional encoding";
  box.append(step(0, title0, input));

  box.append(step(1, `query of “${me}”: q = W_q ${xname} + b_q${qk.then}`,
    ...qStages.map((s, k) => el("div", { class: "eq", dataset: { field: "query_stages", row: k }, text: `${s.stage}: ${vec(s.value, full)}` })),
    el("div", { class: "eq", dataset: { field: "query" }, text: `q = ${vec(e.query, full)}` })));

  const scores = el("table", {}, el("tr", {},
    el("th", { text: "token" }), ...kStages.map((s) => el("th", { text: `key, ${s.stage}` })),
    el("th", { text: kStages.length ? `2 · key k${qk.rope ? " (rotated)" : " (normalised)"}` : "2 · key k" }),
    el("th", { text: "3 · q · k" }), el("th", { text: qk.scaleLabel }), el("th", { text: "4 · softmax weight" })));
  const values = el("table", {}, el("tr", {},
    el("th", { text: "token" }), el("th", { text: "weight" }), el("th", { text: "5 · value v" }), el("th", { text: "6 · weight × v" })));
  for (let i = 0; i <= t; i++) {
    const w = e.weights[i];
    const wcell = cell(fmt(w), "weights", i);
    wcell.append(el("span", { class: "bar", style: `width:${Math.round(50 * w)}px`, "aria-hidden": "true" }));
    scores.append(el("tr", { class: i === t ? "self" : "" }, el("td", { class: "tokcell", text: labels[i] }),
      ...kStages.map((s, k) => el("td", { class: "vec", dataset: { field: "keys_stages", row: i, stage: k }, text: vec(s.value[i], full) })),
      cell(vec(e.keys[i], full), "keys", i, "vec"), cell(fmt(e.dot_products[i]), "dot_products", i),
      cell(fmt(e.scores[i]), "scores", i), wcell));
    values.append(el("tr", { class: i === t ? "self" : "" }, el("td", { class: "tokcell", text: labels[i] }),
      el("td", { text: fmt(w) }), cell(vec(e.values[i], full), "values", i, "vec"),
      cell(vec(e.weighted[i], full), "weighted", i, "vec")));
  }
  const keysThen = qk.then.replace("its position", "each key's position");
  const rotated = qk.rope ? " (both rotated: each product depends only on how far apart the two tokens are)" : "";
  box.append(step("2–4", `keys of “${me}” and of every token before it (k = W_k ${xname} + b_k${keysThen}; later tokens are masked), their dot products with the query${rotated}, ${qk.scaleText}, and the softmax: the attention weights, which sum to 1`, scores));
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
  const qk = qkTransforms(e);
  lines.push("0. input" + (e.layer === 0 ? (qk.rope ? ": token embedding (RoPE: no positional vector)" : ": token embedding + positional encoding") : ""));
  for (let i = 0; i <= t; i++) lines.push(row(i, vec(e.block_input[i])));
  lines.push(`1. query = W_q x + b_q${qk.then}`);
  (e.query_stages || []).forEach((s) => lines.push(`   ${s.stage}: ${vec(s.value)}`));
  lines.push(`   q = ${vec(e.query)}`, `2. keys${qk.then.replace("its position", "each key's position")}`);
  (e.keys_stages || []).forEach((s) => {
    lines.push(`   ${s.stage}:`);
    for (let i = 0; i <= t; i++) lines.push(row(i, `k = ${vec(s.value[i])}`));
  });
  if ((e.keys_stages || []).length) lines.push("   used in step 3:");
  for (let i = 0; i <= t; i++) lines.push(row(i, `k = ${vec(e.keys[i])}`));
  lines.push(`3. q . k, ${qk.scaleText.replace("√", "sqrt ")}`);
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
