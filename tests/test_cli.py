"""The command line: train/generate/predict/evaluate, YAML configs, and bad input (one line, exit 2)."""

import json

import pytest

from conftest import TINY_TRAIN, run_cli
from wordformer.cli import build_parser




def test_every_config_field_is_an_option_with_its_default_in_help():
    from dataclasses import fields

    from wordformer.config import SECTIONS

    sub = build_parser()._subparsers._group_actions[0].choices["train"]
    text = sub.format_help()
    for cls in SECTIONS.values():
        for f in fields(cls):
            if f.name == "vocab_size":
                continue
            assert "--" + f.name.replace("_", "-") in text, f.name
    assert "(default: 128)" in text  # d_model


def test_generate_predict_and_evaluate_read_a_trained_checkpoint(trained_run, capsys):
    ckpt = str(trained_run / "best.ckpt")
    code, out, _ = run_cli(capsys, "generate", "--checkpoint", ckpt, "--prompt", "the cat", "--max-new-tokens", "5",
                           "--seed", "1")
    assert code == 0 and out.startswith("the cat")
    code, out, _ = run_cli(capsys, "predict", "--checkpoint", ckpt, "--prompt", "the cat", "--k", "3", "--json")
    preds = json.loads(out)
    assert code == 0 and len(preds) == 3 and preds[0]["probability"] >= preds[1]["probability"]
    code, out, _ = run_cli(capsys, "evaluate", "--checkpoint", ckpt, "--json")
    metrics = json.loads(out)
    assert code == 0 and {"loss", "perplexity", "accuracy"} <= set(metrics)


def test_evaluate_on_held_out_text(trained_run, capsys, tmp_path):
    held_out = tmp_path / "held.txt"
    held_out.write_text("the cat sat on the log . the dog sat on the mat .\n" * 3)
    code, out, _ = run_cli(capsys, "evaluate", "--checkpoint", str(trained_run / "best.ckpt"), "--data",
                           str(held_out), "--json")
    assert code == 0 and json.loads(out)["tokens"] > 0


def test_evaluate_warns_when_the_text_is_mostly_unknown_to_the_tokenizer(trained_run, capsys, caplog, tmp_path):
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("zebra quagga okapi gnu .\n" * 5)
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", str(trained_run / "best.ckpt"), "--data", str(foreign))
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert code == 0 and any("are <unk>" in w and "foreign.txt" in w for w in warned), err
    caplog.clear()
    known = tmp_path / "known.txt"
    known.write_text("the cat sat on the mat .\n" * 5)
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", str(trained_run / "best.ckpt"), "--data", str(known))
    assert code == 0 and not any("<unk>" in r.getMessage() for r in caplog.records), err


def test_generation_with_a_seed_is_reproducible(trained_run, capsys):
    args = ["generate", "--checkpoint", str(trained_run / "best.ckpt"), "--prompt", "the", "--seed", "4",
            "--max-new-tokens", "8"]
    assert run_cli(capsys, *args)[1] == run_cli(capsys, *args)[1]


def test_yaml_config_sets_options_and_command_line_overrides_it(small_text, tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text("model:\n  d_model: 12\n  num_heads: 3\ntrain:\n  lr: 3e-3\n  max_steps: 4\n")
    out = tmp_path / "run"
    code, _, _ = run_cli(capsys, "train", "--config", str(config), "--data", str(small_text), "--out", str(out),
                         "--block-size", "8", "--max-steps", "6", "--eval-interval", "3", "--no-progress")
    assert code == 0
    from wordformer import load_checkpoint

    loaded = load_checkpoint(out / "last.ckpt")
    assert loaded.model_config.d_model == 12 and loaded.model_config.num_heads == 3
    assert loaded.train_config.lr == pytest.approx(3e-3)  # "3e-3" is a string to YAML 1.1
    assert loaded.train_config.max_steps == 6  # the command line wins


def test_options_another_tokenizer_reads_are_named_as_ignored(small_text, tmp_path, capsys, caplog):
    base = ["train", "--data", small_text, *TINY_TRAIN, "--max-steps", "2"]
    code, _, err = run_cli(capsys, *base, "--out", tmp_path / "a", "--tokenizer", "char", "--min-freq", "3")
    assert code == 0, err
    assert any("--min-freq is ignored" in r.getMessage() and "word tokenizer" in r.getMessage() for r in caplog.records)
    caplog.clear()
    code, _, err = run_cli(capsys, *base, "--out", tmp_path / "b", "--min-freq", "1")  # word: it applies
    assert code == 0 and not any("ignored" in r.getMessage() for r in caplog.records), err


@pytest.mark.slow
def test_a_reader_that_leaves_early_is_no_traceback(trained_run):
    """`wordformer generate ... | head -1`: a broken pipe ends the command quietly."""
    import subprocess
    import sys

    from conftest import one_thread_env

    cmd = (f"{sys.executable} -m wordformer.cli generate --checkpoint {trained_run / 'best.ckpt'} --prompt the "
           "--num-samples 3000 --max-new-tokens 3 | head -1")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=one_thread_env(),
                          timeout=300)
    assert proc.stdout.count("\n") == 1 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, \
        proc.stderr[-2000:]
