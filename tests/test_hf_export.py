"""``wordformer export --to hf DIR``: HuggingFace transformers loads the folder (AutoModelForCausalLM, AutoTokenizer,
local files only) and its greedy generation equals ``wordformer generate --temperature 0``, text for text, for
word, char and BPE tokenizers; the tokenizers encode and decode as wordformer's do."""

from __future__ import annotations

import json
import random
import re
import shlex
from pathlib import Path

import pytest
import torch

from conftest import SMALL_TEXT, assert_one_line_error, run_cli
from wordformer.checkpoint import LoadedModel, load_checkpoint, save_safetensors
from wordformer.config import DataConfig, ModelConfig, TrainConfig, field_names
from wordformer.generation import encode_prompt, generate_ids, never_generated
from wordformer.hf import HF_FILES, hf_tokenizer
from wordformer.model import WordPredictor
from wordformer.presets import preset_values
from wordformer.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [SMALL_TEXT, "He said: (yes) [no] {maybe}; don't l'homme 50% of it!\nÜnïcödé 🙂 text\tend\r\n"]
PROMPTS = {"word": "the cat (sat", "char": "the cat ", "bpe": "The cat 🙂 sat"}
NEW = 20  # prompt + NEW stays inside block_size: GPT-2 has no position beyond n_positions


def make_tokenizer(kind: str, texts: list[str] = TEXTS):
    if kind == "word":
        return WordTokenizer.train(texts)
    if kind == "char":
        return CharTokenizer.train(texts)
    return BPETokenizer.train(texts, vocab_size=300)


def random_model(kind: str, *, pairs: bool = False, seed: int = 0, **config) -> LoadedModel:
    """An untrained GPT-shaped model whose weights are large enough for decisive logits (no near-ties)."""
    tok = make_tokenizer(kind)
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=32, d_model=16, num_layers=2,
                      **{"num_heads": 2, "positional": "learned", "activation": "gelu_tanh", **config})
    model = WordPredictor(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    return LoadedModel(model, tok, cfg, DataConfig(tokenizer=kind, pairs=pairs), TrainConfig(), info={"step": 1})


def load_hf(folder: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    return model, tokenizer


def hf_greedy(model, tokenizer, prompt: str, new: int = NEW) -> tuple[list[int], list[int], str]:
    """Prompt ids, new ids and the decoded continuation, all through transformers."""
    enc = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=new)
    n = enc["input_ids"].shape[1]
    new_ids = out[0, n:].tolist()
    return enc["input_ids"][0].tolist(), new_ids, tokenizer.decode(new_ids, skip_special_tokens=True)


def export(capsys, checkpoint: Path, *to: str) -> tuple[int, str, str]:
    return run_cli(capsys, "export", "--checkpoint", checkpoint, "--to", *to)


# ------------------------------------------------------------------------------------------ tokenizers


@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_hf_tokenizer_encodes_and_decodes_as_wordformer(kind: str) -> None:
    tok = make_tokenizer(kind)
    hf = hf_tokenizer(tok)
    samples = [*TEXTS, "The CAT, (Sat) on [the] mat.", "<eos> a<eos>b <EOS> x", "zebra quagga", "  spaced   out  ",
               "(( ]] ,, %% {", "don’t l'homme's", "", "\n\n"]
    for text in samples:
        assert hf.encode(text).ids == tok.encode(text), text
    rng = random.Random(0)
    for _ in range(300):  # any id sequence decodes alike, specials kept or skipped
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(0, 12))]
        assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids), [tok.id_to_token(i) for i in ids]
        assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special=True)


def test_word_decoder_spaces_like_join_words_around_punctuation() -> None:
    tok = WordTokenizer(["<pad>", "<eos>", "<unk>", "a", "b", "(", ")", "[", "]", "{", "}", ",", ".", "%", "#", "!", "?",
                         ":", ";"])
    hf = hf_tokenizer(tok)
    ids = list(range(3, tok.vocab_size))
    for sequence in ([5, 6], [5, 3, 6], [6, 5], [5, 5, 3], [11, 3], [14, 14, 3], [3, 5], [5, 11], [2, 13, 5, 1]):
        assert hf.decode(sequence, skip_special_tokens=False) == tok.decode(sequence), sequence
    rng = random.Random(1)
    for _ in range(500):
        seq = [rng.choice(ids) for _ in range(rng.randrange(1, 8))]
        assert hf.decode(seq) == tok.decode(seq), [tok.id_to_token(i) for i in seq]


def test_uppercase_word_tokenizer_keeps_case() -> None:
    tok = WordTokenizer.train(["The Cat sat. the cat"], lowercase=False)
    hf = hf_tokenizer(tok)
    assert hf.encode("The cat").ids == tok.encode("The cat") and tok.encode("The cat")[1] != tok.encode("The Cat")[1]


# ------------------------------------------------------------------------------------------ generation


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A GPT-shaped word, char and BPE model, each trained for a second on the sample texts: kind -> best.ckpt."""
    from wordformer.training import train

    root = tmp_path_factory.mktemp("hf_trained")
    (root / "text.txt").write_text("\n".join(TEXTS * 3), encoding="utf-8")
    out = {}
    for kind in ("word", "char", "bpe"):
        result = train(
            ModelConfig(block_size=32, d_model=32, num_heads=2, num_layers=1, positional="learned", activation="gelu_tanh"),
            DataConfig(data=str(root / "text.txt"), tokenizer=kind, bpe_vocab_size=300, cache_dir=str(root / "cache")),
            TrainConfig(max_steps=150, batch_size=8, eval_interval=150, eval_batches=1, warmup_steps=10, lr=1e-2,
                        progress=False),
            root / kind, logger=False)
        out[kind] = result.best_checkpoint
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_transformers_greedy_generation_equals_wordformer_generate(kind: str, trained: dict[str, Path], tmp_path: Path,
                                                                   capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = trained[kind]
    loaded = load_checkpoint(ckpt)
    folder = tmp_path / "hf"
    code, out, err = export(capsys, ckpt, "hf", folder)
    assert code == 0, err
    assert f"wrote {folder}/" in out
    assert sorted(p.name for p in folder.iterdir()) == sorted(HF_FILES)
    model, tokenizer = load_hf(folder, monkeypatch)
    config = json.loads((folder / "config.json").read_text())
    assert (config["eos_token_id"], config["pad_token_id"]) == (loaded.tokenizer.eos_id, loaded.tokenizer.pad_id)
    assert (model.config.n_positions, model.config.vocab_size) == (32, loaded.tokenizer.vocab_size)
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (loaded.tokenizer.eos_id, loaded.tokenizer.pad_id)

    for prompt in (PROMPTS[kind], "the dog"):
        prompt_ids, new_ids, text = hf_greedy(model, tokenizer, prompt)
        assert prompt_ids == encode_prompt(loaded.tokenizer, prompt)
        ours = generate_ids(loaded.model, [prompt_ids], max_new_tokens=NEW, temperature=0,
                            eos_id=loaded.tokenizer.eos_id, suppress_ids=never_generated(loaded.tokenizer))[0]
        assert new_ids == ours
        assert text == loaded.generate(prompt, max_new_tokens=NEW, temperature=0)  # the Python API
        code, printed, err = run_cli(capsys, "generate", "--checkpoint", ckpt, "--prompt", prompt,
                                     "--temperature", "0", "--max-new-tokens", NEW)
        assert code == 0, err
        line = printed.rstrip("\n")
        assert line.startswith(prompt) and line.endswith(text) and text.strip(), (line, text)  # prompt + continuation
        with torch.no_grad():  # the same function: logits within float noise
            ids = torch.tensor([prompt_ids + ours])
            assert (model(ids).logits - loaded.model(ids)).abs().max() < 1e-4


def test_random_models_generate_alike_too(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in ("word", "char", "bpe"):
        loaded = random_model(kind, seed=2)
        ckpt = save_safetensors(loaded, tmp_path / f"{kind}.safetensors")
        assert export(capsys, ckpt, "hf", tmp_path / kind)[0] == 0
        model, tokenizer = load_hf(tmp_path / kind, monkeypatch)
        prompt_ids, new_ids, text = hf_greedy(model, tokenizer, PROMPTS[kind])
        assert text == loaded.generate(PROMPTS[kind], max_new_tokens=NEW, temperature=0)
        assert len(set(new_ids)) > 3  # varied: spacing and decoding are exercised


def test_pairs_model_answers_through_transformers_as_through_wordformer(tmp_path: Path, capsys,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = random_model("word", pairs=True, seed=3)
    ckpt = save_safetensors(loaded, tmp_path / "qa.safetensors")
    assert export(capsys, ckpt, str(tmp_path / "qa"))[0] == 0  # a name without a suffix is a HuggingFace folder
    model, tokenizer = load_hf(tmp_path / "qa", monkeypatch)
    prompt = "what is the cat doing ?"
    prompt_ids, new_ids, text = hf_greedy(model, tokenizer, prompt)
    assert prompt_ids == encode_prompt(loaded.tokenizer, prompt, append_eos=True)  # <eos> starts the answer
    assert text == loaded.generate(prompt, max_new_tokens=NEW, temperature=0)
    code, printed, _ = run_cli(capsys, "generate", "--checkpoint", ckpt, "--prompt", prompt, "--temperature", "0",
                               "--max-new-tokens", NEW)
    assert code == 0 and printed.rstrip("\n").endswith(text)


def test_generation_stops_at_eos_and_never_emits_pad(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = random_model("char", seed=5, tie_weights=False)
    tok, model = loaded.tokenizer, loaded.model
    with torch.no_grad():  # every position's output is the final norm's bias b; <pad>'s logit is by far the largest
        model.final_norm.weight.zero_()
        b = model.final_norm.bias
        b.copy_(torch.linspace(-1.0, 1.0, b.numel()))
        model.output_layer.weight[tok.pad_id] = 100 * b
        model.output_layer.weight[tok.eos_id] = -b  # never chosen

    def exported(name: str):
        ckpt = save_safetensors(loaded, tmp_path / f"{name}.safetensors")
        assert export(capsys, ckpt, "hf", tmp_path / name)[0] == 0
        return load_hf(tmp_path / name, monkeypatch)

    hf_model, tokenizer = exported("pad")
    assert hf_model.generation_config.suppress_tokens == [tok.pad_id]
    _, new_ids, text = hf_greedy(hf_model, tokenizer, "the cat ")
    ours = generate_ids(model, [tok.encode("the cat ")], max_new_tokens=NEW, temperature=0, eos_id=tok.eos_id,
                        suppress_ids=never_generated(tok))[0]
    assert new_ids == ours and len(ours) == NEW and tok.pad_id not in ours
    assert text == loaded.generate("the cat ", max_new_tokens=NEW, temperature=0)
    with torch.no_grad():  # now <eos> is the best token after <pad>: both stop at once
        model.output_layer.weight[tok.eos_id] = 50 * b
    hf_model, tokenizer = exported("eos")
    _, new_ids, text = hf_greedy(hf_model, tokenizer, "the cat ")
    assert new_ids == [tok.eos_id] and text == "" == loaded.generate("the cat ", max_new_tokens=NEW, temperature=0)


FAST_MODEL = {k: v for k, v in preset_values("fast").items() if k in field_names(ModelConfig)}


@pytest.mark.parametrize("options", [
    dict(activation="relu"), dict(activation="gelu", tie_weights=False), dict(bias=False, ff_mult=2, layer_norm_eps=1e-6),
    # the chapter's sinusoidal positions (train's default): GPT-2 with the sinusoids as its position table
    dict(positional="sinusoidal"), dict(positional="sinusoidal", tie_weights=False, activation="gelu"),
    # rotary positions (the fast preset, the demo) become GPT-NeoX
    FAST_MODEL, dict(positional="rope", activation="relu2", bias=False, tie_weights=False),
    dict(positional="rope", rope_base=500.0, activation="gelu_tanh", ff_mult=2, num_heads=4),
])
def test_every_exportable_architecture_gives_the_same_logits(options: dict, tmp_path: Path, capsys,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = random_model("word", seed=1, **options)
    ckpt = save_safetensors(loaded, tmp_path / "m.safetensors")
    assert export(capsys, ckpt, "hf", tmp_path / "hf")[0] == 0
    model, tokenizer = load_hf(tmp_path / "hf", monkeypatch)
    expected = "GPTNeoXForCausalLM" if options.get("positional") == "rope" else "GPT2LMHeadModel"
    assert type(model).__name__ == expected
    ids = torch.tensor([loaded.tokenizer.encode("the cat sat on the mat . the dog")])
    with torch.no_grad():
        assert (model(ids).logits - loaded.model(ids)).abs().max() < 1e-4
    assert hf_greedy(model, tokenizer, "the dog")[2] == loaded.generate("the dog", max_new_tokens=NEW, temperature=0)


# ------------------------------------------------------------------------------------------ refusals and targets


@pytest.mark.parametrize("options, words", [
    (dict(positional="rope", activation="swiglu"), "--activation swiglu: GPT-NeoX's feed-forward net is not gated"),
    (dict(positional="rope", qk_norm=True), "--qk-norm: GPT-NeoX does not normalise queries and keys"),
    (dict(positional="rope", norm_type="rmsnorm"), "--norm-type rmsnorm: GPT-NeoX has layer norms"),
    (dict(positional="rope", attn_scale=0.5), "--attn-scale 0.5: GPT-NeoX scales q . k by 1/sqrt(head size)"),
    (dict(positional="rope", logit_softcap=15.0), "--logit-softcap 15.0: GPT-NeoX does not cap logits"),
    (dict(positional="rope", norm="post"), "--norm post: GPT-NeoX has a layer norm before each sublayer"),
    (dict(norm="post"), "--norm post: GPT-2 has a layer norm before each sublayer"),
    (dict(norm="none"), "--norm none: GPT-2 has a layer norm before each sublayer, not no layer norms; train with --norm pre"),
])
def test_architectures_gpt2_cannot_express_are_refused_in_one_line(options: dict, words: str, tmp_path: Path,
                                                                   capsys) -> None:
    loaded = random_model("word")
    config = ModelConfig(**{**vars(loaded.model_config), **options})
    loaded = LoadedModel(WordPredictor(config), loaded.tokenizer, config, loaded.data_config, loaded.train_config)
    ckpt = save_safetensors(loaded, tmp_path / "m.safetensors")
    code, _, err = export(capsys, ckpt, "hf", tmp_path / "hf")
    assert_one_line_error(code, err, words)
    assert not (tmp_path / "hf").exists()


def test_export_targets_are_unambiguous(tmp_path: Path, capsys) -> None:
    ckpt = save_safetensors(random_model("char"), tmp_path / "m.safetensors")
    cases = [
        (["model.bin"], ["--to model.bin must end in .safetensors (one file), or name a folder for HuggingFace: "
                         "--to hf model.bin"]),
        (["hf", "a", "b"], ["--to takes a path, or a format and a path"]),
        (["hf", str(tmp_path / "x"), "--format", "safetensors"], ["--to hf", "and --format safetensors disagree"]),
        (["hf", str(tmp_path / "y.safetensors")], ["a HuggingFace export is a folder, not a .safetensors file"]),
        (["hf", str(ckpt)], ["a HuggingFace export is a folder"]),
    ]
    for to, words in cases:
        code, _, err = export(capsys, ckpt, *to)
        assert_one_line_error(code, err, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]

    code, out, _ = export(capsys, ckpt, str(tmp_path / "one.safetensors"))  # today's users: still one file
    assert code == 0 and load_checkpoint(tmp_path / "one.safetensors").tokenizer.vocab_size > 3
    code, out, _ = export(capsys, ckpt, str(tmp_path / "dotted.v2"), "--format", "hf")
    assert code == 0 and (tmp_path / "dotted.v2" / "config.json").is_file()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert export(capsys, ckpt, "hf", str(mine))[0] == 0  # other files in the folder are left alone
    config = (mine / "config.json").read_bytes()
    (mine / "config.json").write_text("{}")
    code, _, err = export(capsys, ckpt, "hf", str(mine))
    assert_one_line_error(code, err, "already holds config.json", "--overwrite")
    assert (mine / "config.json").read_text() == "{}"
    assert export(capsys, ckpt, "hf", str(mine), "--overwrite")[0] == 0
    assert (mine / "config.json").read_bytes() == config and (mine / "notes.txt").read_text() == "keep me"
    assert not list(mine.glob(".*.tmp"))


# ------------------------------------------------------------------------------------------ the README


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


@pytest.mark.slow
def test_readme_export_example_runs_and_matches_wordformer_generate(tmp_path: Path, capsys,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's commands run as written (the train line gets tiny sizes appended: seconds, not minutes)."""
    section = readme_section("Export to HuggingFace")
    shell = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    rng = random.Random(0)
    words = "the king and queen rode to the castle , where a knight sang of the old war .".split()
    lines = (" ".join(rng.choice(words) for _ in range(rng.randrange(6, 14))) for _ in range(1500))
    (tmp_path / "my_text.txt").write_text("\n".join(lines), encoding="utf-8")
    tiny = ["--d-model", "32", "--num-heads", "2", "--num-layers", "1", "--max-steps", "60", "--batch-size", "8",
            "--eval-interval", "30", "--eval-batches", "2", "--warmup-steps", "5", "--no-progress"]
    printed_cli = ""
    for line in [ln for ln in shell.splitlines() if ln.startswith("wordformer ")]:
        argv = shlex.split(line.split("#", 1)[0])[1:]
        code, out, err = run_cli(capsys, *argv, *(tiny if argv[0] == "train" else []))
        assert code == 0, (line, err)
        if argv[0] == "generate":
            printed_cli = out.rstrip("\n")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exec(compile(python, "README.md", "exec"), {})
    continuation = capsys.readouterr().out.rstrip("\n")
    assert continuation.strip(), "the README example printed nothing"
    assert printed_cli.endswith(continuation), (printed_cli, continuation)
