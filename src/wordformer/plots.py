"""Figures that make the chapter's pieces visible: attention maps, positional encodings, the learning-rate
schedule, token embeddings and training curves.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot``: no global state, no
window, rendered by Agg when saved (:func:`save_figure` writes PNG, SVG, PDF or JPEG by the file extension). In a
notebook with the inline backend a returned figure displays like any other. The plotted arrays are the
model's own numbers, so a test can read them back from the artists.
Shape legend: L = layers, H = heads, T = tokens, V = vocabulary, C = d_model, P = positions.
"""

from __future__ import annotations

import csv
import io
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from .checkpoint import LoadedModel
from .config import ModelConfig, TrainConfig
from .errors import WordformerError, check_int
from .files import file_in_the_way, save_bytes
from .generation import encode_prompt
from .model import WordPredictor
from .positional import sinusoidal_table
from .schedule import Schedule, saved_schedule
from .token_display import token_labels
from .tokenizers import Tokenizer

__all__ = [
    "FORMATS", "attention_maps", "check_image_path", "embedding_coordinates", "find_metrics_csv", "fitted",
    "plot_attention", "plot_attention_maps", "tick_positions",
    "plot_embeddings", "plot_lr_schedule", "plot_positional_encoding", "plot_training_curves", "positional_table",
    "read_metrics", "save_figure", "sequence_labels", "token_label",
]

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf", ".jpg": "jpg", ".jpeg": "jpg"}
# Metadata that would make two renderings of one figure differ (dates, versions) is left out; JPEG takes none.
STABLE_METADATA: dict[str, Optional[dict[str, Any]]] = {"png": {"Software": None}, "svg": {"Date": None},
                                                        "pdf": {"CreationDate": None, "Producer": None}, "jpg": None}
TICK_FONT = 8  # points: tick labels of attention maps
LINE_SPACING = 1.6  # a tick label needs this many times its font size along the axis to stay clear of the next
ModelSource = Union[WordPredictor, LoadedModel]
ATTENTION_CMAP = "cividis"  # the chapter's notebook sets cividis as its colour map

# ------------------------------------------------------------------------------------------ helpers


def _model_and_tokenizer(source: Any, tokenizer: Optional[Tokenizer]) -> tuple[WordPredictor, Tokenizer, bool]:
    """Accept a :class:`LoadedModel` (tokenizer included) or a bare model plus its tokenizer."""
    if isinstance(source, LoadedModel):
        return source.model, tokenizer or source.tokenizer, source.pairs
    if isinstance(source, WordPredictor):
        if tokenizer is None:
            raise WordformerError("a bare WordPredictor needs its tokenizer: pass tokenizer=...")
        return source, tokenizer, False
    raise WordformerError(f"expected a WordPredictor or a LoadedModel, got {type(source).__name__}")


def _model_of(source: Any) -> WordPredictor:
    if isinstance(source, LoadedModel):
        return source.model
    if isinstance(source, WordPredictor):
        return source
    raise WordformerError(f"expected a WordPredictor or a LoadedModel, got {type(source).__name__}")


# Ġ, Ċ and ĉ are byte-level BPE's space, newline and tab
_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "Ġ": "␣", "Ċ": "↵", "ĉ": "⇥"}


def token_label(token: str) -> str:
    """A token as an axis label: spaces and line breaks made visible, ``$`` kept out of mathtext."""
    text = "".join(_VISIBLE.get(ch, ch) for ch in token)
    return text.replace("$", r"\$") or "∅"


def fitted(text: str, inches: float, fontsize: float, max_lines: int = 3) -> str:
    """``text`` wrapped to lines that fit ``inches`` at ``fontsize`` points (at most ``max_lines``, the rest cut
    with "…"), so a long title is not cut off by the figure's edge."""
    import textwrap

    per_line = max(10, int(inches * 72 / (0.6 * fontsize)))  # an average glyph is about 0.6 em wide
    lines = textwrap.wrap(text, per_line) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: per_line - 1].rstrip() + "…"
    return "\n".join(lines)


def tick_positions(count: int, inches: float, fontsize: float = TICK_FONT) -> list[int]:
    """Which of ``count`` cells along an axis of ``inches`` get a label: all of them while they fit, else every
    k-th, always including the last (the token a prompt's prediction comes from)."""
    room = max(1, int(inches * 72 / (LINE_SPACING * fontsize)))
    stride = max(1, -(-count // room))  # ceil
    return list(range(count - 1, -1, -stride))[::-1]


def sequence_labels(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    """Axis labels for a token sequence, as the page and ``explain`` show tokens
    (:func:`wordformer.token_display.token_labels`: BPE pieces as their text, an emoji split over byte tokens as
    ``\\xf0⟨😀⟩``), with ``$`` kept out of mathtext and characters the font cannot draw written ``U+XXXX``."""
    return [_drawable(label).replace("$", r"\$") for label in token_labels(tokenizer, ids)]


@lru_cache(maxsize=1)
def _font() -> Any:
    from matplotlib import font_manager, ft2font

    return ft2font.FT2Font(font_manager.findfont(font_manager.FontProperties()))


def _drawable(text: str) -> str:
    """``text`` with every character the default font lacks as its code point (no empty box, no warning)."""
    font = _font()
    return "".join(ch if ord(ch) < 128 or font.get_char_index(ord(ch)) else f"U+{ord(ch):04X}" for ch in text)


def check_image_path(path: Union[str, os.PathLike], option: str = "--out") -> str:
    """The image format for ``path`` from its extension. Refused before any work: another extension, a
    folder, and a path through a file (``option`` names the flag that gave it)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        shown = f"'{suffix}'" if suffix else "no extension"
        raise WordformerError(f"cannot write an image to {path} ({shown}): use a file name ending in .png, .svg, "
                              ".pdf or .jpg")
    if Path(path).is_dir():
        raise WordformerError(f"cannot write {option} {path}: it is a folder; choose a file name ending in {suffix}")
    blocker = file_in_the_way(Path(path).parent)
    if blocker is not None:
        raise WordformerError(f"cannot write {option} {path}: {blocker} is a file, not a folder; choose another "
                              f"{option}")
    return FORMATS[suffix]


def save_figure(fig: Figure, path: Union[str, os.PathLike], *, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG, SVG, PDF or JPEG (by extension), atomically; an existing file is replaced.

    Metadata dates are left out so rendering the same figure twice gives the same bytes.
    """
    import matplotlib

    fmt = check_image_path(path)
    path = Path(path)
    buffer = io.BytesIO()
    metadata = STABLE_METADATA[fmt]
    with matplotlib.rc_context({"svg.hashsalt": "wordformer", "svg.fonttype": "path"}):
        fig.savefig(buffer, format=fmt, dpi=dpi, **({"metadata": metadata} if metadata is not None else {}))
    save_bytes(buffer.getvalue(), path, advice="choose another path for the image")  # readers never see half
    return path


# ------------------------------------------------------------------------------------------ attention


@torch.no_grad()
def attention_maps(model: WordPredictor, ids: Sequence[int]) -> list[Tensor]:
    """Each layer's attention weights (H, T, T) for one sequence, from the model's explicit attention path."""
    if len(ids) > model.config.block_size:
        raise WordformerError(
            f"the prompt has {len(ids)} tokens but the model reads at most block_size={model.config.block_size}; "
            "shorten it"
        )
    was_training = model.training
    model.eval()
    try:
        device = model.token_embedding.weight.device
        idx = torch.tensor([list(ids)], dtype=torch.long, device=device)  # (1, T)
        _, attentions = model(idx, return_attention=True)  # L x (1, H, T, T)
    finally:
        model.train(was_training)
    return [a[0].float().cpu() for a in attentions]


def plot_attention(
    source: ModelSource,
    tokenizer: Optional[Tokenizer] = None,
    prompt: str = "",
    *,
    append_eos: Optional[bool] = None,
    annotate: Optional[bool] = None,
    layer: Optional[int] = None,
    head: Optional[int] = None,
) -> Figure:
    """Attention maps for ``prompt``: one panel per layer (rows) and head (columns), or only ``layer`` and/or
    ``head`` (0-based; a negative layer counts from the end, as in ``explain``).

    Row i of a panel is what token i attends to; the upper triangle is the mask (zero weight).
    ``append_eos`` defaults to True for models trained on prompt/answer pairs, as in generation.
    ``annotate`` writes the weights into the cells (default: for short prompts on small grids).
    """
    model, tok, _ = _model_and_tokenizer(source, tokenizer)
    layers = _pick("layer", layer, model.config.num_layers, negative=True)
    heads = _pick("head", head, model.config.num_heads)
    ids = encode_prompt(tok, prompt, append_eos=append_eos)  # None: as the model was trained (tokenizer.pairs)
    labels = sequence_labels(tok, ids)
    title = "masked self-attention: " + (" " if tok.kind == "word" else "").join(labels)
    maps = attention_maps(model, ids)
    return plot_attention_maps([maps[i][heads] for i in layers], labels, title=title, annotate=annotate,
                               layer_ids=layers, head_ids=heads)


def _pick(name: str, value: Optional[int], count: int, *, negative: bool = False) -> list[int]:
    """All ``count`` indices, or the one ``value`` names; out of range is one line naming the range."""
    if value is None:
        return list(range(count))
    low = -count if negative else 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < count:
        plural = "s" if count != 1 else ""
        raise WordformerError(f"{name}={value!r} is out of range: the model has {count} {name}{plural} "
                              f"({low}..{count - 1})")
    return [value % count]


def plot_attention_maps(maps: Sequence[Tensor], labels: Sequence[str], *, title: str = "",
                        annotate: Optional[bool] = None, causal: bool = True,
                        layer_ids: Optional[Sequence[int]] = None, head_ids: Optional[Sequence[int]] = None) -> Figure:
    """A layers x heads grid of attention maps: ``maps`` holds one (H, T, T) tensor per layer.

    ``layer_ids``/``head_ids`` name the panels when the maps are a selection (default 0, 1, ...). Past about
    20 tokens per panel only every k-th tick is labelled, so labels never overprint each other.
    Also draws the bidirectional maps of the tutorial-6 encoder (``causal=False``: every cell is annotated).
    """
    n_layers, n_heads, t = len(maps), maps[0].size(0), len(labels)
    layer_ids = list(range(n_layers)) if layer_ids is None else list(layer_ids)
    head_ids = list(range(n_heads)) if head_ids is None else list(head_ids)
    if annotate is None:
        annotate = t <= 10 and n_layers * n_heads <= 4
    cell = min(max(2.6, 0.32 * t + 1.0), 15.0 / n_heads, 12.0 / n_layers)  # inches per panel
    width = cell * n_heads + 1.2
    fig = Figure(figsize=(width, cell * n_layers + 0.6), layout="constrained")
    axes = fig.subplots(n_layers, n_heads, squeeze=False)
    shown = tick_positions(t, 0.6 * cell)  # the image takes about 60% of its panel beside labels and colorbar
    image = None
    for layer, weights in enumerate(maps):
        for head in range(n_heads):
            ax = axes[layer][head]
            w = weights[head].detach().cpu().numpy()  # (T, T)
            image = ax.imshow(w, cmap=ATTENTION_CMAP, vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer_ids[layer]}, head {head_ids[head]}", fontsize=9)
            ax.set_xticks(shown, [labels[i] for i in shown], rotation=90, fontsize=TICK_FONT)
            ax.set_yticks(shown, [labels[i] for i in shown], fontsize=TICK_FONT)
            ax.tick_params(labelbottom=layer == n_layers - 1, labelleft=head == 0)
            if layer == n_layers - 1:
                ax.set_xlabel("key (attended token)", fontsize=8)
            if head == 0:
                ax.set_ylabel("query (attending token)", fontsize=8)
            if annotate:
                for i in range(t):
                    for j in range(i + 1 if causal else t):
                        ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=7,
                                color="black" if w[i, j] > 0.6 else "white")
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    if title:
        fig.suptitle(fitted(title, width - 0.3, 10), fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------ positions


def positional_table(
    source: Union[WordPredictor, LoadedModel, str, None] = None,
    block_size: Optional[int] = None,
    d_model: Optional[int] = None,
) -> tuple[Tensor, str]:
    """The (P, C) positional encodings to plot and a title.

    ``source``: a model (its own table: fixed sinusoids or learned vectors; for rotary positions the sine and cosine
    of each pair's rotation angle, (P, head size), which turn queries and keys instead of being added),
    ``"sinusoidal"`` or None
    (the sinusoidal table for ``block_size`` x ``d_model``, defaults from :class:`ModelConfig`).
    """
    if isinstance(source, (WordPredictor, LoadedModel)):
        model = _model_of(source)
        if block_size is not None or d_model is not None:
            raise WordformerError("give either a model or block_size/d_model, not both")
        cfg = model.config
        pe = model.positional_encoding
        if cfg.positional == "rope":  # nothing is added: the table is the sine and cosine of each rotation angle
            cos, sin = pe.angles(torch.arange(cfg.block_size))  # type: ignore[operator]  # (P, D/2) each
            table = torch.stack((sin, cos), dim=-1).flatten(1)  # (P, D): sin, cos of pair 0, then of pair 1, ...
            head = cfg.d_model // cfg.num_heads
            return table, (f"rotary positions (RoPE): sin and cos of the angle that turns each of the {head // 2} "
                           f"pairs of every head's queries and keys ({cfg.block_size} positions x head size {head}); "
                           "nothing is added to the embedding")
        if cfg.positional == "learned":
            table = pe.table.weight.detach().float().cpu()  # type: ignore[union-attr]
            return table, f"learned positional encoding ({cfg.block_size} positions x d_model {cfg.d_model})"
        table = pe.table.detach().float().cpu()  # type: ignore[union-attr]
        return table, f"sinusoidal positional encoding ({cfg.block_size} positions x d_model {cfg.d_model})"
    if source not in (None, "sinusoidal"):
        if source == "learned":
            raise WordformerError(
                "learned positional encodings come from a trained model: pass the model (--checkpoint)"
            )
        raise WordformerError(f"unknown positional encoding {source!r}: use 'sinusoidal' or pass a model")
    defaults = ModelConfig()
    block_size = defaults.block_size if block_size is None else block_size
    d_model = defaults.d_model if d_model is None else d_model
    for name, value in (("block_size", block_size), ("d_model", d_model)):
        check_int(name, value)
    title = f"sinusoidal positional encoding ({block_size} positions x d_model {d_model})"
    return sinusoidal_table(block_size, d_model), title


def _default_dims(d_model: int) -> list[int]:
    """A few dimensions of clearly different frequency: the fastest sine and three slower ones."""
    dims = sorted({d for d in (0, 2 * (d_model // 16), 2 * (d_model // 8), 2 * (d_model // 4)) if d < d_model})
    if len(dims) < 2 and d_model > 1:
        dims.append(1)  # tiny widths (the chapter's 2): the sine and the cosine
    return dims


def plot_positional_encoding(
    source: Union[WordPredictor, LoadedModel, str, None] = None,
    block_size: Optional[int] = None,
    d_model: Optional[int] = None,
    *,
    dims: Optional[Sequence[int]] = None,
) -> Figure:
    """Heatmap of the encoding over position x dimension, and curves of a few dimensions over position.

    The encoding is added to each token's embedding, so the same token at two positions gets two
    different vectors (the chapter's point); the curves show the different frequencies per dimension.
    """
    table, title = positional_table(source, block_size, d_model)  # (P, C)
    learned = title.startswith("learned")
    positions, width = table.shape
    dims = _default_dims(width) if dims is None else list(dims)
    bad = [d for d in dims if not 0 <= d < width]
    if bad:
        what = "the head size" if title.startswith("rotary") else "d_model"
        raise WordformerError(f"dimension(s) {bad} out of range: {what} is {width} (0..{width - 1})")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    heat, curves = fig.subplots(1, 2, width_ratios=[1.1, 1])
    limit = max(1e-8, float(table.abs().max()))
    image = heat.imshow(table.numpy(), aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    heat.set_xlabel("dimension")
    heat.set_ylabel("position")
    heat.set_title("encoding value per position and dimension", fontsize=10)
    fig.colorbar(image, ax=heat, shrink=0.85)
    x = np.arange(positions)
    for d in dims:
        curves.plot(x, table[:, d].numpy(), label=f"dim {d}" + ("" if learned else (" (cos)" if d % 2 else " (sin)")),
                    linewidth=1.6)
    curves.set_xlabel("position")
    curves.set_ylabel("encoding value")
    curves.set_title("a few dimensions over position", fontsize=10)
    curves.legend(fontsize=8, loc="lower left")
    curves.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return fig


# ------------------------------------------------------------------------------------------ schedule


def plot_lr_schedule(train_config: Union[TrainConfig, LoadedModel], *, steps: Optional[int] = None) -> Figure:
    """The learning rate of every optimiser step: linear warm-up, then cosine (or WSD) decay to ``min_lr``.

    Values come from :class:`wordformer.schedule.Schedule`, what training uses; for a checkpoint, the
    schedule it recorded (with the new decays of resumes that changed ``--max-steps``).
    ``steps`` (default ``max_steps``) sets how many steps are drawn.
    """
    cfg = train_config.train_config if isinstance(train_config, LoadedModel) else train_config
    if not isinstance(cfg, TrainConfig):
        raise WordformerError(f"expected a TrainConfig or a LoadedModel, got {type(train_config).__name__}")
    schedule = (saved_schedule(train_config.info, cfg, str(train_config.path or "the checkpoint"))
                if isinstance(train_config, LoadedModel) else Schedule.of(cfg))
    n = cfg.max_steps if steps is None else steps
    check_int("steps", n)
    x = np.arange(n)
    y = [schedule.rate(int(s)) for s in x]
    fig = Figure(figsize=(7, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.plot(x, y, color="tab:blue", linewidth=2, label="learning rate")
    if 0 < cfg.warmup_steps < n:
        ax.axvline(cfg.warmup_steps, color="grey", linestyle=":", linewidth=1,
                   label=f"end of warm-up ({cfg.warmup_steps})")
    for decay in schedule.decays:
        ax.axvline(decay.start, color="tab:green", linestyle=":", linewidth=1,
                   label=f"resumed: new decay from step {decay.start}")
    ax.axhline(cfg.min_lr, color="tab:orange", linestyle="--", linewidth=1, label=f"min_lr {cfg.min_lr:g}")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("learning rate")
    decay = ("cosine decay" if schedule.kind == "cosine"
             else f"constant, then linear decay over the last {schedule.cooldown_fraction:.0%}")
    ax.set_title(f"warm-up {cfg.warmup_steps} steps, {decay} {cfg.lr:g} → {schedule.min_lr:g} "
                 f"by step {schedule.max_steps}", fontsize=10)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# ------------------------------------------------------------------------------------------ embeddings


def embedding_coordinates(weight: Tensor) -> tuple[Tensor, str, str]:
    """2-D coordinates of embedding rows (V, C) -> (V, 2), with axis labels.

    d_model = 2 (the chapter's toy) is drawn as is; wider embeddings are projected on their first two
    principal components (SVD of the centred matrix, so the result is deterministic).
    """
    w = weight.detach().float().cpu()
    if w.size(1) == 2:
        return w.clone(), "embedding value 1", "embedding value 2"
    if w.size(1) == 1:
        return torch.cat([w, torch.zeros_like(w)], dim=1), "embedding value", ""
    centred = w - w.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    share = (s**2 / (s**2).sum().clamp_min(1e-12)).tolist()
    coords = centred @ vh[:2].T  # (V, 2)
    return coords, f"PC 1 ({100 * share[0]:.0f}% of variance)", f"PC 2 ({100 * share[1]:.0f}% of variance)"


def plot_embeddings(
    source: ModelSource, tokenizer: Optional[Tokenizer] = None, max_tokens: int = 60, *, annotate: bool = True
) -> Figure:
    """Scatter of the token embeddings with their tokens as labels (ids 0..max_tokens-1).

    Word vocabularies are sorted by frequency, so the first ids are the most common words. Tokens used
    in similar contexts end up close together; special tokens are drawn in grey.
    """
    model, tok, _ = _model_and_tokenizer(source, tokenizer)
    check_int("max_tokens", max_tokens)
    weight = model.token_embedding.weight  # (V, C)
    coords, xlabel, ylabel = embedding_coordinates(weight)
    n = min(max_tokens, weight.size(0))
    shown = coords[:n].numpy()  # (n, 2)
    tokens = [tok.id_to_token(i) for i in range(n)]
    special = np.array([t in (tok.PAD, tok.EOS, tok.UNK) for t in tokens])
    colors = np.where(special[:, None], np.array([[0.55, 0.55, 0.55, 1.0]]), np.array([[0.12, 0.47, 0.71, 1.0]]))
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    ax.scatter(shown[:, 0], shown[:, 1], c=colors, s=28)
    if annotate:
        # tokens with the same role land on (almost) the same point: stack their labels instead of overprinting
        span = np.maximum(shown.max(axis=0) - shown.min(axis=0), 1e-12)  # (2,)
        for i, ((x, y), t) in enumerate(zip(shown, tokens)):
            near = int((np.abs((shown[:i] - shown[i]) / span) < 0.03).all(axis=1).sum())
            ax.annotate(token_label(t), (x, y), xytext=(4, 3 - 10 * near), textcoords="offset points", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    cfg = model.config
    how = "as they are" if cfg.d_model <= 2 else "projected by PCA"
    tied = ", shared with the output layer" if cfg.tie_weights else ""
    ax.set_title(fitted(f"token embeddings, d_model = {cfg.d_model} ({how}{tied}); {n} of {weight.size(0)} tokens",
                        6.0, 10), fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(0.12)
    return fig


# ------------------------------------------------------------------------------------------ training curves


def find_metrics_csv(run: Union[str, os.PathLike]) -> Path:
    """``metrics.csv`` of a run: the file itself, or ``RUN/logs/csv/metrics.csv`` of a training folder."""
    path = Path(run)
    if path.is_file():
        return path
    if not path.exists():
        raise WordformerError(
            f"run {path} does not exist; give the --out folder of `wordformer train` or a metrics.csv"
        )
    for candidate in (path / "logs" / "csv" / "metrics.csv", path / "metrics.csv"):
        if candidate.is_file():
            return candidate
    raise WordformerError(
        f"{path} holds no logs/csv/metrics.csv; train with `wordformer train --out {path}` (logging on)"
    )


def read_metrics(run: Union[str, os.PathLike]) -> dict[str, tuple[list[int], list[float]]]:
    """Every logged column of a run's CSV log as ``name -> (steps, values)``, empty cells skipped."""
    path = find_metrics_csv(run)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except UnicodeDecodeError:
        raise WordformerError(f"{path} is not a CSV log (it is not text); give the --out folder of `wordformer train` "
                              "or its logs/csv/metrics.csv") from None
    except (OSError, csv.Error) as exc:
        raise WordformerError(f"cannot read {path}: {exc}") from None
    if not rows or "step" not in rows[0]:
        raise WordformerError(f"{path} has no logged rows with a 'step' column; is it a Lightning CSV log?")
    series: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        step_text = row.get("step") or ""
        if not step_text:
            continue
        step = int(float(step_text))
        for name, value in row.items():
            if name in ("step", "epoch") or name is None or value in (None, ""):
                continue
            try:
                number = float(value)
            except ValueError:
                continue
            steps, values = series.setdefault(name, ([], []))
            steps.append(step)
            values.append(number)
    return series


def _lr_columns(series: dict[str, tuple[list[int], list[float]]]) -> list[str]:
    """LearningRateMonitor columns (``lr-AdamW/pg1``, ...), leaving out exact duplicates of another group."""
    kept: list[str] = []
    for name in sorted(n for n in series if n.startswith("lr-")):
        if not any(series[name] == series[k] for k in kept):
            kept.append(name)
    return kept


def plot_training_curves(run: Union[str, os.PathLike]) -> Figure:
    """Loss, perplexity, accuracy and learning rate over the optimiser steps of a training run.

    ``run`` is the ``--out`` folder of ``wordformer train`` or its ``logs/csv/metrics.csv``.
    """
    series = read_metrics(run)
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    (loss_ax, ppl_ax), (acc_ax, lr_ax) = fig.subplots(2, 2)

    def draw(ax: Any, names: Sequence[str], title: str, ylabel: str, labels: Optional[Sequence[str]] = None) -> None:
        drawn = False
        for i, name in enumerate(names):
            if name not in series:
                continue
            steps, values = series[name]
            style = dict(marker="o", markersize=3) if name.startswith("val_") else {}
            ax.plot(steps, values, label=labels[i] if labels else name, linewidth=1.5, **style)
            drawn = True
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)

    draw(loss_ax, ["train_loss", "val_loss"], "cross-entropy loss", "loss")
    draw(ppl_ax, ["val_ppl"], "validation perplexity", "perplexity")
    draw(acc_ax, ["val_acc"], "validation next-token accuracy", "accuracy")
    lr_names = _lr_columns(series)
    lr_labels = ["learning rate" if len(lr_names) == 1 else n for n in lr_names]
    draw(lr_ax, lr_names, "learning rate (LearningRateMonitor)", "learning rate", lr_labels)
    if lr_names:
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if "val_ppl" in series and max(series["val_ppl"][1]) / max(1e-12, min(series["val_ppl"][1])) > 20:
        ppl_ax.set_yscale("log")
    fig.suptitle(fitted(f"training curves: {run}", 9.5, 10), fontsize=10)
    return fig
