"""The bad-input matrix: every user mistake ends in one clear line, exit status 2, and nothing overwritten.

Each case goes through the command line (``wordformer.cli.main``; a few through a real subprocess). For
every case: exit code 2 (or 0 where the input is defined to work), exactly one ``wordformer: error:``
line, no traceback, and the checkpoints of an earlier run in ``--out`` byte-for-byte unchanged.
This file is the one matrix of user errors; other test files test behaviour that works.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

import pytest
import torch

from conftest import SMALL_TEXT, TINY_TRAIN, assert_one_line_error, run_cli, one_thread_env
from wordformer import load_checkpoint
from wordformer.checkpoint import wordformer_entry
from wordformer.cli import main
from wordformer.config import DataConfig, ModelConfig, TrainConfig
from wordformer.errors import WordformerError
from wordformer.model import WordPredictor
from wordformer.tokenizers import BPETokenizer, CharTokenizer

QUICK = ["--max-steps", "1", "--eval-interval", "1", "--eval-batches", "1"]  # after TINY_TRAIN: one step


def assert_works(code: int, err: str) -> None:
    assert code == 0, err
    assert "wordformer: error:" not in err and "Traceback" not in err


def fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every checkpoint in ``folder``."""
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in folder.glob("*.ckpt")}


@pytest.fixture
def prior_run(trained_run, tmp_path) -> Path:
    """An --out folder that already holds a good run, which no failing command may touch."""
    out = tmp_path / "prior"
    out.mkdir()
    for name in ("best.ckpt", "last.ckpt"):
        shutil.copy2(trained_run / name, out / name)
    return out


def write_checkpoint(path: Path, raw: dict) -> Path:
    torch.save(raw, path)
    return path


def hand_built(path: Path, kind: str, texts: list[str]) -> Path:
    """A valid wordformer checkpoint of an untrained char or BPE model: no training needed."""
    tok = CharTokenizer.train(texts) if kind == "char" else BPETokenizer.train(texts, vocab_size=300)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=8, d_model=16, num_heads=2, num_layers=1)
    model = WordPredictor(cfg)
    entry = wordformer_entry(cfg, DataConfig(tokenizer=kind), TrainConfig(), tok, step=0)
    return write_checkpoint(path, {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                                   "wordformer": entry})


# ------------------------------------------------------------------------------------------ data


def _file(name: str, content: bytes | str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        path = tmp / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return ["--data", str(path)]
    return make


def _no_txt_folder(tmp: Path) -> list[str]:
    folder = tmp / "notes"
    folder.mkdir()
    (folder / "readme.md").write_text(SMALL_TEXT)
    return ["--data", str(folder)]


def _empty_txt_folder(tmp: Path) -> list[str]:
    folder = tmp / "blank"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("")
    (folder / "sub" / "b.txt").write_text(" \n\n")
    return ["--data", str(folder)]


DATA_CASES = {
    "missing path": (lambda tmp: ["--data", str(tmp / "missing.txt")], ["does not exist"]),
    "folder without .txt": (_no_txt_folder, ["no .txt files"]),
    "folder of empty .txt": (_empty_txt_folder, ["empty"]),
    "empty file": (_file("empty.txt", b""), ["empty"]),
    "whitespace only": (_file("blank.txt", " \n\t\r\n  \n"), ["empty"]),
    "not UTF-8": (_file("latin.txt", "caf\xe9 au lait ".encode("latin-1") * 40), ["not UTF-8", "--encoding-errors"]),
    "binary": (_file("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4), ["binary"]),
    "UTF-16": (_file("wide.txt", SMALL_TEXT.encode("utf-16")), ["binary", "UTF-16"]),
    "device, not a file": (lambda tmp: ["--data", "/dev/null"], ["neither a file nor a folder"]),
    "shorter than one block": (_file("short.txt", "just a few words"), ["block_size=8"]),
    "pairs line without TAB": (lambda tmp: _file("p.tsv", "what is it\tawesome\nno tab here\n")(tmp) + ["--pairs"],
                               ["line 2", "no TAB"]),
    "pairs line with empty answer": (lambda tmp: _file("p.tsv", "what is it\t \n")(tmp) + ["--pairs"],
                                     ["empty answer"]),
    "pairs without --data": (lambda tmp: ["--pairs"], ["--data"]),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_gets_one_line_and_leaves_the_run_alone(case, tmp_path, prior_run, capsys):
    make, words = DATA_CASES[case]
    before = fingerprint(prior_run)
    code, _, err = run_cli(capsys, "train", *make(tmp_path), "--out", prior_run, "--overwrite", *TINY_TRAIN)
    assert_one_line_error(code, err, *words)
    assert fingerprint(prior_run) == before
    assert not (prior_run / ".write-test").exists()


def test_crlf_and_replaced_bytes_train_and_their_marks_do_not_leak(tmp_path, capsys):
    """CRLF line ends become \\n; with --encoding-errors replace bad bytes become U+FFFD (strict refuses)."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "windows.txt").write_bytes(SMALL_TEXT.replace("\n", "\r\n").encode())
    (folder / "latin.txt").write_bytes("caf\xe9 au lait\r\n".encode("latin-1") * 20)
    code, _, err = run_cli(capsys, "train", "--data", folder, "--out", tmp_path / "strict", "--tokenizer", "char",
                           *TINY_TRAIN, *QUICK)
    assert_one_line_error(code, err, "not UTF-8")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", folder, "--out", out, "--tokenizer", "char",
                           "--encoding-errors", "replace", *TINY_TRAIN, *QUICK)
    assert_works(code, err)
    tok = load_checkpoint(out / "last.ckpt").tokenizer
    chars = set(tok.to_dict()["chars"])
    assert "\r" not in chars and "\n" in chars and "\ufffd" in chars


def test_a_single_5_mb_line_trains_with_the_char_tokenizer(tmp_path, capsys):
    """No line splitting is assumed anywhere (scripts/fault_injection.py runs the 50 MB version)."""
    line = ("the quick brown fox jumps over the lazy dog; " * 120_000)[:5_000_000]
    data = tmp_path / "one-line.txt"
    data.write_text(line)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", out, "--tokenizer", "char", *TINY_TRAIN, *QUICK)
    assert_works(code, err)
    assert load_checkpoint(out / "last.ckpt").info["step"] == 1


def test_evaluate_refuses_bad_held_out_data(trained_run, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("the cat")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 ".encode("latin-1") * 50)
    for data, words in [(tmp_path / "nope.txt", "does not exist"), (short, "fewer than block_size"),
                        (latin, "not UTF-8")]:
        code, _, err = run_cli(capsys, "evaluate", "--checkpoint", trained_run / "best.ckpt", "--data", data)
        assert_one_line_error(code, err, words)


# ------------------------------------------------------------------------------------------ config


YAML_CASES = {
    "unknown key": ("model:\n  d_model: 16\n  heads: 2\n", ["unknown option", "heads"]),
    "wrong type": ("model:\n  d_model: big\n", ["d_model", "not a valid int"]),
    "float for int": ("train:\n  batch_size: 2.5\n", ["batch_size"]),
    "string for bool": ("model:\n  tie_weights: maybe\n", ["tie_weights"]),
    "invalid YAML": ("model:\n  d_model: [16\n", ["not valid YAML", "line"]),
    "not a mapping": ("just a sentence\n", ["mapping"]),
    "a list": ("- 1\n- 2\n", ["mapping"]),
    "negative size": ("model:\n  num_layers: -1\n", ["num_layers=-1"]),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_bad_yaml_config_gets_one_line(case, tmp_path, prior_run, small_text, capsys):
    content, words = YAML_CASES[case]
    config = tmp_path / "cfg.yaml"
    config.write_text(content)
    before = fingerprint(prior_run)
    code, _, err = run_cli(capsys, "train", "--config", config, "--data", small_text, "--out", prior_run, "--overwrite")
    assert_one_line_error(code, err, *words)
    assert fingerprint(prior_run) == before


def test_missing_and_unreadable_config_files(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--config", tmp_path / "none.yaml", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "does not exist")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    code, _, err = run_cli(capsys, "train", "--config", binary, "--out", tmp_path / "o")
    assert_one_line_error(code, err, str(binary))


OPTION_CASES = [
    (["--block-size", "0"], ["block_size=0"]),
    (["--d-model", "-16"], ["d_model=-16"]),
    (["--num-layers", "0"], ["num_layers=0"]),
    (["--num-heads", "0"], ["num_heads=0"]),
    (["--num-heads", "3"], ["num_heads=3", "d_model=16"]),
    (["--ff-mult", "0"], ["ff_mult=0"]),
    (["--batch-size", "0"], ["batch_size=0"]),
    (["--max-steps", "0"], ["max_steps=0"]),
    (["--eval-interval", "0"], ["eval_interval=0"]),
    (["--grad-accum", "0"], ["grad_accum=0"]),
    (["--warmup-steps", "-1"], ["warmup_steps=-1"]),
    (["--dropout", "1.0"], ["dropout=1.0", "[0.0, 1.0)"]),
    (["--dropout", "-0.1"], ["dropout=-0.1"]),
    (["--lr", "0"], ["lr=0"]),
    (["--lr", "100"], ["lr=100"]),
    (["--min-lr", "0.5"], ["min_lr=0.5"]),
    (["--val-fraction", "0.9"], ["val_fraction=0.9"]),
    (["--val-fraction", "0"], ["val_fraction=0"]),
    (["--max-time", "0"], ["max_time=0"]),
    (["--max-vocab", "0"], ["max_vocab=0"]),
    (["--min-freq", "1000"], ["min_freq=1000"]),
    (["--tokenizer", "bpe", "--bpe-vocab-size", "100"], ["bpe_vocab_size=100", "below 258"]),
    (["--tokenizer", "bpe", "--bpe-vocab-size", "0"], ["bpe_vocab_size=0"]),
    (["--resume", "{tmp}/no-run"], ["nothing to resume", "no last.ckpt"]),
]


@pytest.mark.parametrize("options, words", OPTION_CASES, ids=[" ".join(o) for o, _ in OPTION_CASES])
def test_bad_options_get_one_line(options, words, tmp_path, prior_run, small_text, capsys):
    before = fingerprint(prior_run)
    options = [o.replace("{tmp}", str(tmp_path)) for o in options]
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", prior_run, "--overwrite", *TINY_TRAIN,
                           *options)
    assert_one_line_error(code, err, *words)
    assert fingerprint(prior_run) == before


# Values the configs accept today but the Trainer or PyTorch then rejects with a traceback (or that
# train to NaN): they must be refused up front like every other option. See the reply for the fixes.
UNCHECKED_CASES = [
    (["--dropout", "nan"], ["dropout"]),
    (["--lr", "nan"], ["lr"]),
    (["--grad-clip", "nan"], ["grad_clip"]),
    (["--max-time", "nan"], ["max_time"]),
    (["--layer-norm-eps", "0"], ["layer_norm_eps"]),
    (["--seed", "-1"], ["seed"]),
    (["--precision", "64x"], ["precision"]),
    (["--accelerator", "tpu9"], ["accelerator"]),
    (["--devices", "abc"], ["devices"]),
    (["--devices", "0"], ["devices"]),
    (["--num-nodes", "0"], ["num_nodes"]),
    (["--workers", "0"], ["workers"]),
]


@pytest.mark.parametrize("options, words", UNCHECKED_CASES, ids=[" ".join(o) for o, _ in UNCHECKED_CASES])
def test_values_the_trainer_would_reject_are_refused_up_front(options, words, tmp_path, prior_run, small_text,
                                                              capsys):
    before = fingerprint(prior_run)
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", prior_run, "--overwrite", *TINY_TRAIN,
                           *QUICK, *options)
    assert_one_line_error(code, err, *words)
    assert fingerprint(prior_run) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_an_unavailable_accelerator_gets_one_line(tmp_path, small_text, capsys):
    code, _, err = run_cli(capsys, "train", "--data", small_text, "--out", tmp_path / "o", *TINY_TRAIN, *QUICK,
                           "--accelerator", "cuda")
    assert_one_line_error(code, err, "accelerator")


def test_option_values_of_the_wrong_type_are_refused_by_argparse(capsys, tmp_path):
    """argparse's own format (usage, then ``wordformer train: error: ...``), exit 2, no traceback."""
    for bad in (["--d-model", "abc"], ["--dropout", "x"], ["--tokenizer", "words"], ["--no-such-option"]):
        with pytest.raises(SystemExit) as info:
            main(["train", "--out", str(tmp_path / "o"), *bad])
        err = capsys.readouterr().err
        assert info.value.code == 2 and "Traceback" not in err
        assert len([ln for ln in err.splitlines() if "error:" in ln]) == 1, err
    assert not (tmp_path / "o").exists()


def test_the_model_cannot_be_asked_for_more_than_block_size_positions():
    """Learned positions are sized by block_size: that is the positional limit, for both encodings."""
    for positional in ("learned", "sinusoidal"):
        model = WordPredictor(ModelConfig(vocab_size=10, block_size=8, d_model=16, num_heads=2, num_layers=1,
                                          positional=positional))
        model(torch.zeros(1, 8, dtype=torch.long))
        with pytest.raises(WordformerError, match="exceeds block_size=8"):
            model(torch.zeros(1, 9, dtype=torch.long))


# ------------------------------------------------------------------------------------------ checkpoints


def _edited(edit: Callable[[dict], object]) -> Callable[[Path, Path], Path]:
    def make(good: Path, tmp: Path) -> Path:
        raw = torch.load(good, map_location="cpu", weights_only=True)
        edit(raw)
        return write_checkpoint(tmp / "edited.ckpt", raw)
    return make


def _raw_file(content: bytes) -> Callable[[Path, Path], Path]:
    def make(good: Path, tmp: Path) -> Path:
        path = tmp / "file.ckpt"
        path.write_bytes(content)
        return path
    return make


def _zip_file(good: Path, tmp: Path) -> Path:
    path = tmp / "archive.ckpt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes.txt", "a zip, not a checkpoint")
    return path


def _set(section: str, key: str, value: object) -> Callable[[dict], None]:
    return lambda raw: raw["wordformer"][section].__setitem__(key, value)


CHECKPOINT_CASES = {
    "missing": (lambda good, tmp: tmp / "missing.ckpt", ["does not exist"]),
    "a folder": (lambda good, tmp: tmp, ["folder"]),
    "empty file": (_raw_file(b""), ["not a readable checkpoint"]),
    "truncated": (lambda good, tmp: _raw_file(good.read_bytes()[:-300])(good, tmp), ["not a readable checkpoint"]),
    "text file": (_raw_file(b"this is not a checkpoint\n"), ["not a readable checkpoint"]),
    "zip without a model": (_zip_file, ["not a readable checkpoint"]),
    "a bare tensor": (lambda good, tmp: write_checkpoint(tmp / "t.ckpt", torch.zeros(3)),
                      ["not a wordformer checkpoint"]),
    "no wordformer entry": (_edited(lambda raw: raw.pop("wordformer")), ["not a wordformer checkpoint"]),
    "tutorial-6 checkpoint": (lambda good, tmp: write_checkpoint(tmp / "t6.ckpt", {
        "hyper_parameters": {"num_classes": 10}, "state_dict": {"input_net.1.weight": torch.zeros(2, 2)}}),
        ["not a wordformer checkpoint", "tutorial-6"]),
    "future format version": (_edited(lambda raw: raw["wordformer"].__setitem__("format_version", 99)),
                              ["format version 99", "upgrade"]),
    "format version not a number": (_edited(lambda raw: raw["wordformer"].__setitem__("format_version", "1")),
                                    ["format version"]),
    "another architecture (layers)": (_edited(_set("model_config", "num_layers", 2)), ["weights do not match"]),
    "another architecture (width)": (_edited(_set("model_config", "d_model", 32)), ["weights do not match"]),
    "another vocabulary": (_edited(_set("model_config", "vocab_size", 999)), ["tokens but the model expects 999"]),
    "weights of another shape": (_edited(lambda raw: raw["state_dict"].__setitem__(
        "model.token_embedding.weight", torch.zeros(5, 16))), ["weights do not match"]),
    "missing config": (_edited(lambda raw: raw["wordformer"].pop("train_config")), ["damaged", "train_config"]),
    "unknown config key": (_edited(_set("model_config", "flash", True)), ["unknown option", "flash"]),
    "invalid config value": (_edited(_set("model_config", "num_heads", 3)), ["num_heads=3"]),
    "unknown tokenizer kind": (_edited(lambda raw: raw["wordformer"].__setitem__("tokenizer", {"kind": "morse"})),
                               ["tokenizer", "morse"]),
    "malformed tokenizer": (_edited(lambda raw: raw["wordformer"].__setitem__("tokenizer", {"kind": "word",
                                                                                          "vocab": 5})),
                            ["malformed"]),
    "garbage named .safetensors": (lambda good, tmp: _raw_file(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad json}!!")(
        good, tmp).rename(tmp / "g.safetensors") or tmp / "g.safetensors", ["not a readable safetensors file"]),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_bad_checkpoints_get_one_line(case, trained_run, tmp_path, capsys):
    make, words = CHECKPOINT_CASES[case]
    path = make(trained_run / "last.ckpt", tmp_path)
    for command in ("generate", "predict"):
        code, _, err = run_cli(capsys, command, "--checkpoint", path, "--prompt", "the")
        assert_one_line_error(code, err, *words)


@pytest.mark.parametrize("case", ["truncated", "future format version", "text file"])
def test_resume_from_a_bad_last_checkpoint_gets_one_line_and_keeps_it(case, trained_run, tmp_path, capsys):
    make, words = CHECKPOINT_CASES[case]
    run = tmp_path / "run"
    run.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    make(trained_run / "last.ckpt", scratch).rename(run / "last.ckpt")
    before = fingerprint(run)
    code, _, err = run_cli(capsys, "train", "--resume", run, "--no-progress")
    assert_one_line_error(code, err, *words)
    assert fingerprint(run) == before


# ------------------------------------------------------------------------------------------ prompts


@pytest.fixture(scope="module")
def other_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    texts = [SMALL_TEXT, "naïve café\n"]
    return {kind: hand_built(root / f"{kind}.ckpt", kind, texts) for kind in ("char", "bpe")}


@pytest.mark.parametrize("prompt, words", [("", ["empty"]), (" \n\t ", ["empty"]), ("zebra okapi", ["unknown"]),
                                           ("!!!", ["unknown"])])
def test_prompts_the_word_model_cannot_read(prompt, words, trained_run, capsys):
    for command in ("generate", "predict"):
        code, _, err = run_cli(capsys, command, "--checkpoint", trained_run / "best.ckpt", "--prompt", prompt)
        assert_one_line_error(code, err, *words)


def test_a_missing_prompt_gets_one_line(trained_run, capsys):
    code, _, err = run_cli(capsys, "generate", "--checkpoint", trained_run / "best.ckpt")
    assert_one_line_error(code, err, "--prompt")


def test_non_ascii_and_emoji_prompts_do_not_crash(trained_run, other_models, capsys):
    """Word and char: unknown characters become <unk>; BPE: any text is bytes, nothing is unknown."""
    cases = [(trained_run / "best.ckpt", "the café 🙂 cat"), (other_models["char"], "the cat 🙂 ñ 漢字"),
             (other_models["bpe"], "🙂 naïve 漢字 \u200b\U0010ffff")]
    for path, prompt in cases:
        for command in ("generate", "predict"):
            code, out, err = run_cli(capsys, command, "--checkpoint", path, "--prompt", prompt,
                                     *(["--max-new-tokens", "4", "--seed", "0"] if command == "generate" else []))
            assert_works(code, err)
            assert out.strip()
    code, _, err = run_cli(capsys, "generate", "--checkpoint", other_models["char"], "--prompt", "🙂🙂🙂")
    assert_one_line_error(code, err, "unknown")


def test_a_prompt_longer_than_the_context_keeps_its_last_block_size_tokens(trained_run, capsys):
    """Documented behaviour: works, and only the last block_size (8) tokens matter."""
    ckpt = trained_run / "best.ckpt"
    tail = "the dog sat on the log . the"
    long_prompt = "a cat and a dog ran to the park . " * 5 + tail
    args = ["--temperature", "0", "--max-new-tokens", "6"]
    code, out_long, err = run_cli(capsys, "generate", "--checkpoint", ckpt, "--prompt", long_prompt, *args)
    assert_works(code, err)
    _, out_tail, _ = run_cli(capsys, "generate", "--checkpoint", ckpt, "--prompt", tail, *args)
    from wordformer import load_checkpoint

    loaded = load_checkpoint(ckpt)
    greedy = dict(temperature=0, max_new_tokens=6)
    continuation = loaded.generate(tail, **greedy)
    assert loaded.generate(long_prompt, **greedy) == continuation  # only the last 8 tokens matter
    assert out_long == loaded.generate(long_prompt, echo=True, **greedy) + "\n"  # the printed line: prompt as read
    assert out_long.endswith(continuation + "\n") and out_tail.endswith(continuation + "\n")
    _, p_long, _ = run_cli(capsys, "predict", "--checkpoint", ckpt, "--prompt", long_prompt, "--json")
    _, p_tail, _ = run_cli(capsys, "predict", "--checkpoint", ckpt, "--prompt", tail, "--json")
    assert p_long == p_tail


# ------------------------------------------------------------------------------------------ generation options


GENERATION_CASES = [
    (["--top-p", "0"], ["top_p"]), (["--top-p", "1.5"], ["top_p"]), (["--top-p", "-0.1"], ["top_p"]),
    (["--top-p", "nan"], ["top_p"]), (["--top-k", "0"], ["top_k"]), (["--top-k", "-3"], ["top_k"]),
    (["--max-new-tokens", "-1"], ["max_new_tokens"]), (["--temperature", "nan"], ["temperature"]),
    (["--num-samples", "0"], ["num-samples"]),
]


@pytest.mark.parametrize("options, words", GENERATION_CASES, ids=[" ".join(o) for o, _ in GENERATION_CASES])
def test_bad_generation_options_get_one_line(options, words, trained_run, capsys):
    code, _, err = run_cli(capsys, "generate", "--checkpoint", trained_run / "best.ckpt", "--prompt", "the", *options)
    assert_one_line_error(code, err, *words)


@pytest.mark.parametrize("command, options, words", [
    ("predict", ["--k", "0"], ["k=0"]),
    ("evaluate", ["--batch-size", "0"], ["batch_size"]),
    ("evaluate", ["--batch-size", "-2"], ["batch_size"]),
])
def test_bad_predict_and_evaluate_options_get_one_line(command, options, words, trained_run, capsys):
    extra = ["--prompt", "the"] if command == "predict" else []
    code, _, err = run_cli(capsys, command, "--checkpoint", trained_run / "best.ckpt", *extra, *options)
    assert_one_line_error(code, err, *words)


def test_temperature_zero_is_greedy(trained_run, capsys):
    """temperature <= 0 is defined as greedy: the argmax at every step, whatever the seed."""
    ckpt = trained_run / "best.ckpt"
    loaded = load_checkpoint(ckpt)
    tok, model = loaded.tokenizer, loaded.model
    ids = tok.encode("the cat")
    new: list[int] = []
    with torch.no_grad():
        for _ in range(6):  # 2 + 6 tokens: the window never slides (see generation.py's context policy)
            logits = model(torch.tensor([(ids + new)[-model.config.block_size:]]))[0, -1]
            new.append(int(logits.argmax()))
            if new[-1] == tok.eos_id:
                new.pop()
                break
    expected = f"the cat {tok.decode(new)}".strip()
    outputs = set()
    for temperature, seed in (("0", "1"), ("0", "2"), ("-1", "3")):
        code, out, err = run_cli(capsys, "generate", "--checkpoint", ckpt, "--prompt", "the cat", "--max-new-tokens",
                                 "6", "--temperature", temperature, "--seed", seed)
        assert_works(code, err)
        outputs.add(out.strip())
    assert outputs == {expected}


def test_max_new_tokens_zero_prints_only_the_prompt(trained_run, capsys):
    code, out, err = run_cli(capsys, "generate", "--checkpoint", trained_run / "best.ckpt", "--prompt", "the cat",
                             "--max-new-tokens", "0")
    assert_works(code, err)
    assert out.strip() == "the cat"


# ------------------------------------------------------------------------------------------ through a real process


@pytest.mark.slow
def test_the_console_reports_bad_input_in_one_line(trained_run, tmp_path):
    """Three bad inputs through ``python -m wordformer.cli`` at once: exit 2, one line, no traceback."""
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes((trained_run / "best.ckpt").read_bytes()[:1000])
    existing = tmp_path / "model.safetensors"
    existing.write_bytes(b"keep me")
    out = tmp_path / "out"
    commands = {
        "missing data": ["train", "--data", str(tmp_path / "missing.txt"), "--out", str(out)],
        "truncated checkpoint": ["generate", "--checkpoint", str(truncated), "--prompt", "the"],
        "export over a file": ["export", "--checkpoint", str(trained_run / "best.ckpt"), "--to", str(existing)],
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", "wordformer.cli", *argv], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=one_thread_env())
             for name, argv in commands.items()}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, (name, stderr)
        errors = [ln for ln in stderr.splitlines() if ln.startswith("wordformer: error:")]
        assert len(errors) == 1 and "Traceback" not in stderr, (name, stderr)
        assert stdout == "", name
    assert not (out / "best.ckpt").exists() and existing.read_bytes() == b"keep me"
