"""Tutorial 6 tasks: the encoder, reverse and set-anomaly training, and safe import of tutorial checkpoints."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wordformer.errors import WordformerError
from wordformer.tasks import (
    AnomalyConfig,
    AnomalyModule,
    EncoderConfig,
    EncoderPredictor,
    ReverseConfig,
    SetAnomalyDataset,
    cosine_warmup_factor,
    digits_split,
    evaluate_anomaly,
    evaluate_reverse,
    extract_features,
    load_task_checkpoint,
    resnet34_backbone,
    reverse_attention_maps,
    safe_load,
    save_task_checkpoint,
    train_anomaly,
    train_reverse,
)
from wordformer.cli import build_parser, main
from wordformer.cli import task as task_cli
from wordformer.checkpoint import load_error_reason as _reason

pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")  # Lightning's own deprecation notice


# --------------------------------------------------------------------------------------------------
# A fresh reference of the tutorial's TransformerPredictor layout: same state_dict names, per-head qkv.
# --------------------------------------------------------------------------------------------------
class RefAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.o_proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        d = c // self.heads
        qkv = self.qkv_proj(x).reshape(b, t, self.heads, 3 * d).permute(0, 2, 1, 3)  # per head: [q | k | v]
        q, k, v = qkv[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :]
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        return self.o_proj((weights @ v).permute(0, 2, 1, 3).reshape(b, t, c))


class RefLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = RefAttention(dim, heads)
        self.linear_net = nn.Sequential(nn.Linear(dim, 2 * dim), nn.Dropout(0.0), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.linear_net(x))


class RefEncoder(nn.Module):
    def __init__(self, layers: int, dim: int, heads: int):
        super().__init__()
        self.layers = nn.ModuleList(RefLayer(dim, heads) for _ in range(layers))


class RefPredictor(nn.Module):
    def __init__(self, input_dim: int, model_dim: int, num_classes: int, num_heads: int, num_layers: int):
        super().__init__()
        self.input_net = nn.Sequential(nn.Dropout(0.0), nn.Linear(input_dim, model_dim))
        self.transformer = RefEncoder(num_layers, model_dim, num_heads)
        self.output_net = nn.Sequential(
            nn.Linear(model_dim, model_dim), nn.LayerNorm(model_dim), nn.ReLU(), nn.Dropout(0.0), nn.Linear(model_dim, num_classes)
        )
        with torch.no_grad():  # random everything, biases and norms included, so every mapping matters
            for p in self.parameters():
                p.normal_(0.0, 0.4)

    def forward(self, x, positional: bool):
        h = self.input_net(x)
        if positional:
            t, c = h.shape[1], h.shape[2]
            pos = torch.arange(t, dtype=torch.float32)[:, None]
            freq = torch.exp(-math.log(10000.0) * torch.arange(0, c, 2, dtype=torch.float32) / c)
            pe = torch.zeros(t, c)
            pe[:, 0::2] = torch.sin(pos * freq)
            pe[:, 1::2] = torch.cos(pos * freq)
            h = h + pe
        for layer in self.transformer.layers:
            h = layer(h)
        return self.output_net(h)


def _tutorial_checkpoint(path: Path, ref: RefPredictor, hparams: dict, **extra) -> Path:
    torch.save(
        {"epoch": 9, "global_step": 3900, "pytorch-lightning_version": "1.5.0", "state_dict": ref.state_dict(),
         "hyper_parameters": hparams, **extra},
        path,
    )
    return path


def _hparams(input_dim: int, model_dim: int, num_classes: int, num_heads: int, num_layers: int) -> dict:
    return dict(input_dim=input_dim, model_dim=model_dim, num_classes=num_classes, num_heads=num_heads,
                num_layers=num_layers, lr=5e-4, warmup=50, max_iters=3900, dropout=0.0, input_dropout=0.0)


@pytest.mark.parametrize(
    "task, dims, positional",
    [("reverse", (10, 16, 10, 4, 2), True), ("anomaly", (12, 24, 1, 3, 2), False)],
)
def test_tutorial_checkpoint_imports_with_identical_outputs(tmp_path, task, dims, positional):
    torch.manual_seed(0)
    ref = RefPredictor(*dims).eval()
    path = _tutorial_checkpoint(tmp_path / f"{task}.ckpt", ref, _hparams(*dims))
    loaded = load_task_checkpoint(path)
    assert loaded.task == task and loaded.source == "tutorial"
    assert loaded.model.config.positional_encoding is positional
    x = torch.randn(5, 7, dims[0])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), ref(x, positional), atol=1e-5, rtol=0)


def test_tutorial_reverse_checkpoint_evaluates_from_the_cli(tmp_path, capsys):
    torch.manual_seed(1)
    ref = RefPredictor(10, 16, 10, 2, 1)
    path = _tutorial_checkpoint(tmp_path / "ReverseTask.ckpt", ref, _hparams(10, 16, 10, 2, 1))
    assert main(["task", "reverse", "test", "--checkpoint", str(path), "--num-test", "64"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("reverse: accuracy") and "64 sequences" in out


def test_lightning_attribute_dict_and_callback_keys_are_read_without_code(tmp_path, monkeypatch):
    class AttributeDict(dict):  # what Lightning 1.x pickled its hyperparameters as
        def __getattr__(self, key):
            try:
                return self[key]
            except KeyError as exc:
                raise AttributeError(key) from exc

    class ModelCheckpoint:  # Lightning < 1.5 keyed checkpoint["callbacks"] by the class itself
        pass

    names = {"pytorch_lightning": None, "pytorch_lightning.utilities": None,
             "pytorch_lightning.utilities.parsing": AttributeDict, "pytorch_lightning.callbacks": None,
             "pytorch_lightning.callbacks.model_checkpoint": ModelCheckpoint}
    for name, cls in names.items():
        module = types.ModuleType(name)
        if cls is not None:
            cls.__module__, cls.__qualname__ = name, cls.__name__
            setattr(module, cls.__name__, cls)
        monkeypatch.setitem(sys.modules, name, module)

    torch.manual_seed(2)
    ref = RefPredictor(10, 16, 10, 2, 1).eval()
    callbacks = {ModelCheckpoint: {"monitor": "val_acc", "best_model_score": torch.tensor(0.99)}}
    path = _tutorial_checkpoint(tmp_path / "pl.ckpt", ref, AttributeDict(_hparams(10, 16, 10, 2, 1)), callbacks=callbacks)
    for name in names:  # loading must not need (or import) Lightning 1.x
        monkeypatch.delitem(sys.modules, name)

    raw = safe_load(path)
    assert type(raw["hyper_parameters"]) is dict and raw["hyper_parameters"]["num_heads"] == 2
    assert list(raw["callbacks"]) == ["pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"]
    loaded = load_task_checkpoint(path, expect="reverse")
    x = torch.randn(3, 16, 10)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), ref(x, True), atol=1e-5, rtol=0)


class _OpensFile:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


class _RunsShell:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("payload", [_OpensFile, _RunsShell])
def test_checkpoint_with_pickled_code_is_refused_and_never_runs(tmp_path, payload):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": payload(str(target))}}, path)
    with pytest.raises(WordformerError, match=r"refusing to load .*pickled code \(GLOBAL "):
        load_task_checkpoint(path)
    assert not target.exists()


def test_unreadable_and_missing_checkpoints_are_user_errors(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WordformerError, match="cannot read"):
        safe_load(junk)
    with pytest.raises(WordformerError, match="not found"):
        safe_load(tmp_path / "missing.ckpt")
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(WordformerError, match="neither"):
        load_task_checkpoint(other)


# --------------------------------------------------------------------------------------------------
# The encoder and its pieces
# --------------------------------------------------------------------------------------------------
def test_encoder_config_and_input_errors_are_one_line_user_errors():
    with pytest.raises(WordformerError, match="num_heads=3 must divide model_dim=32"):
        EncoderConfig(model_dim=32, num_heads=3)
    with pytest.raises(WordformerError, match="dropout"):
        EncoderConfig(dropout=1.5)
    model = EncoderPredictor(EncoderConfig(input_dim=4, model_dim=8, num_heads=2, max_len=6))
    with pytest.raises(WordformerError, match=r"expected \(batch, length, 4\)"):
        model(torch.randn(2, 3, 5))
    with pytest.raises(WordformerError, match="max_len"):
        model(torch.randn(1, 7, 4))


def test_attention_maps_are_row_stochastic_per_layer_and_head():
    model = EncoderPredictor(EncoderConfig(input_dim=5, model_dim=12, num_heads=3, num_layers=2)).eval()
    maps = model.get_attention_maps(torch.randn(4, 6, 5))
    assert len(maps) == 2 and all(m.shape == (4, 3, 6, 6) for m in maps)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(4, 3, 6))


def test_cosine_warmup_schedule_ramps_then_decays():
    assert cosine_warmup_factor(0, 50, 1000) == 0.0
    assert cosine_warmup_factor(25, 50, 1000) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 25 / 1000)))
    assert cosine_warmup_factor(500, 50, 1000) == pytest.approx(0.5)
    assert cosine_warmup_factor(1000, 50, 1000) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# Reverse task: one short training run shared by the tests below
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reverse_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reverse")
    config = ReverseConfig(train_size=4800, val_size=256, test_size=1000, batch_size=64, lr=1e-2, warmup=10)
    return train_reverse(out, epochs=3, seed=0, config=config, accelerator="cpu")  # 1.0 for seeds 0-5


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
    path = _tutorial_checkpoint(tmp_path / "SetAnomalyTask.ckpt", ref, _hparams(12, 16, 1, 2, 1))
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


# --------------------------------------------------------------------------------------------------
# Feature extraction (the tutorial's ResNet path runs on any module)
# --------------------------------------------------------------------------------------------------
class _TinyBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(F.adaptive_avg_pool2d(self.conv(x), 1))  # (B, 6, 1, 1)


def test_extract_features_runs_any_backbone_in_eval_mode():
    backbone = _TinyBackbone().train()
    images = torch.randn(5, 3, 8, 8)
    feats = extract_features(images, backbone, batch_size=2)
    assert feats.shape == (5, 6) and backbone.training  # flattened, and the mode is restored
    again = extract_features(torch.utils.data.TensorDataset(images, torch.zeros(5)), backbone, batch_size=4)
    torch.testing.assert_close(feats, again)  # eval mode: dropout off, so deterministic
    with pytest.raises(WordformerError, match="nn.Module"):
        extract_features(images, lambda x: x)  # type: ignore[arg-type]


def test_resnet_backbone_without_torchvision_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails as if absent
    with pytest.raises(WordformerError, match=r"wordformer\[vision\]"):
        resnet34_backbone()


def test_resnet34_feature_path_with_torchvision():
    try:
        import torchvision  # noqa: F401
    except Exception:
        pytest.skip("PyPI torchvision does not load beside the local CPU torch 2.13.0")
    backbone = resnet34_backbone(pretrained=False)
    assert extract_features(torch.randn(2, 3, 32, 32), backbone, batch_size=2).shape == (2, 512)


# --------------------------------------------------------------------------------------------------
# CLI glue
# --------------------------------------------------------------------------------------------------
def test_task_parser_registers_on_a_main_cli(tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(["task", "reverse", "train", "--epochs", "3", "--seed", "7", "--out", str(tmp_path)])
    assert (args.handler, args.task, args.action, args.epochs, args.seed) == (task_cli.run_task, "reverse", "train", 3, 7)
    args = parser.parse_args(["task", "anomaly", "test", "--checkpoint", "x.ckpt"])
    assert (args.task, args.action) == ("anomaly", "test")
    with pytest.raises(WordformerError, match="not found"):
        args.handler(parser.parse_args(["task", "reverse", "test", "--out", str(tmp_path)]))
    argv = ["reverse", "train", "--out", str(tmp_path), "--epochs", "1", "--train-size", "128", "--batch-size", "64",
            "--accelerator", "cpu"]
    assert main(["task", *argv]) == 0
    assert capsys.readouterr().out.startswith("reverse: test accuracy")
    assert (tmp_path / "reverse.ckpt").is_file()
    assert main(["task", "anomaly", "test", "--checkpoint", str(tmp_path / "none.ckpt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wordformer: error: checkpoint")


# --------------------------------------------------------------------------------------------------
# Nothing the user had is lost; damaged files and blocked paths are one-line errors
# --------------------------------------------------------------------------------------------------
TINY_REVERSE = ["--epochs", "1", "--train-size", "128", "--batch-size", "64", "--accelerator", "cpu"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wordformer: error: "), err
    return err[0]


def test_task_train_refuses_to_replace_a_checkpoint_unless_overwrite(tmp_path, capsys):
    (tmp_path / "reverse.ckpt").write_bytes(b"the better model")
    (tmp_path / "anomaly.ckpt").write_bytes(b"another good model")
    assert main(["task", "reverse", "train", "--out", str(tmp_path), *TINY_REVERSE]) == 2
    line = _one_error_line(capsys)
    assert "already holds a reverse checkpoint (reverse.ckpt)" in line and "--overwrite" in line
    assert (tmp_path / "reverse.ckpt").read_bytes() == b"the better model"
    assert main(["task", "anomaly", "train", "--out", str(tmp_path), "--epochs", "1", "--accelerator", "cpu"]) == 2
    assert "already holds an anomaly checkpoint (anomaly.ckpt)" in _one_error_line(capsys)
    assert (tmp_path / "anomaly.ckpt").read_bytes() == b"another good model"

    assert main(["task", "reverse", "train", "--out", str(tmp_path), *TINY_REVERSE, "--overwrite"]) == 0
    assert load_task_checkpoint(tmp_path / "reverse.ckpt").task == "reverse"
    assert sorted(os.listdir(tmp_path)) == ["anomaly.ckpt", "reverse.ckpt"]  # no temp files, no Lightning logs


def test_task_output_paths_through_a_file_or_onto_a_folder_are_refused(reverse_run, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for out in (notes, notes / "sub"):
        assert main(["task", "reverse", "train", "--out", str(out), *TINY_REVERSE]) == 2
        assert f"{notes} is a file" in _one_error_line(capsys)
    (tmp_path / "run" / "reverse.ckpt").mkdir(parents=True)  # even --overwrite never deletes a folder
    assert main(["task", "reverse", "train", "--out", str(tmp_path / "run"), *TINY_REVERSE, "--overwrite"]) == 2
    assert "reverse.ckpt is a folder" in _one_error_line(capsys)
    plot = ["reverse", "attention", "--checkpoint", str(reverse_run.checkpoint), "--plot"]
    assert main(["task", *plot, str(notes / "rev.png")]) == 2
    assert f"--plot {notes / 'rev.png'}: {notes} is a file" in _one_error_line(capsys)
    assert main(["task", *plot, str(tmp_path / "run.png")]) == 0  # a plain new file still works
    capsys.readouterr()
    assert notes.read_text() == "mine"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw.pop("model_config"), "not a complete wordformer task checkpoint: it lacks the entry 'model_config'"),
        (lambda raw: raw.pop("state_dict"), "it lacks the entry 'state_dict'"),
        (lambda raw: raw.update(model_config="hello"), "model_config must be a mapping, not str"),
        (lambda raw: raw.update(data=[16]), "data must be a mapping, not list"),
        (lambda raw: raw["state_dict"]["input_net.1.weight"].fill_(float("nan")), "NaN or infinite weights (input_net.1.weight)"),
    ],
)
def test_damaged_task_checkpoints_are_one_line_errors(reverse_run, tmp_path, capsys, damage, message):
    raw = torch.load(reverse_run.checkpoint, map_location="cpu", weights_only=True)
    damage(raw)
    bad = tmp_path / "bad.ckpt"
    torch.save(raw, bad)
    assert main(["task", "reverse", "test", "--checkpoint", str(bad), "--num-test", "10"]) == 2
    assert message in _one_error_line(capsys)


def test_a_diverged_model_is_never_saved(tmp_path):
    model = EncoderPredictor(EncoderConfig(input_dim=4, model_dim=8, num_heads=2))
    with torch.no_grad():
        model.output_net[-1].bias.fill_(float("inf"))
    target = tmp_path / "reverse.ckpt"
    target.write_bytes(b"a working model")
    with pytest.raises(WordformerError, match="training diverged: weights output_net.4.bias hold NaN or infinite"):
        save_task_checkpoint(target, task="reverse", model=model, hparams={}, data={}, metrics={})
    assert target.read_bytes() == b"a working model" and os.listdir(tmp_path) == ["reverse.ckpt"]


def test_messages_use_the_right_article_and_name_the_right_kind_of_file(reverse_run, tmp_path):
    with pytest.raises(WordformerError, match="holds a reverse model, not an anomaly model"):
        evaluate_anomaly(reverse_run.checkpoint)
    path = _tutorial_checkpoint(tmp_path / "SetAnomalyTask.ckpt", RefPredictor(12, 16, 1, 2, 1), _hparams(12, 16, 1, 2, 1))
    with pytest.raises(WordformerError, match=r"^features file \S*missing\.pt not found: pass --features") as exc:
        evaluate_anomaly(path, features=tmp_path / "missing.pt")
    assert "checkpoint" not in str(exc.value) and ".ckpt" not in str(exc.value)


def test_torch_errors_are_quoted_in_whole_sentences(reverse_run, tmp_path):
    miniz = ("PytorchStreamReader failed reading file data/0: invalid header or archive is corrupted. This is an "
             "internal miniz error. If you are seeing this error, there is a high likelihood that your checkpoint file "
             "is corrupted. This can happen if the checkpoint was not saved properly.")
    assert _reason(miniz) == ("PytorchStreamReader failed reading file data/0: invalid header or archive is corrupted. "
                              "This is an internal miniz error")
    assert _reason('Expected hasRecord("version") to be true, but got false.  (Could this error message be improved?  '
                   "If so, please report an enhancement request to PyTorch.)") == 'Expected hasRecord("version") to be true, but got false'
    assert _reason("174812789") == "not a file that torch.save wrote"  # torch's whole message for a text file
    # A real damaged archive: the quote is torch's own text, ending where one of its sentences ends.
    data = bytearray(reverse_run.checkpoint.read_bytes())
    with zipfile.ZipFile(reverse_run.checkpoint) as archive:
        start = next(i.header_offset for i in archive.infolist() if i.filename.endswith("/data/0"))
    data[start : start + 8] = bytes(b ^ 0xFF for b in data[start : start + 8])
    bad = tmp_path / "corrupt.ckpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(WordformerError, match=r"cannot read checkpoint .*corrupt\.ckpt as a PyTorch file \(") as exc:
        load_task_checkpoint(bad)
    with pytest.raises(Exception) as raw_exc:
        torch.load(bad, weights_only=True)
    quoted = re.search(r"file \((.*)\): check the file$", str(exc.value)).group(1)
    original = " ".join(str(raw_exc.value).split())
    assert original.startswith(quoted) and original[len(quoted)] == "."
