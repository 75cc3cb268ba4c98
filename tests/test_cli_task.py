"""`wordformer task`: the command line, and nothing the user had is lost (damaged files, blocked paths)."""

from __future__ import annotations

import os
import re
import zipfile

import pytest
import torch

from wordformer.errors import WordformerError
from wordformer.tasks import (
    EncoderConfig,
    EncoderPredictor,
    evaluate_anomaly,
    load_task_checkpoint,
    save_task_checkpoint,
)
from wordformer.cli import build_parser, main
from wordformer.cli import task as task_cli
from wordformer.checkpoint import load_error_reason as _reason

from tutorial_reference import RefPredictor, tutorial_checkpoint, tutorial_hparams

pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")  # Lightning's own deprecation notice



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


@pytest.mark.slow
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
    path = tutorial_checkpoint(tmp_path / "SetAnomalyTask.ckpt", RefPredictor(12, 16, 1, 2, 1), tutorial_hparams(12, 16, 1, 2, 1))
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
