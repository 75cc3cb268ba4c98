"""The set-anomaly task: permutation equivariance, the sets, a short run, and the tutorial's CIFAR checkpoint."""

from __future__ import annotations


import pytest
import torch

from wordformer.errors import WordformerError
from wordformer.tasks import (
    AnomalyConfig,
    AnomalyModule,
    SetAnomalyDataset,
    digits_split,
    evaluate_anomaly,
    train_anomaly,
)
from wordformer.cli import main

from tutorial_reference import RefPredictor, tutorial_checkpoint, tutorial_hparams

pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")  # Lightning's own deprecation notice



# --------------------------------------------------------------------------------------------------
# Set-anomaly task
# --------------------------------------------------------------------------------------------------
def test_anomaly_model_is_permutation_equivariant():
    torch.manual_seed(4)
    module = AnomalyModule(AnomalyConfig(model_dim=32, num_heads=4, num_layers=2).model_config(input_dim=64).to_dict()).eval()
    sets = torch.randn(3, 10, 64)
    perm = torch.randperm(10)
    with torch.no_grad():
        scores = module(sets).squeeze(-1)  # (B, S)
        permuted = module(sets[:, perm]).squeeze(-1)
    torch.testing.assert_close(permuted, scores[:, perm], atol=1e-5, rtol=0)


def test_anomaly_sets_hold_one_odd_image_and_test_sets_are_fixed():
    split = digits_split()
    assert split.train_features.shape[1] == 64 and split.test_features.shape[1] == 64
    assert abs(float(split.train_features.mean())) < 1e-4  # standardised with the training statistics
    a = SetAnomalyDataset(split.test_features, split.test_labels, 10, train=False, seed=42)
    b = SetAnomalyDataset(split.test_features, split.test_labels, 10, train=False, seed=42)
    for idx in (0, 7, len(a) - 1):
        feats, indices, position = a[idx]
        assert feats.shape == (10, 64) and int(indices[position]) == idx
        labels = split.test_labels[indices]
        others = torch.cat([labels[:position], labels[position + 1 :]])
        assert (others == others[0]).all() and labels[position] != others[0]
        assert torch.equal(indices, b[idx][1])
    with pytest.raises(WordformerError, match="at least 2 classes"):
        SetAnomalyDataset(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), 3, train=True, seed=0)


def test_anomaly_short_run_beats_chance_and_reevaluates_identically(tmp_path, capsys):
    config = AnomalyConfig(model_dim=32, num_heads=2, num_layers=1, batch_size=32, warmup=10, lr=2e-3)
    result = train_anomaly(tmp_path, epochs=3, seed=0, config=config, accelerator="cpu")
    assert result.test_accuracy > 0.4  # chance is 1/10; seeds 0-5 give 0.73-0.77
    raw = torch.load(result.checkpoint, map_location="cpu", weights_only=True)  # plain tensors and primitives
    assert raw["task"] == "anomaly" and raw["data"]["source"] == "digits"
    metrics = evaluate_anomaly(result.checkpoint)
    assert metrics["accuracy"] == pytest.approx(result.test_accuracy, abs=1e-6)
    assert main(["task", "anomaly", "test", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("anomaly: accuracy")


def test_tutorial_anomaly_checkpoint_needs_cifar_or_a_features_file(tmp_path):
    torch.manual_seed(5)
    ref = RefPredictor(12, 16, 1, 2, 1).eval()
    path = tutorial_checkpoint(tmp_path / "SetAnomalyTask.ckpt", ref, tutorial_hparams(12, 16, 1, 2, 1))
    with pytest.raises(WordformerError, match="--data-dir"):
        evaluate_anomaly(path)
    feats = torch.randn(40, 12)
    labels = torch.arange(4).repeat_interleave(10)
    torch.save({"features": feats, "labels": labels}, tmp_path / "test_feats.pt")
    metrics = evaluate_anomaly(path, features=tmp_path / "test_feats.pt")
    assert metrics["num_sets"] == 40 and 0.0 <= metrics["accuracy"] <= 1.0
    with pytest.raises(WordformerError, match="expects 12 per image"):
        torch.save({"features": torch.randn(40, 5), "labels": labels}, tmp_path / "bad.pt")
        evaluate_anomaly(path, features=tmp_path / "bad.pt")
