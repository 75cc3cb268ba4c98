// Tokens with ids: specials marked, BPE pieces readable, the selected token highlighted.
// Keyboard: the list is one tab stop; arrow keys, Home and End move the selection.

import { el, hoverable } from "../util.js";

export function tokenTitle(tok, i) {
  const parts = [`position ${i} · id ${tok.id}`];
  if (tok.special === "eos") parts.push("<eos>: end of sequence (ends the input, starts the answer; generation stops at it)");
  if (tok.special === "pad") parts.push("<pad>: fills batches, never generated");
  if (tok.special === "unk") parts.push("<unk>: a word the vocabulary does not hold");
  if (tok.entry !== undefined && tok.entry !== tok.label && !tok.special) parts.push(`vocabulary entry ${JSON.stringify(tok.entry)}`);
  if (tok.bytes) parts.push(`bytes ${tok.bytes}`);
  for (const c of tok.chars || []) parts.push(`part of ${JSON.stringify(c.text)} (tokens ${c.span[0]}–${c.span[1]} together)`);
  return parts.join("\n");
}

export function chip(tok, i, extra = "") {
  const cls = ["tok", tok.special ? `special-${tok.special}` : "", tok.partial ? "partial" : "", extra].filter(Boolean).join(" ");
  const node = el("span", { class: cls }, el("span", { class: "lbl", text: tok.label }), el("span", { class: "id", text: String(tok.id) }));
  // a piece of a character split over several tokens (byte-level BPE): name the character it helps spell
  for (const c of tok.chars || []) node.append(el("span", { class: "char", text: `⟨${c.text ?? "?"}⟩` }));
  return hoverable(node, tokenTitle(tok, i));
}

export function renderTokens(box, seq, selected, onSelect) {
  box.replaceChildren();
  const n = seq.tokens.length;
  seq.tokens.forEach((tok, i) => {
    if (seq.answer_starts != null && i === seq.answer_starts) box.append(el("span", { class: "answer-mark", text: "answer →" }));
    const extra = [i >= seq.generatedFrom ? "generated" : "", seq.answer_starts != null && i >= seq.answer_starts ? "answer" : ""].join(" ");
    const node = chip(tok, i, extra);
    node.setAttribute("role", "option");
    node.setAttribute("aria-selected", String(i === selected));
    node.setAttribute("aria-label", `token ${i}: ${tok.label}, id ${tok.id}`);
    node.dataset.index = i;
    node.tabIndex = i === selected ? 0 : -1;
    node.append(el("span", { class: "pos", text: `#${i}` }));
    node.addEventListener("click", () => onSelect(i));
    box.append(node);
  });
  box.onkeydown = (e) => {
    const moves = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 };
    let next = null;
    if (e.key in moves) next = Math.min(n - 1, Math.max(0, selected + moves[e.key]));
    else if (e.key === "Home") next = 0;
    else if (e.key === "End") next = n - 1;
    if (next == null) return;
    e.preventDefault();
    onSelect(next, true);
  };
}

export function focusToken(box, i) {
  const node = box.querySelector(`[data-index="${i}"]`);
  if (node) node.focus();
}
