"""Plots: files are written, and what is drawn is the model's own data (read back from the artists)."""

import csv
import math

import numpy as np
import pytest
import torch

from wordformer import DataConfig, LoadedModel, ModelConfig, TrainConfig, WordPredictor, WordTokenizer
from wordformer.checkpoint import wordformer_entry
from wordformer.cli import main
from wordformer.errors import WordformerError
from wordformer.plots import (plot_attention, plot_embeddings, plot_lr_schedule, plot_positional_encoding,
                              plot_training_curves, positional_table, read_metrics, save_figure)
from wordformer.positional import sinusoidal_table
from wordformer.schedule import learning_rate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEXTS = ["the cat sat on the mat .", "the dog sat on the log .", "what is statquest ? awesome !"]


def random_model(tokenizer, **overrides):
    """A model with large random weights (not the near-uniform init), so attention maps are far from flat."""
    torch.manual_seed(0)
    kw = dict(vocab_size=tokenizer.vocab_size, d_model=8, num_heads=2, num_layers=2, block_size=16)
    kw.update(overrides)
    model = WordPredictor(ModelConfig(**kw)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.7)
    return model


def save_checkpoint(model, tokenizer, path, data=None, train=None):
    """A wordformer checkpoint written directly (no training): the plain-data entry plus the weights."""
    entry = wordformer_entry(model.config, data or DataConfig(), train or TrainConfig(), tokenizer, step=0)
    torch.save({"wordformer": entry, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


@pytest.fixture
def tok():
    return WordTokenizer.train(TEXTS)


def panels(fig):
    """Attention panels by title ("layer L, head H") -> image array."""
    return {ax.get_title(): ax.images[0].get_array() for ax in fig.axes if ax.images and ax.get_title()}


def test_attention_panels_are_the_models_attention_weights(tok):
    model = random_model(tok)
    prompt = "the cat sat on the mat"
    fig = plot_attention(model, tok, prompt)
    idx = torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        _, attentions = model(idx, return_attention=True)
    shown = panels(fig)
    assert len(shown) == 4  # 2 layers x 2 heads
    for layer in range(2):
        for head in range(2):
            expected = attentions[layer][0, head].numpy()
            np.testing.assert_allclose(shown[f"layer {layer}, head {head}"], expected, atol=1e-6)
    ax = next(a for a in fig.axes if a.get_title() == "layer 1, head 0")
    assert [t.get_text() for t in ax.get_xticklabels()] == prompt.split()
    assert not np.allclose(shown["layer 0, head 0"][-1, :6], 1 / 6)  # not flat: the test can tell maps apart


def test_attention_of_a_pair_model_ends_with_eos_and_refuses_long_prompts(tok):
    model = random_model(tok, num_layers=1, num_heads=1, block_size=4)
    loaded = LoadedModel(model, tok, model.config, DataConfig(pairs=True), TrainConfig())
    fig = plot_attention(loaded, prompt="the cat")
    ax = next(a for a in fig.axes if a.get_title() == "layer 0, head 0")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["the", "cat", "<eos>"]
    assert len(ax.texts) == 6  # short prompt: the weights are written into the cells (lower triangle)
    with pytest.raises(WordformerError, match="block_size=4"):
        plot_attention(loaded, prompt="the cat sat on the mat")


def test_positional_heatmap_and_curves_are_the_sinusoidal_table():
    fig = plot_positional_encoding(block_size=20, d_model=16)
    table = sinusoidal_table(20, 16).numpy()
    heat = next(ax for ax in fig.axes if ax.images and ax.get_xlabel() == "dimension")
    np.testing.assert_array_equal(heat.images[0].get_array(), table)
    curves = next(ax for ax in fig.axes if ax.get_xlabel() == "position")
    assert len(curves.lines) >= 2
    for line in curves.lines:
        dim = int(line.get_label().split()[1])
        np.testing.assert_array_equal(line.get_ydata(), table[:, dim])
    tiny = plot_positional_encoding(block_size=8, d_model=2)  # the chapter's width: a sine and a cosine
    assert [line.get_label() for line in tiny.axes[1].lines] == ["dim 0 (sin)", "dim 1 (cos)"]


def test_positional_of_a_learned_model_is_its_table(tok):
    model = random_model(tok, positional="learned")
    fig = plot_positional_encoding(model)
    learned = model.positional_encoding.table.weight.detach().numpy()
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), learned)
    with pytest.raises(WordformerError, match="not both"):
        plot_positional_encoding(model, 8, 4)


def test_positional_of_a_rope_model_is_the_sine_and_cosine_of_its_rotation_angles(tok):
    """RoPE adds nothing; what it does per position is turn pair i of each head by position x base^(-2i/D). At
    base 10000 those sines and cosines are the sinusoidal table at the head size (Vaswani's frequencies)."""
    model = random_model(tok, positional="rope", d_model=16, num_heads=2)
    table, title = positional_table(model)
    assert title.startswith("rotary positions (RoPE)") and table.shape == (16, 8)
    torch.testing.assert_close(table, sinusoidal_table(16, 8), rtol=0, atol=1e-5)
    other = random_model(tok, positional="rope", rope_base=100.0, d_model=16, num_heads=2)
    slow, _ = positional_table(other)
    assert not torch.allclose(slow, table, atol=1e-3)
    position, pair = 5, 1  # angle = 5 * 100^(-2/8)
    assert float(slow[position, 2 * pair]) == pytest.approx(math.sin(position * 100.0 ** (-2 * pair / 8)), abs=1e-6)
    fig = plot_positional_encoding(model)
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), table.numpy())
    with pytest.raises(WordformerError, match="head size is 8"):
        plot_positional_encoding(model, dims=[8])


def test_lr_curve_is_the_training_schedule():
    cfg = TrainConfig(lr=2e-3, min_lr=1e-4, warmup_steps=30, max_steps=300)
    line = plot_lr_schedule(cfg).axes[0].lines[0]
    expected = [learning_rate(s, lr=2e-3, min_lr=1e-4, warmup_steps=30, max_steps=300) for s in range(300)]
    np.testing.assert_array_equal(line.get_xdata(), np.arange(300))
    np.testing.assert_allclose(line.get_ydata(), expected)


def test_embedding_scatter_is_the_2d_embedding_with_token_labels(tok):
    model = random_model(tok, d_model=2, num_heads=1)
    ax = plot_embeddings(model, tok, max_tokens=100).axes[0]
    np.testing.assert_allclose(ax.collections[0].get_offsets(), model.token_embedding.weight.detach().numpy())
    assert [t.get_text() for t in ax.texts] == [tok.id_to_token(i) for i in range(tok.vocab_size)]
    assert len(plot_embeddings(model, tok, max_tokens=3).axes[0].collections[0].get_offsets()) == 3


@pytest.mark.slow
def test_wide_embeddings_are_projected_by_pca(tok):
    from sklearn.decomposition import PCA

    model = random_model(tok, d_model=8)
    ax = plot_embeddings(model, tok).axes[0]
    ours = np.asarray(ax.collections[0].get_offsets())
    reference = PCA(n_components=2).fit_transform(model.token_embedding.weight.detach().numpy())
    for col in range(2):  # principal axes are defined up to their sign
        sign = np.sign(ours[:, col] @ reference[:, col])
        np.testing.assert_allclose(ours[:, col], sign * reference[:, col], atol=1e-4)
    assert ax.get_xlabel().startswith("PC 1")


def test_training_curves_are_the_logged_csv_columns(trained_run):
    path = trained_run / "logs" / "csv" / "metrics.csv"
    rows = list(csv.DictReader(open(path)))
    lr_column = next(c for c in rows[0] if c.startswith("lr-"))  # LearningRateMonitor: lr-AdamW/pg1, ...

    def column(name):
        pairs = [(int(r["step"]), float(r[name])) for r in rows if r.get(name)]
        return [s for s, _ in pairs], [v for _, v in pairs]

    fig = plot_training_curves(trained_run)
    lines = {line.get_label(): line for ax in fig.axes for line in ax.lines}
    for name in ("train_loss", "val_loss", "val_ppl", "val_acc"):
        steps, values = column(name)
        assert values, name
        np.testing.assert_array_equal(lines[name].get_xdata(), steps)
        np.testing.assert_allclose(lines[name].get_ydata(), values)
    np.testing.assert_allclose(lines["learning rate"].get_ydata(), column(lr_column)[1])
    assert read_metrics(path) == read_metrics(trained_run)  # the CSV itself or its run folder


def test_save_figure_writes_png_svg_pdf_and_jpeg_and_refuses_other_extensions(tok, tmp_path):
    fig = plot_lr_schedule(TrainConfig(max_steps=50, warmup_steps=5))
    png = save_figure(fig, tmp_path / "sub" / "lr.png")
    assert png.read_bytes().startswith(PNG_MAGIC)
    first = png.read_bytes()
    save_figure(fig, png)  # writing over an existing plot is expected, and gives the same bytes
    assert png.read_bytes() == first
    svg = save_figure(fig, tmp_path / "lr.SVG")
    text = svg.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    pdf = save_figure(fig, tmp_path / "lr.pdf")
    assert pdf.read_bytes().startswith(b"%PDF") and save_figure(fig, pdf).read_bytes() == pdf.read_bytes()
    for name in ("lr.jpg", "lr.JPEG"):
        assert save_figure(fig, tmp_path / name).read_bytes().startswith(b"\xff\xd8\xff")  # the JPEG start marker
    with pytest.raises(WordformerError, match=r"\.png, \.svg, \.pdf or \.jpg"):
        save_figure(fig, tmp_path / "lr.gif")


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_cli_plots_every_kind_from_a_checkpoint(tok, tmp_path, capsys, trained_run):
    ckpt = save_checkpoint(random_model(tok, d_model=2, num_heads=1), tok, tmp_path / "model.ckpt")
    jobs = {
        "attention.png": ["attention", "--checkpoint", str(ckpt), "--prompt", "what is statquest"],
        "positional.svg": ["positional", "--block-size", "12", "--d-model", "4"],
        "positional_model.png": ["positional", "--checkpoint", str(ckpt)],
        "lr.png": ["lr", "--lr", "0.01", "--min-lr", "0.001", "--warmup-steps", "5", "--max-steps", "40"],
        "lr_model.svg": ["lr", "--checkpoint", str(ckpt), "--max-steps", "60"],
        "embeddings.png": ["embeddings", "--checkpoint", str(ckpt)],
        "curves.png": ["curves", "--run", str(trained_run)],
    }
    for name, args in jobs.items():
        out = tmp_path / "img" / name
        code, stdout, err = run_cli(capsys, "plot", *args, "--out", str(out))
        assert code == 0, err
        assert stdout.strip() == f"wrote {out}"
        data = out.read_bytes()
        assert data.startswith(PNG_MAGIC) if name.endswith(".png") else b"<svg" in data


@pytest.mark.parametrize("args, words", [
    (["lr", "--out", "{tmp}/x.gif"], ["x.gif", ".png, .svg, .pdf or .jpg"]),
    (["embeddings", "--checkpoint", "{tmp}/missing.ckpt", "--out", "{tmp}/e.png"], ["missing.ckpt", "does not exist"]),
    (["curves", "--run", "{tmp}", "--out", "{tmp}/c.png"], ["metrics.csv"]),
    (["lr", "--lr", "0.001", "--min-lr", "0.01", "--out", "{tmp}/l.png"], ["--min-lr 0.01", "--lr 0.001"]),
    (["positional", "--d-model", "0", "--out", "{tmp}/p.png"], ["--d-model 0"]),
    (["attention", "--checkpoint", "{tmp}/m.ckpt", "--prompt", "the cat", "--layer", "2", "--out", "{tmp}/a.png"],
     ["--layer 2 is out of range", "2 layers (-2..1)"]),
    (["attention", "--checkpoint", "{tmp}/m.ckpt", "--prompt", "the cat", "--head", "-1", "--out", "{tmp}/a.png"],
     ["--head -1 is out of range", "2 heads (0..1)"]),
    (["lr", "--out", "{tmp}/notes.txt/l.png"], ["notes.txt is a file, not a folder", "choose another --out"]),
    (["curves", "--run", "{tmp}/weights.ckpt", "--out", "{tmp}/c.png"], ["weights.ckpt is not a CSV log", "--out folder"]),
    (["lr", "--out", "{tmp}/notes.txt/deeper/l.png"], ["notes.txt is a file, not a folder"]),
])
def test_cli_mistakes_are_one_line_errors(capsys, tmp_path, args, words, tok):
    save_checkpoint(random_model(tok), tok, tmp_path / "m.ckpt")
    (tmp_path / "notes.txt").write_text("the user's")
    (tmp_path / "weights.ckpt").write_bytes(b"PK\x03\x04\x80\xff binary")
    code, _, err = run_cli(capsys, "plot", *[a.format(tmp=tmp_path) for a in args])
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("wordformer: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0]
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.jpg"))
    assert (tmp_path / "notes.txt").read_text() == "the user's"


def test_attention_of_one_layer_or_one_head_is_that_panel(tok, tmp_path, capsys):
    model = random_model(tok, num_heads=2, num_layers=2)
    prompt = "the cat sat on the mat"
    with torch.no_grad():
        _, attentions = model(torch.tensor([tok.encode(prompt)]), return_attention=True)
    one = panels(plot_attention(model, tok, prompt, layer=-1, head=1))
    assert list(one) == ["layer 1, head 1"]
    np.testing.assert_allclose(one["layer 1, head 1"], attentions[1][0, 1].numpy(), atol=1e-6)
    assert list(panels(plot_attention(model, tok, prompt, head=0))) == ["layer 0, head 0", "layer 1, head 0"]
    assert list(panels(plot_attention(model, tok, prompt, layer=0))) == ["layer 0, head 0", "layer 0, head 1"]
    ckpt = save_checkpoint(model, tok, tmp_path / "m.ckpt")
    code, out, err = run_cli(capsys, "plot", "attention", "--checkpoint", str(ckpt), "--prompt", prompt, "--layer", "1",
                             "--head", "0", "--out", str(tmp_path / "a.pdf"))
    assert code == 0 and (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF"), err


def draw(fig):
    """Lay the figure out and draw it (as saving does); returns a function giving the boxes of visible texts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    return lambda texts: [t.get_window_extent(renderer) for t in texts if t.get_visible() and t.get_text()]


@pytest.mark.parametrize("layers, heads", [(1, 1), (2, 4)])
def test_attention_tick_labels_at_60_tokens_do_not_overlap(layers, heads):
    from wordformer.plots import plot_attention_maps

    words = [f"w{i:02d}" for i in range(60)]
    torch.manual_seed(0)
    maps = [torch.softmax(torch.randn(heads, 60, 60), dim=-1) for _ in range(layers)]
    fig = plot_attention_maps(maps, words, title="masked self-attention: " + " ".join(words))
    boxes_of = draw(fig)
    for ax in fig.axes:
        if not ax.images:
            continue
        for ticks, along in ((ax.get_xticklabels(), 0), (ax.get_yticklabels(), 1)):
            boxes = boxes_of(ticks)
            if not boxes:
                continue  # labels shown on the outer panels only
            assert 5 <= len(boxes) <= 40 and ticks[-1].get_text() == "w59"  # thinned, the last token kept
            spans = sorted((b.x0, b.x1) if along == 0 else (b.y0, b.y1) for b in boxes)
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans  # no two labels overlap
    title = boxes_of([fig._suptitle])[0]
    assert fig.bbox.x0 <= title.x0 and title.x1 <= fig.bbox.x1  # the long title is wrapped, not cut off


def test_embedding_titles_fit_in_the_figure(tok):
    big = WordTokenizer.train([" ".join(f"word{i}" for i in range(3000))])
    model = random_model(big, d_model=128, num_heads=4, num_layers=1)
    fig = plot_embeddings(model, big, max_tokens=60)
    box, frame = draw(fig)([fig.axes[0].title])[0], fig.bbox
    assert "projected by PCA" in fig.axes[0].get_title() and f"60 of {big.vocab_size} tokens" in fig.axes[0].get_title()
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and box.y1 <= frame.y1


def test_attention_ticks_read_bpe_pieces_as_text_and_name_the_character_they_spell():
    """Byte-level entries showed raw on the axes ("ð Ł ĺ Ģ" for an emoji, "Ġ" for a space); a character the
    font cannot draw is written as its code point instead of an empty box."""
    import io
    import warnings

    from wordformer.tokenizers import BPETokenizer

    bpe = BPETokenizer.train(["the cat sat on the mat"] * 5, vocab_size=280)
    model = random_model(bpe, num_layers=1, num_heads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" for what it cannot draw
        fig = plot_attention(model, bpe, "the 😀 🤖")
        fig.savefig(io.BytesIO(), format="png")
    ax = next(a for a in fig.axes if a.get_title() == "layer 0, head 0")
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == ["the", "␣", "\\xf0⟨😀⟩", "\\x9f⟨😀⟩", "\\x98⟨😀⟩", "\\x80⟨😀⟩", "␣",
                     "\\xf0⟨U+1F916⟩", "\\x9f⟨U+1F916⟩", "\\xa4⟨U+1F916⟩", "\\x96⟨U+1F916⟩"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ticks
