// The page: holds the state (mirrored in the URL), asks this server's /v1/inspect endpoints for numbers,
// and hands them to the views. Every request goes to the page's own origin.

import { get, onKeyNeeded, post, setKey, stream } from "./api.js";
import { ablatedHeads, generatedIds, readState, writeState } from "./state.js";
import { addExports, el, fmt, hideTip, linesSvg, svg } from "./util.js";
import { bigMapSvg, gridSvg, renderGrid } from "./views/attention.js";
import { curvesSvgs, embeddingsSvg, positionalSvg } from "./views/charts.js";
import { distributionSummary, distributionSvg } from "./views/distribution.js";
import { newAttentionSvg, renderCache } from "./views/generate.js";
import { lensSvg, renderAblation, renderLens, renderSwitches } from "./views/lens.js";
import { renderSteps, stepsSvg } from "./views/steps.js";
import { chip, focusToken, renderTokens } from "./views/tokens.js";

const $ = (id) => document.getElementById(id);
const API = "/v1/inspect";
const S = readState();
const D = { cards: [], card: null, seq: null, attention: null, explain: null, dist: null, lens: null, emb: null, pos: null,
  curves: null, events: [], promptIds: [] };
let generation = 0;  // bumps on every refresh: late answers of older requests are dropped
let streaming = null;

function sync() { writeState(S); }
function model() { return D.card ? D.card.id : null; }
function selected() {
  const n = D.seq ? D.seq.ids.length : 0;
  if (!n) return 0;
  return S.t < 0 ? Math.max(0, n + S.t) : Math.min(S.t, n - 1);
}
function labels() { return D.seq ? D.seq.tokens.map((t) => t.label) : []; }
function appendEos() { return S.eos === "" ? undefined : S.eos === "1"; }

function showError(err) {
  const box = $("error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.textContent = err.message || String(err);
}

async function guarded(fn) {
  try { await fn(); } catch (err) { if (err.name !== "AbortError") showError(err); }
}

// ------------------------------------------------------------------------------------------ model

function renderCard(card) {
  const box = $("model-card");
  const item = (k, v) => el("div", {}, el("dt", { text: k }), el("dd", { text: v }));
  const arch = `${card.num_layers} layer${card.num_layers === 1 ? "" : "s"} × ${card.num_heads} head${card.num_heads === 1 ? "" : "s"}`;
  box.replaceChildren(
    item("model", card.id), item("architecture", `decoder-only, ${arch}`), item("d_model", `${card.d_model} (head size ${card.head_size})`),
    item("context (block_size)", String(card.block_size)), item("parameters", card.parameters.toLocaleString("en")),
    item("tokenizer", `${card.tokenizer}, ${card.vocab_size.toLocaleString("en")} tokens`),
    item("positional encoding", card.positional), item("norm", card.norm === "none" ? "none (plain residual)" : `${card.norm}-norm`),
    item("output layer", card.tie_weights ? "tied to the embedding" : "its own weights"),
    item("training steps", card.step == null ? "–" : card.step.toLocaleString("en")),
    item("validation loss", card.val_loss == null ? "–" : fmt(card.val_loss, 4)),
    item("trained on", card.pairs ? "prompt/answer pairs" : "plain text"));
}

async function chooseModel(id, keepPrompt) {
  const card = D.cards.find((c) => c.id === id) || D.cards[0];
  D.card = card;
  S.m = card.id;
  $("model-select").value = card.id;
  renderCard(card);
  $("pairs-note").hidden = !card.pairs;
  if (!keepPrompt || !S.p) S.p = card.example_prompt || "";
  $("prompt").value = S.p;
  $("append-eos").checked = S.eos === "" ? card.pairs : S.eos === "1";
  for (const [sel, n, name] of [["layer-select", card.num_layers, "layer"], ["head-select", card.num_heads, "head"]]) {
    $(sel).replaceChildren(...Array.from({ length: n }, (_, i) => el("option", { value: i, text: `${name} ${i}` })));
  }
  S.l = Math.min(Math.max(0, S.l), card.num_layers - 1);
  S.h = Math.min(Math.max(0, S.h), card.num_heads - 1);
  $("top-k").max = String(Math.min(100, card.vocab_size));
  sync();
  guarded(loadModelWide);
  await refresh();
  if ((!D.seq || D.seq.too_long) && keepPrompt && card.example_prompt && S.p !== card.example_prompt) {
    const before = S.p;  // the prompt does not fit this model: show the model at work on its example instead
    S.p = card.example_prompt;
    $("prompt").value = S.p;
    sync();
    await refresh();
    showError({ message: `“${before.length > 40 ? before.slice(0, 40) + "…" : before}” does not fit ${card.id} (context ${card.block_size} tokens); showing its example prompt.` });
  }
}

async function loadModelWide() {
  const m = model();
  const [pos, curves] = await Promise.all([post(`${API}/positional`, { model: m }), post(`${API}/curves`, { model: m })]);
  if (m !== model()) return;
  D.pos = pos;
  D.curves = curves;
  drawPositional();
  const box = $("curves");
  if (!curves.available) box.replaceChildren(el("p", { class: "muted", text: curves.reason }));
  else box.replaceChildren(...curvesSvgs(curves));
}

function drawPositional() {
  if (D.pos) $("positional").replaceChildren(positionalSvg(D.pos, D.seq ? D.seq.ids.length : 0));
}

// ------------------------------------------------------------------------------------------ sequence

async function refresh(afterGeneration = false) {
  const my = ++generation;
  showError(null);
  const m = model();
  let seq;
  try {
    seq = await post(`${API}/tokens`, { model: m, prompt: S.p, append_eos: appendEos() });
  } catch (err) {
    if (my !== generation) return;
    D.seq = null;
    $("tokens").replaceChildren();
    $("token-count").textContent = "";
    showError(err);
    return;
  }
  D.promptIds = seq.ids;
  const gen = generatedIds(S);
  if (gen.length) {
    try {
      const full = await post(`${API}/tokens`, { model: m, ids: [...seq.ids, ...gen] });
      seq = { ...full, answer_starts: seq.answer_starts };
    } catch (err) { S.g = ""; sync(); }
  }
  if (my !== generation) return;
  seq.generatedFrom = D.promptIds.length;
  D.seq = seq;
  $("token-count").textContent = `${seq.ids.length} of ${seq.block_size} tokens (the model's context)`;
  drawTokens();
  drawPositional();
  $("generated").replaceChildren(...seq.tokens.map((t, i) => chip(t, i, i >= seq.generatedFrom ? "generated" : "")));
  if (afterGeneration && D.events.length) {  // keep the streamed view: the last token's attention, the cache after it
    const last = D.events[D.events.length - 1];
    renderCache($("cache"), last.cache_length, seq.block_size, true);
    $("new-attention").replaceChildren(newAttentionSvg(last, labels(), S.l, S.h));
  } else {
    D.events = [];
    renderCache($("cache"), 0, seq.block_size, false);
    $("new-attention").replaceChildren(el("p", { class: "muted", text: "Press “next token” or “run”: each new token's attention over the KV cache appears here." }));
  }
  $("token-select").replaceChildren(...seq.tokens.map((t, i) => el("option", { value: i, text: `#${i} ${t.label}` })));
  if (seq.too_long) {
    showError({ message: `The prompt has ${seq.ids.length} tokens but this model reads at most ${seq.block_size} (its context, block_size): shorten it to see the model at work.` });
    return;
  }
  await Promise.all([guarded(loadAttention), guarded(loadSelection), guarded(loadEmbeddings)]);
}

function drawTokens() {
  renderTokens($("tokens"), D.seq, selected(), (i, focus) => {
    S.t = i === D.seq.ids.length - 1 ? -1 : i;
    sync();
    drawTokens();
    if (focus) focusToken($("tokens"), i);
    onSelectionChanged();
  });
}

async function loadAttention() {
  const my = generation;
  const data = await post(`${API}/attention`, { model: model(), ids: D.seq.ids });
  if (my !== generation) return;
  D.attention = data;
  drawAttention();
}

function drawAttention() {
  if (!D.attention) return;
  renderGrid($("attention-grid"), D.attention, S.l, S.h, pickHead);
  $("big-map-title").textContent = `layer ${S.l}, head ${S.h} (hover: the weight and the two tokens; click a row: explain that token)`;
  $("big-map").replaceChildren(bigMapSvg(D.attention, S.l, S.h, selected(), (i) => {
    S.t = i === D.seq.ids.length - 1 ? -1 : i;
    sync();
    drawTokens();
    onSelectionChanged();
  }));
}

function pickHead(l, h) {
  S.l = l; S.h = h;
  sync();
  drawAttention();
  $("layer-select").value = l;
  $("head-select").value = h;
  guarded(loadExplain);
}

function onSelectionChanged() {
  drawAttention();
  guarded(loadSelection);
}

async function loadSelection() {
  $("layer-select").value = S.l;
  $("head-select").value = S.h;
  $("token-select").value = selected();
  await Promise.all([guarded(loadExplain), guarded(loadDistribution), guarded(loadLens)]);
}

async function loadExplain() {
  const my = generation, key = `${S.l}.${S.h}.${selected()}`;
  const data = await post(`${API}/explain`, { model: model(), ids: D.seq.ids, layer: S.l, head: S.h, token: selected(), top_k: 5 });
  if (my !== generation || key !== `${S.l}.${S.h}.${selected()}`) return;
  D.explain = data.explanation;
  renderSteps($("steps"), D.explain, labels(), $("full-vectors").checked);
}

function sampling() {
  return { temperature: S.T, top_k: S.k > 0 ? S.k : null, top_p: S.tp < 1 ? S.tp : null };
}

function drawSliders() {
  $("temperature").value = S.T; $("top-k").value = S.k; $("top-p").value = S.tp;
  $("temperature-out").textContent = S.T === 0 ? "0 (greedy)" : Number(S.T).toFixed(2);
  $("top-k-out").textContent = S.k > 0 ? String(S.k) : "off";
  $("top-p-out").textContent = S.tp < 1 ? Number(S.tp).toFixed(2) : "off";
}

async function loadDistribution() {
  const my = generation, key = JSON.stringify([selected(), sampling()]);
  const data = await post(`${API}/distribution`, { model: model(), ids: D.seq.ids, position: selected(), limit: 20, ...sampling() });
  if (my !== generation || key !== JSON.stringify([selected(), sampling()])) return;
  D.dist = data;
  $("distribution-summary").textContent = distributionSummary(data);
  $("distribution").replaceChildren(distributionSvg(data));
}

async function loadLens() {
  const my = generation, key = `${selected()}|${S.off}`;
  const data = await post(`${API}/lens`, { model: model(), ids: D.seq.ids, ablate: ablatedHeads(S), position: selected(), top_k: 3 });
  if (my !== generation || key !== `${selected()}|${S.off}`) return;
  D.lens = data;
  renderSwitches($("head-switches"), D.card.num_layers, D.card.num_heads, data.ablate, toggleHead);
  renderAblation($("ablation"), data, labels());
  renderLens($("lens"), data, labels(), selected());
}

function toggleHead(l, h) {
  const off = ablatedHeads(S);
  const i = off.findIndex(([a, b]) => a === l && b === h);
  if (i >= 0) off.splice(i, 1); else off.push([l, h]);
  S.off = off.map(([a, b]) => `${a}.${b}`).join(",");
  sync();
  guarded(async () => {
    await loadLens();
    const button = $("head-switches").querySelector(`[data-layer="${l}"][data-head="${h}"]`);
    if (button) button.focus();
  });
}

async function loadEmbeddings() {
  const my = generation;
  const data = await post(`${API}/embeddings`, { model: model(), ids: D.seq.ids, limit: 200 });
  if (my !== generation) return;
  D.emb = data;
  $("embeddings").replaceChildren(embeddingsSvg(data));
}

// ------------------------------------------------------------------------------------------ generation

async function generateTokens(count, seed) {
  if (streaming || !D.seq) return;
  const controller = new AbortController();
  streaming = controller;
  for (const id of ["next-token", "run", "reset"]) $(id).disabled = true;
  $("stop").disabled = false;
  const start = D.seq.ids.length;
  const seqLabels = labels();
  const first = D.events.length;  // events of earlier presses stay listed; their tokens are in seqLabels already
  const ids = [...D.seq.ids];
  const box = $("generated");
  let done = null;
  try {
    await stream(`${API}/generate`, { model: model(), ids, max_tokens: count, seed, ...sampling() }, (event) => {
      if (event.done) { done = event; return; }
      D.events.push(event);
      ids.push(event.id);
      box.append(chip(event.token, ids.length - 1, "generated"));
      renderCache($("cache"), event.cache_length, D.seq.block_size, true);
      $("new-attention").replaceChildren(newAttentionSvg(event, seqLabels.concat(D.events.slice(first, -1).map((e) => e.token.label)), S.l, S.h));
    }, controller.signal);
  } catch (err) {
    if (err.name !== "AbortError") showError(err);
  } finally {
    streaming = null;
    for (const id of ["next-token", "run", "reset"]) $(id).disabled = false;
    $("stop").disabled = true;
  }
  const finish = done ? { stop: "stopped at <eos>", length: "", context: "the context (block_size) is full" }[done.finish_reason] : "stopped";
  const added = ids.slice(start);
  if (added.length) {
    S.g = [...generatedIds(S), ...added].join(",");
    S.t = -1;
    sync();
    await refresh(true);
  }
  if (finish) $("generated").append(el("span", { class: "muted", text: `  (${finish})` }));
}

// ------------------------------------------------------------------------------------------ exports

function exportName(view) {
  return `wordformer-${view}-${(model() || "model").replace(/[^A-Za-z0-9_-]+/g, "_")}-L${S.l}H${S.h}T${selected()}`;
}

function side(nodes) {
  let x = 0, h = 0;
  const out = svg("svg", { "font-family": "DejaVu Sans, Arial, sans-serif" });
  for (const n of nodes) {
    const w = Number(n.getAttribute("width")), hh = Number(n.getAttribute("height"));
    const copy = n.cloneNode(true);
    copy.setAttribute("x", x);
    out.append(copy);
    x += w + 16; h = Math.max(h, hh);
  }
  out.setAttribute("width", x); out.setAttribute("height", h);
  return out;
}

function setupExports() {
  const on = (id, view, getSvg, getData) => addExports($(id), () => exportName(view), getSvg, getData);
  on("tokens-card", "tokens", () => D.seq && linesSvg(D.seq.tokens.map((t, i) => `#${String(i).padEnd(4)} id ${String(t.id).padEnd(6)} ${t.label}${t.special ? "  (" + t.special + ")" : ""}`), `tokens of ${JSON.stringify(S.p)}`), () => D.seq);
  on("attention-card", "attention", () => D.attention && side([gridSvg(D.attention), bigMapSvg(D.attention, S.l, S.h, selected())]), () => D.attention);
  on("steps-card", "seven-steps", () => D.explain && stepsSvg(D.explain, labels()), () => D.explain);
  on("distribution-card", "next-token", () => D.dist && distributionSvg(D.dist), () => D.dist);
  on("generate-card", "generation", () => D.events.length && newAttentionSvg(D.events[D.events.length - 1], labels(), S.l, S.h),
    () => D.seq && { ids: D.seq.ids, tokens: D.seq.tokens, generated_from: D.seq.generatedFrom, events: D.events });
  on("lens-card", "logit-lens", () => D.lens && lensSvg(D.lens, labels()), () => D.lens);
  on("inside-card", "embeddings-positional", () => D.emb && D.pos && side([embeddingsSvg(D.emb), positionalSvg(D.pos, D.seq ? D.seq.ids.length : 0)]),
    () => ({ embeddings: D.emb, positional: D.pos }));
  on("curves-card", "training-curves", () => D.curves && D.curves.available && side(curvesSvgs(D.curves)), () => D.curves);
}

// ------------------------------------------------------------------------------------------ wiring

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

function wire() {
  $("model-select").addEventListener("change", (e) => {
    S.g = ""; S.off = ""; S.t = -1; S.eos = "";
    chooseModel(e.target.value, true);
  });
  const typed = debounce(() => { S.p = $("prompt").value; S.g = ""; S.t = -1; sync(); refresh(); }, 350);
  $("prompt").addEventListener("input", typed);
  $("append-eos").addEventListener("change", (e) => { S.eos = e.target.checked ? "1" : "0"; S.g = ""; S.t = -1; sync(); refresh(); });
  $("layer-select").addEventListener("change", (e) => pickHead(Number(e.target.value), S.h));
  $("head-select").addEventListener("change", (e) => pickHead(S.l, Number(e.target.value)));
  $("token-select").addEventListener("change", (e) => {
    const i = Number(e.target.value);
    S.t = i === D.seq.ids.length - 1 ? -1 : i;
    sync(); drawTokens(); onSelectionChanged();
  });
  $("full-vectors").addEventListener("change", () => D.explain && renderSteps($("steps"), D.explain, labels(), $("full-vectors").checked));
  const slid = debounce(() => guarded(loadDistribution), 120);
  for (const [id, key] of [["temperature", "T"], ["top-k", "k"], ["top-p", "tp"]]) {
    $(id).addEventListener("input", (e) => { S[key] = Number(e.target.value); drawSliders(); sync(); slid(); });
  }
  $("seed").value = S.s;
  $("max-new").value = S.n;
  $("seed").addEventListener("change", (e) => { S.s = Math.max(0, Math.floor(Number(e.target.value) || 0)); sync(); });
  $("max-new").addEventListener("change", (e) => { S.n = Math.max(1, Math.floor(Number(e.target.value) || 1)); sync(); });
  $("next-token").addEventListener("click", () => generateTokens(1, S.s + generatedIds(S).length));
  $("run").addEventListener("click", () => generateTokens(S.n, S.s));
  $("stop").addEventListener("click", () => streaming && streaming.abort());
  $("reset").addEventListener("click", () => { S.g = ""; S.t = -1; sync(); refresh(); });
  onKeyNeeded(() => { $("key-row").hidden = false; $("key-input").focus(); });
  $("key-row").addEventListener("submit", (e) => { e.preventDefault(); setKey($("key-input").value); $("key-row").hidden = true; start(); });
  window.addEventListener("scroll", hideTip, { passive: true });
  window.addEventListener("hashchange", () => {  // a pasted URL: take its state
    Object.assign(S, readState());
    drawSliders();
    chooseModel(S.m, true);
  });
  setupExports();
}

async function start() {
  drawSliders();
  try {
    const models = await get(`${API}/models`);
    D.cards = models.data;
    $("model-select").replaceChildren(...D.cards.map((c) => el("option", { value: c.id, text: c.id })));
    await chooseModel(S.m || models.default, Boolean(S.p));
  } catch (err) { showError(err); }
  document.body.dataset.ready = "1";
}

wire();
start();
