"""The reverse task: a short run learns it, its attention is the anti-diagonal, evaluation reproduces the score."""

from __future__ import annotations


import pytest
import torch

from wordformer.errors import WordformerError
from wordformer.tasks import (
    evaluate_anomaly,
    evaluate_reverse,
    reverse_attention_maps,
)
from wordformer.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")  # Lightning's own deprecation notice



# --------------------------------------------------------------------------------------------------
# Reverse task: one short training run shared by the tests below
# --------------------------------------------------------------------------------------------------
def test_reverse_short_run_learns_the_task(reverse_run):
    assert reverse_run.checkpoint.is_file()
    assert reverse_run.test_accuracy > 0.99


def test_reverse_attention_is_the_anti_diagonal(reverse_run):
    seqs = torch.randint(10, (128, 16), generator=torch.Generator().manual_seed(3))
    maps = reverse_attention_maps(reverse_run.checkpoint, seqs)
    assert len(maps) == 1 and maps[0].shape == (128, 1, 16, 16)
    mean_rows = maps[0].mean(dim=0)[0]  # (T, T): average attention of each query position
    assert torch.equal(mean_rows.argmax(dim=-1), torch.arange(15, -1, -1))


def test_reverse_attention_plot_shows_the_models_maps(reverse_run, tmp_path, capsys):
    out = tmp_path / "attention.png"
    args = ["reverse", "attention", "--checkpoint", str(reverse_run.checkpoint), "--plot", str(out), "--seed", "5"]
    assert main(["task", *args]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from wordformer.plots import plot_attention_maps

    seq = torch.randint(10, (1, 16), generator=torch.Generator().manual_seed(5))
    maps = reverse_attention_maps(reverse_run.checkpoint, seq)
    fig = plot_attention_maps([m[0] for m in maps], [str(int(v)) for v in seq[0]], causal=False)
    shown = fig.axes[0].images[0].get_array()
    assert torch.allclose(torch.as_tensor(shown), maps[0][0, 0], atol=1e-6)
    assert torch.equal(torch.as_tensor(shown).argmax(dim=-1), torch.arange(15, -1, -1))


def test_reverse_checkpoint_is_plain_and_evaluation_reproduces_the_test_score(reverse_run, capsys):
    raw = torch.load(reverse_run.checkpoint, map_location="cpu", weights_only=True)  # no stand-ins needed
    assert raw["task"] == "reverse" and raw["data"]["seq_len"] == 16
    metrics = evaluate_reverse(reverse_run.checkpoint, num_test=1000)
    assert metrics["accuracy"] == pytest.approx(reverse_run.test_accuracy, abs=1e-6)
    with pytest.raises(WordformerError, match="holds a reverse model"):
        evaluate_anomaly(reverse_run.checkpoint)
    assert main(["task", "reverse", "test", "--checkpoint", str(reverse_run.checkpoint), "--num-test", "100", "--json"]) == 0
    assert '"accuracy"' in capsys.readouterr().out
