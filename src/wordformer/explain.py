"""The chapter's seven steps of masked self-attention, with the model's own numbers for one token.

For the chosen layer, head and token, :func:`explain_token` runs the real forward pass, captures the
block's input with a forward hook, and recomputes from it exactly what the block computes:

  1. the token's query;  2. the keys of itself and every preceding token;  3. their scaled dot products
  with the query;  4. the softmax of those (the attention weights);  5. the values;  6. the values
  weighted by the softmax;  7. their sum, the token's masked self-attention value for this head.

With ``qk_norm`` the query and keys are RMS-normalised per head, and with rotary positions (RoPE) rotated by
their positions, before step 3: steps 1 and 2 show each stage, and step 3 uses the final ones.

Then the heads' sums are concatenated and projected back to ``d_model`` (the attention output), the
residual connection adds the block's input, and the model's next-token probabilities at this position
close the picture. With the chapter's toy (d_model = 2, one head) every vector has two numbers, so each
step can be checked by hand. Shape legend: T = tokens, C = d_model, D = head size, V = vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .checkpoint import LoadedModel
from .errors import WordformerError, check_int
from .generation import encode_prompt, never_generated, suppress, top_k_allowed
from .model import WordPredictor
from .positional import rotate
from .token_display import token_labels
from .tokenizers import Tokenizer

__all__ = ["Explanation", "explain_prompt", "explain_token", "format_explanation", "head_projection"]


@dataclass
class Explanation:
    """Every intermediate number of masked self-attention for one token, one head and one layer.

    Rows indexed by key run over the explained token and the tokens before it (``token + 1`` rows).
    """

    tokens: list[str]  # the context's vocabulary entries (T): BPE's raw "Ġthe"
    ids: list[int]  # the context's token ids (T)
    token: int  # position of the explained token, 0-based
    layer: int
    head: int
    num_layers: int
    num_heads: int
    norm: str  # "pre", "post" or "none": what attention reads and where the residual goes
    embedding: Tensor  # (t+1, C) token embeddings of tokens 0..token
    position: Tensor  # (t+1, C) their positional encodings
    block_input: Tensor  # (t+1, C) the layer's input (embedding + position for layer 0)
    attention_input: Tensor  # (t+1, C) what attention reads: norm1(block_input) with pre-norm, else block_input
    query: Tensor  # (D,) step 1: the query step 3 uses (after qk_norm and RoPE, when on)
    keys: Tensor  # (t+1, D) step 2: the keys step 3 uses
    dot_products: Tensor  # (t+1,) step 3 before scaling: q . k
    scores: Tensor  # (t+1,) step 3: q . k * score_factor (1/sqrt(D) unless attn_scale says otherwise)
    weights: Tensor  # (t+1,) step 4: softmax(scores)
    values: Tensor  # (t+1, D) step 5
    weighted: Tensor  # (t+1, D) step 6: weights * values
    summed: Tensor  # (D,) step 7: this head's masked self-attention value
    head_outputs: Tensor  # (C,) every head's step-7 sum, concatenated
    attention_output: Tensor  # (C,) after the output projection
    residual: Tensor  # (C,) block input + attention output (the residual connection values)
    normed_residual: Optional[Tensor]  # (C,) post-norm only: norm1(residual), the block's next value
    probabilities: Tensor  # (V,) the model's next-token distribution here, <pad> at 0 as in generation
    top: list[tuple[str, float]]  # the most likely next tokens, most likely first (never <pad>)
    embedding_scale: float = 1.0  # the token embedding's factor: sqrt(d_model) with sinusoidal positions
    positional: str = "sinusoidal"  # with "rope" nothing is added in step 0 (position is zero)
    qk_norm: bool = False  # queries and keys RMS-normalised per head before step 3
    norm_type: str = "layernorm"  # the block's norms: "layernorm" or "rmsnorm"
    score_factor: float = 0.0  # step 3's factor on q . k: 1/sqrt(D) unless attn_scale says otherwise (0: not recorded)
    query_stages: list[tuple[str, Tensor]] = field(default_factory=list)  # (what, (D,)) before the final query
    keys_stages: list[tuple[str, Tensor]] = field(default_factory=list)  # (what, (t+1, D)) before the final keys
    projections: dict[str, tuple[Tensor, Optional[Tensor]]] = field(default_factory=dict)
    # "query"/"key"/"value"/"output" -> (weight, bias): this head's rows of the linear maps, for checking by hand
    labels: list[str] = field(default_factory=list)  # (T) the tokens as the page shows them: "␣the", "\xf0⟨😀⟩"
    top_labels: list[str] = field(default_factory=list)  # the same for ``top``

    def label(self, i: int) -> str:
        """Token ``i`` as shown (:func:`wordformer.token_display.token_labels`); its entry when none were given."""
        return self.labels[i] if self.labels else self.tokens[i]

    def top_label(self, rank: int) -> str:
        return self.top_labels[rank] if self.top_labels else self.top[rank][0]

    @property
    def head_size(self) -> int:
        return int(self.query.numel())

    @property
    def context(self) -> list[str]:
        """Token strings of the explained token and the tokens it may attend to."""
        return self.tokens[: self.token + 1]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, for JSON (``wordformer explain --json`` and the page's seven-steps view).

        Every tensor field by its name, plus ``head_size``, ``d_model`` and ``scale`` (step 3's divisor: sqrt of
        the head size, or 1 / attn_scale); ``tokens`` are vocabulary entries and ``labels`` what to show; ``top``
        is a list of ``{"token", "label", "probability"}``; ``query_stages``/``keys_stages`` of
        ``{"stage", "value"}`` (before qk_norm and RoPE, when on).
        """
        divisor = 1 / self.score_factor if self.score_factor else math.sqrt(self.head_size)
        out: dict[str, Any] = {"head_size": self.head_size, "d_model": int(self.block_input.size(-1)),
                               "scale": divisor}
        for name, value in self.__dict__.items():
            if isinstance(value, Tensor):
                out[name] = value.tolist()
            elif name == "projections":
                out[name] = {k: {"weight": w.tolist(), "bias": None if b is None else b.tolist()}
                             for k, (w, b) in value.items()}
            elif name == "top":
                out[name] = [{"token": t, "label": self.top_label(k), "probability": p}
                             for k, (t, p) in enumerate(value)]
            elif name == "top_labels":
                continue  # inside "top"
            elif name in ("query_stages", "keys_stages"):
                out[name] = [{"stage": what, "value": v.tolist()} for what, v in value]
            else:
                out[name] = value
        return out


def _as_ids(idx: Union[Tensor, Sequence[int]]) -> list[int]:
    if isinstance(idx, Tensor):
        if idx.dim() == 2 and idx.size(0) == 1:
            idx = idx[0]
        if idx.dim() != 1:
            raise WordformerError(
                f"explain one sequence at a time: token ids of shape (T,) or (1, T), got {tuple(idx.shape)}"
            )
        return [int(i) for i in idx.tolist()]
    return [int(i) for i in idx]


def _check_index(name: str, value: int, count: int, what: str) -> int:
    """``value`` in 0..count-1 (negative counts from the end), or an error naming the valid range."""
    if isinstance(value, bool) or not isinstance(value, int) or not -count <= value < count:
        raise WordformerError(
            f"{name} {value!r} is out of range: {what.format(count, '' if count == 1 else 's')}, "
            f"choose 0..{count - 1} (or -{count}..-1 counting from the end)"
        )
    return value % count


def head_projection(linear: torch.nn.Linear, part: int, head: int, head_size: int) -> tuple[Tensor, Optional[Tensor]]:
    """This head's rows of the fused q/k/v map (``part`` 0 = query, 1 = key, 2 = value): (D, C) and (D,).

    ``qkv`` produces 3 x C channels; channel ``c`` of each C-wide part belongs to head ``c // head_size``.
    """
    c = linear.in_features
    start = part * c + head * head_size
    rows = slice(start, start + head_size)
    bias = None if linear.bias is None else linear.bias.detach()[rows].clone()
    return linear.weight.detach()[rows].clone(), bias


@torch.no_grad()
def explain_token(
    model: WordPredictor,
    idx: Union[Tensor, Sequence[int]],
    layer: int = 0,
    head: int = 0,
    token: int = -1,
    *,
    tokenizer: Optional[Tokenizer] = None,
    top_k: int = 5,
) -> Explanation:
    """The seven steps of masked self-attention for token ``token`` of ``idx`` (ids, (T,) or (1, T)).

    ``layer``, ``head`` and ``token`` accept negative indices (``token=-1``: the last token). The
    numbers come from the model's own forward pass and weights; ``tokenizer`` names the tokens and, as in
    ``predict``/``generate``, its ``<pad>`` (unless it is also ``<eos>``) gets probability 0 and is never in
    ``top``: the model can never produce it, so offering it would contradict them. Without a tokenizer the
    pad id is unknown and the raw distribution is shown.
    """
    ids = _as_ids(idx)
    cfg = model.config
    if not ids:
        raise WordformerError("nothing to explain: the sequence has no tokens")
    if len(ids) > cfg.block_size:
        raise WordformerError(
            f"the prompt has {len(ids)} tokens but the model reads at most block_size={cfg.block_size}; shorten it"
        )
    bad = [i for i in ids if not 0 <= i < cfg.vocab_size]
    if bad:
        raise WordformerError(f"token id(s) {bad[:5]} outside the model's vocabulary 0..{cfg.vocab_size - 1}")
    layer = _check_index("layer", layer, cfg.num_layers, "the model has {} layer{}")
    head = _check_index("head", head, cfg.num_heads, "the model has {} head{} per layer")
    t = _check_index("token", token, len(ids), "the prompt has {} token{}")
    check_int("top_k", top_k)

    block = model.blocks[layer]
    attention = block.attention
    captured: dict[str, Tensor] = {}

    def grab_input(module: Any, args: tuple[Any, ...]) -> None:
        captured["block_input"] = args[0].detach()  # (1, T, C)

    was_training = model.training
    model.eval()
    device = model.token_embedding.weight.device
    x_ids = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    handle = block.register_forward_pre_hook(grab_input)
    try:
        logits, _ = model(x_ids, return_attention=True)  # (1, T, V)
    finally:
        handle.remove()
        model.train(was_training)

    x = captured["block_input"][0].float()  # (T, C)
    attn_in = block.norm1(x) if block.pre_norm else x  # post-norm and none: attention reads the raw input
    q, k, v = attention.project_qkv(attn_in[None])  # 3 x (1, H, T, D)
    stages: list[tuple[str, Tensor, Tensor]] = []  # (what, all queries, all keys) before the final ones
    if cfg.qk_norm:
        stages.append(("W x + b", q, k))
        q, k = attention.normalize_qk(q, k)
    positions = torch.arange(t + 1, device=device)
    if model.rotary:
        stages.append(("RMS-normalised per head (qk_norm)" if cfg.qk_norm else "W x + b", q, k))
        cos, sin = model.positional_encoding.angles(torch.arange(len(ids), device=device))  # (T, D/2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
    d = attention.head_size
    factor = cfg.attn_scale if cfg.attn_scale is not None else 1 / math.sqrt(d)

    def steps(h: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        query = q[0, h, t]  # (D,)
        keys = k[0, h, : t + 1]  # (t+1, D): the token and every one before it (the mask hides the rest)
        dots = keys @ query  # (t+1,)
        scores = dots / math.sqrt(d) if cfg.attn_scale is None else dots * factor  # (t+1,)
        weights = F.softmax(scores, dim=-1)  # (t+1,)
        values = v[0, h, : t + 1]  # (t+1, D)
        weighted = weights[:, None] * values  # (t+1, D)
        return query, keys, dots, scores, weights, values, weighted, weighted.sum(dim=0)  # summed: (D,)

    query, keys, dots, scores, weights, values, weighted, summed = steps(head)
    head_outputs = torch.cat([steps(h)[-1] for h in range(cfg.num_heads)])  # (C,)
    attention_output = attention.out(head_outputs)  # (C,)
    residual = x[t] + attention_output  # the residual connection values
    normed = block.norm1(residual) if cfg.norm == "post" else None
    banned = never_generated(tokenizer) if tokenizer is not None else []
    probabilities = F.softmax(suppress(logits[0, t].float(), banned), dim=-1)  # (V,), renormalised without <pad>
    top = top_k_allowed(probabilities, top_k, banned)
    name = tokenizer.id_to_token if tokenizer is not None else str

    def shown(some: list[int]) -> list[str]:
        return token_labels(tokenizer, some) if tokenizer is not None else [str(i) for i in some]

    top_ids = [int(i) for i in top.indices]
    projections = {
        "query": head_projection(attention.qkv, 0, head, d),
        "key": head_projection(attention.qkv, 1, head, d),
        "value": head_projection(attention.qkv, 2, head, d),
        "output": (attention.out.weight.detach().clone(),
                   None if attention.out.bias is None else attention.out.bias.detach().clone()),
    }
    return Explanation(
        tokens=[name(i) for i in ids],
        ids=ids,
        token=t,
        layer=layer,
        head=head,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        norm=cfg.norm,
        embedding=model.token_embedding(x_ids[0, : t + 1]).float().cpu(),
        embedding_scale=float(model.token_embedding.scale),
        positional=cfg.positional,
        qk_norm=cfg.qk_norm,
        norm_type=cfg.norm_type,
        score_factor=float(factor),
        query_stages=[(what, sq[0, head, t].cpu()) for what, sq, _ in stages],
        keys_stages=[(what, sk[0, head, : t + 1].cpu()) for what, _, sk in stages],
        position=(torch.zeros(t + 1, cfg.d_model) if model.rotary
                  else model.positional_encoding(positions).float().cpu()),
        block_input=x[: t + 1].cpu(),
        attention_input=attn_in[: t + 1].cpu(),
        query=query.cpu(),
        keys=keys.cpu(),
        dot_products=dots.cpu(),
        scores=scores.cpu(),
        weights=weights.cpu(),
        values=values.cpu(),
        weighted=weighted.cpu(),
        summed=summed.cpu(),
        head_outputs=head_outputs.cpu(),
        attention_output=attention_output.cpu(),
        residual=residual.cpu(),
        normed_residual=None if normed is None else normed.cpu(),
        probabilities=probabilities.cpu(),
        top=[(name(i), float(probabilities[i])) for i in top_ids],
        projections={k2: (w.cpu(), None if b is None else b.cpu()) for k2, (w, b) in projections.items()},
        labels=shown(ids),
        top_labels=[shown([i])[0] for i in top_ids],  # each alone: a piece of a character reads as its bytes
    )


def explain_prompt(
    loaded: LoadedModel,
    prompt: str,
    layer: int = 0,
    head: int = 0,
    token: int = -1,
    *,
    append_eos: Optional[bool] = None,
    top_k: int = 5,
) -> Explanation:
    """:func:`explain_token` for text; ``append_eos`` defaults to True for pair models, as in generation."""
    ids = encode_prompt(loaded.tokenizer, prompt, append_eos=append_eos)
    return explain_token(loaded.model, ids, layer, head, token, tokenizer=loaded.tokenizer, top_k=top_k)


# ------------------------------------------------------------------------------------------ text


def _num(x: float, decimals: int) -> str:
    if round(x, decimals) == 0:
        x = 0.0  # no "-0.0000"
    return f"{x:{decimals + 3}.{decimals}f}"


def _vec(v: Tensor, decimals: int, max_dims: Optional[int]) -> str:
    """``[ 0.1234, -0.5678]``; long vectors keep their first and last entries around an ellipsis."""
    values = v.flatten().tolist()
    if max_dims is not None and len(values) > max_dims:
        head = ", ".join(_num(x, decimals) for x in values[: max(1, max_dims - 2)])
        tail = ", ".join(_num(x, decimals) for x in values[-2:])
        return f"[{head}, …, {tail}] ({len(values)} values)"
    return "[" + ", ".join(_num(x, decimals) for x in values) + "]"


def _matrix(m: Tensor, decimals: int, max_dims: Optional[int], indent: str) -> list[str]:
    return [indent + _vec(row, decimals, max_dims) for row in m]


def format_explanation(e: Explanation, *, decimals: int = 4, max_dims: Optional[int] = 8, weights: bool = False) -> str:
    """The seven steps as text, each row labelled with its token; ``max_dims=None`` prints every value.

    ``weights`` adds this head's query/key/value weight rows and biases (vector = W . x + b), so steps
    1, 2 and 5 can be checked by hand too.
    """
    shown = [e.label(i) for i in range(len(e.tokens))]  # BPE pieces as text ("␣the"), never raw bytes ("Ġthe")
    top_shown = [e.top_label(k) for k in range(len(e.top))]
    width = max(8, *(len(tok) for tok in shown[: e.token + 1]), *(len(tok) for tok in top_shown))
    me = f"'{shown[e.token]}'"
    dk = e.head_size
    lines: list[str] = []

    def row(i: int, text: str) -> str:
        return f"   {i:>3} {shown[i]:<{width}} {text}"

    def vec(v: Tensor) -> str:
        return _vec(v, decimals, max_dims)

    lines.append(f"masked self-attention of token {e.token} {me} in: {' '.join(shown)}")
    lines.append(f"layer {e.layer} (of {e.num_layers}), head {e.head} (of {e.num_heads}), head size {dk}, "
                 f"d_model {e.block_input.size(-1)}, norm: {e.norm}")
    lines.append("")
    rope = e.positional == "rope"
    if e.layer == 0 and rope:
        lines.append("0. input: token embedding (RoPE adds no positional vector: positions rotate the queries and keys "
                     "in steps 1-2)")
        for i in range(e.token + 1):
            lines.append(row(i, vec(e.block_input[i])))
    elif e.layer == 0:
        scaled = (f" (the embedding table's row x sqrt(d_model) = {e.embedding_scale:.4g}, as Vaswani et al.)"
                  if e.embedding_scale != 1.0 else "")
        lines.append(f"0. input: token embedding{scaled} + positional encoding")
        for i in range(e.token + 1):
            lines.append(row(i, f"{vec(e.embedding[i])} + {vec(e.position[i])} = {vec(e.block_input[i])}"))
    else:
        lines.append(f"0. input of layer {e.layer} (the output of layer {e.layer - 1})")
        for i in range(e.token + 1):
            lines.append(row(i, vec(e.block_input[i])))
    if e.norm == "pre":
        kind = "RMS norm" if e.norm_type == "rmsnorm" else "layer norm"
        lines.append(f"   attention reads them after the block's {kind} (pre-norm):")
        for i in range(e.token + 1):
            lines.append(row(i, vec(e.attention_input[i])))
    if weights:
        for name, symbol in (("query", "W_q"), ("key", "W_k"), ("value", "W_v")):
            w, b = e.projections[name]
            lines.append(f"   {symbol} (head {e.head}, {w.size(0)} x {w.size(1)}): row i gives number i of the {name}")
            lines.extend(_matrix(w, decimals, max_dims, "       "))
            if b is not None:
                lines.append(f"   b_{symbol[-1]} = {vec(b)}")
    x = "x" if e.norm != "pre" else "norm(x)"
    then = ((", then RMS-normalised per head (qk_norm)" if e.qk_norm else "")
            + (", then rotated by its position (RoPE)" if rope else ""))
    lines.append("")
    lines.append(f"1. query of {me} = W_q {x} + b_q{then}")
    for what, value in e.query_stages:
        lines.append(row(e.token, f"{what}: {vec(value)}"))
    lines.append(row(e.token, f"q = {vec(e.query)}"))
    then_keys = then.replace("its position", "each key's position")
    lines.append(f"2. keys of {me} and every token before it = W_k {x} + b_k{then_keys}")
    for what, value in e.keys_stages:
        lines.append(f"   {what}:")
        for i in range(e.token + 1):
            lines.append(row(i, f"k = {vec(value[i])}"))
    if e.keys_stages:
        lines.append("   " + ("rotated, each by its own position (RoPE):" if rope else "RMS-normalised per head (qk_norm):"))
    for i in range(e.token + 1):
        lines.append(row(i, f"k = {vec(e.keys[i])}"))
    what = "the rotated query with each rotated key" if rope else "the query with each key"
    if not e.score_factor or math.isclose(e.score_factor, 1 / math.sqrt(dk), rel_tol=1e-9):
        lines.append(f"3. dot products of {what}, scaled by 1/sqrt({dk}) = {1 / math.sqrt(dk):.{decimals}f}")
        label = f"/ sqrt({dk})"
    else:
        lines.append(f"3. dot products of {what}, scaled by attn_scale = {e.score_factor:.{decimals}g}")
        label = f"x {e.score_factor:.{decimals}g}"
    if rope:
        lines.append("   (both rotated by their positions: each product depends only on how far apart the tokens are)")
    for i in range(e.token + 1):
        lines.append(row(i, f"q . k = {_num(float(e.dot_products[i]), decimals)}, "
                            f"{label} = {_num(float(e.scores[i]), decimals)}"))
    lines.append("4. softmax of the scaled dot products = attention weights (they sum to 1)")
    for i in range(e.token + 1):
        lines.append(row(i, _num(float(e.weights[i]), decimals)))
    lines.append(f"5. values = W_v {x} + b_v")
    for i in range(e.token + 1):
        lines.append(row(i, f"v = {vec(e.values[i])}"))
    lines.append("6. values weighted by the attention weights")
    for i in range(e.token + 1):
        lines.append(row(i, f"{_num(float(e.weights[i]), decimals)} x {vec(e.values[i])} = {vec(e.weighted[i])}"))
    lines.append(f"7. sum of the weighted values = the masked self-attention value of {me} (head {e.head})")
    lines.append(row(e.token, vec(e.summed)))
    if e.token == 0:
        lines.append("   (the first token sees only itself: its weight is 1 and the sum is its own value)")
    lines.append("")
    if e.num_heads > 1:
        lines.append(f"all {e.num_heads} heads' sums side by side: {vec(e.head_outputs)}")
    lines.append(f"attention output (W_o . heads + b_o):  {vec(e.attention_output)}")
    lines.append(f"residual connection = input + attention output = {vec(e.block_input[e.token])} + "
                 f"{vec(e.attention_output)} = {vec(e.residual)}")
    if e.normed_residual is not None:
        lines.append(f"after the layer norm (post-norm): {vec(e.normed_residual)}")
    lines.append("")
    lines.append(f"next token after {me} (the whole model: feed-forward, {e.num_layers} layer(s), output layer):")
    for rank, ((_, p), tok) in enumerate(zip(e.top, top_shown), 1):
        lines.append(f"   {rank:>3}. {tok:<{width}} {p:.{decimals}f}")
    return "\n".join(lines)
