"""Tutorial 6 checkpoints: the tutorial's own files import with identical outputs and never run pickled code."""

from __future__ import annotations

import os
import sys
import types

import pytest
import torch

from wordformer.errors import WordformerError
from wordformer.tasks import (
    load_task_checkpoint,
    safe_load,
)
from wordformer.cli import main

from tutorial_reference import RefPredictor, tutorial_checkpoint, tutorial_hparams

pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")  # Lightning's own deprecation notice



@pytest.mark.parametrize(
    "task, dims, positional",
    [("reverse", (10, 16, 10, 4, 2), True), ("anomaly", (12, 24, 1, 3, 2), False)],
)
def test_tutorial_checkpoint_imports_with_identical_outputs(tmp_path, task, dims, positional):
    torch.manual_seed(0)
    ref = RefPredictor(*dims).eval()
    path = tutorial_checkpoint(tmp_path / f"{task}.ckpt", ref, tutorial_hparams(*dims))
    loaded = load_task_checkpoint(path)
    assert loaded.task == task and loaded.source == "tutorial"
    assert loaded.model.config.positional_encoding is positional
    x = torch.randn(5, 7, dims[0])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), ref(x, positional), atol=1e-5, rtol=0)


def test_tutorial_reverse_checkpoint_evaluates_from_the_cli(tmp_path, capsys):
    torch.manual_seed(1)
    ref = RefPredictor(10, 16, 10, 2, 1)
    path = tutorial_checkpoint(tmp_path / "ReverseTask.ckpt", ref, tutorial_hparams(10, 16, 10, 2, 1))
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
    path = tutorial_checkpoint(tmp_path / "pl.ckpt", ref, AttributeDict(tutorial_hparams(10, 16, 10, 2, 1)), callbacks=callbacks)
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
