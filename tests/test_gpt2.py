"""GPT-2 interop: a random small HuggingFace GPT-2 and wordformer must compute the same logits and text."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from wordformer.config import ModelConfig  # noqa: E402
from wordformer.errors import WordformerError  # noqa: E402
from wordformer.generation import generate_ids  # noqa: E402
from wordformer.gpt2 import (  # noqa: E402
    GPT2_PRESETS,
    from_hf_model,
    from_hf_state_dict,
    from_nanogpt_checkpoint,
    gpt2_config,
    gpt2_preset,
    load_pretrained_gpt2,
    to_hf_config,
    to_hf_model,
    to_hf_state_dict,
    to_nanogpt_checkpoint,
)
from wordformer.model import WordPredictor  # noqa: E402

VOCAB, N_POS, WIDTH, HEADS, LAYERS = 50, 32, 16, 2, 2
TOL = 1e-4
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_gpt2(*, seed: int = 0, attn: str = "sdpa", vocab: int = VOCAB, **overrides) -> "transformers.GPT2LMHeadModel":
    """A random small GPT-2; a large init range makes activations big enough for GELU variants to differ."""
    torch.manual_seed(seed)
    kwargs = dict(n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH, n_positions=N_POS, vocab_size=vocab, resid_pdrop=0.0,
                  embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.3, bos_token_id=None, eos_token_id=None)
    config = transformers.GPT2Config(**{**kwargs, **overrides})
    config._attn_implementation = attn
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # HF initialises biases and layer norms to 0/1: randomise them so they are tested
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model


def hub_style(hf_model) -> dict:
    """Keys as in the hub's gpt2 model.safetensors: GPT2Model names, no lm_head, older versions' mask buffers."""
    state = dict(hf_model.transformer.state_dict())
    for i in range(hf_model.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(N_POS, N_POS)).view(1, 1, N_POS, N_POS)
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return state


def random_ids(batch: int = 3, length: int = 20, vocab: int = VOCAB, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def max_diff(hf_model, model: WordPredictor, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return float((hf_model(ids).logits - model(ids)).abs().max())


def nanogpt_dict(hf_model, *, prefix: str = "") -> dict:
    """What nanoGPT's train.py saves for these weights: nn.Linear layout, the causal-mask buffers, model_args."""
    state = {}
    for key, tensor in hf_model.state_dict().items():
        state[prefix + key] = tensor.t().contiguous() if key.endswith(CONV1D) else tensor.clone()
    for i in range(hf_model.config.n_layer):  # nanoGPT without flash attention keeps its mask in the state dict
        state[f"{prefix}transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(N_POS, N_POS)).view(1, 1, N_POS, N_POS)
    args = dict(n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH, block_size=N_POS, bias=True, vocab_size=VOCAB, dropout=0.0)
    return {"model": state, "model_args": args, "iter_num": 5, "best_val_loss": torch.tensor(3.0), "config": {}}


# --------------------------------------------------------------------------------------------------- configs


def test_presets_have_the_released_parameter_counts():
    expected = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}
    assert set(GPT2_PRESETS) == set(expected)
    for name, count in expected.items():
        with torch.device("meta"):
            model = WordPredictor(gpt2_preset(name))
        assert model.num_parameters() == count, name
    config = gpt2_config(2, 2, 16, 32, 50)
    assert (config.positional, config.norm, config.tie_weights, config.bias) == ("learned", "pre", True, True)
    with pytest.raises(WordformerError, match="gpt2-xxl"):
        gpt2_preset("gpt2-xxl")


# --------------------------------------------------------------------------------------------------- HF import


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_imported_logits_equal_hf(attn):
    hf = hf_gpt2(attn=attn)
    ids = random_ids()
    for model in (
        from_hf_model(hf),
        from_hf_state_dict(hf.state_dict(), n_head=HEADS),  # sizes inferred from the shapes
        from_hf_state_dict(hub_style(hf), gpt2_config(LAYERS, HEADS, WIDTH, N_POS, VOCAB)),
    ):
        assert max_diff(hf, model, ids) < TOL
        assert model.config.num_heads == HEADS and model.config.block_size == N_POS
        for fused in (True, False):
            with torch.no_grad():
                assert float((hf(ids).logits - model(ids, fused=fused)).abs().max()) < TOL


def test_tanh_gelu_is_what_makes_logits_equal():
    hf = hf_gpt2()
    ids = random_ids()
    assert max_diff(hf, from_hf_state_dict(hf.state_dict(), n_head=HEADS, activation="gelu"), ids) > TOL
    exact = hf_gpt2(activation_function="gelu")
    assert max_diff(exact, from_hf_model(exact), ids) < TOL


def test_untied_head_and_wider_mlp_import_and_export():
    hf = hf_gpt2(tie_word_embeddings=False, n_inner=3 * WIDTH)
    with torch.no_grad():
        hf.lm_head.weight.copy_(torch.randn_like(hf.lm_head.weight))
    model = from_hf_model(hf)
    assert not model.config.tie_weights and model.config.ff_mult == 3
    ids = random_ids()
    assert max_diff(hf, model, ids) < TOL
    assert max_diff(to_hf_model(model), model, ids) < TOL


def test_greedy_generations_identical():
    hf = hf_gpt2()
    model = from_hf_model(hf)
    gen = torch.Generator().manual_seed(3)
    for length in (1, 4, 9):
        prompt = torch.randint(0, VOCAB, (1, length), generator=gen)
        with torch.no_grad():
            expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                   max_new_tokens=10, pad_token_id=0)[0, length:].tolist()
        assert len(expected) == 10
        for use_cache in (True, False):
            got = generate_ids(model, [prompt[0].tolist()], max_new_tokens=10, temperature=0, use_cache=use_cache)
            assert got == [expected], (length, use_cache)


def test_batched_greedy_generation_with_left_padding_identical():
    hf = hf_gpt2(seed=4)
    model = from_hf_model(hf)
    prompts = [[3, 14, 15, 9, 26, 5], [35, 8], [9, 7, 9, 3]]
    n = max(map(len, prompts))
    ids = torch.tensor([[0] * (n - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (n - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        expected = hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=10, pad_token_id=0)[:, n:].tolist()
    for use_cache in (True, False):
        assert generate_ids(model, prompts, max_new_tokens=10, temperature=0, use_cache=use_cache) == expected


# --------------------------------------------------------------------------------------------------- HF export


def test_export_loads_strictly_into_hf_with_equal_logits():
    hf = hf_gpt2()
    model = from_hf_model(hf)
    state = to_hf_state_dict(model)
    assert set(state) == set(hf.state_dict())
    assert state["transformer.h.0.attn.c_attn.weight"].shape == (WIDTH, 3 * WIDTH)  # Conv1D layout
    fresh = transformers.GPT2LMHeadModel(hf.config).eval()
    fresh.load_state_dict(state, strict=True)
    ids = random_ids()
    assert max_diff(fresh, model, ids) < TOL
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, hf(ids).logits)


@pytest.mark.parametrize("bias", [True, False])
def test_native_wordformer_gpt2_exports_to_hf(bias):
    torch.manual_seed(7)
    config = gpt2_config(LAYERS, HEADS, WIDTH, N_POS, VOCAB)
    config.bias = bias
    model = WordPredictor(config).eval()
    hf = to_hf_model(model)
    assert hf.config.activation_function == to_hf_config(model).activation_function
    assert max_diff(hf, model, random_ids()) < TOL


def test_to_hf_model_with_the_tokenizer_knows_eos_and_pad(tmp_path):
    from wordformer.tokenizers import CharTokenizer

    tok = CharTokenizer.train(["abc"])
    model = WordPredictor(gpt2_config(LAYERS, HEADS, WIDTH, N_POS, tok.vocab_size)).eval()
    hf = to_hf_model(model, tok)
    hf.save_pretrained(tmp_path)
    saved = transformers.AutoConfig.from_pretrained(str(tmp_path), local_files_only=True)
    assert (saved.eos_token_id, saved.pad_token_id, saved.bos_token_id) == (tok.eos_id, tok.pad_id, tok.eos_id)
    assert to_hf_model(model).config.eos_token_id is None  # without it nothing is known


def test_only_gpt2_shaped_models_export():
    model = WordPredictor(ModelConfig(vocab_size=VOCAB, block_size=N_POS, d_model=WIDTH, num_heads=HEADS, num_layers=1))
    with pytest.raises(WordformerError, match="--positional sinusoidal: GPT-2 has learned positions; train with "
                                              "--positional learned"):
        to_hf_state_dict(model)


# --------------------------------------------------------------------------------------------------- errors


def test_mismatched_shape_names_the_key():
    hf = hf_gpt2()
    state = dict(hf.state_dict())
    state["transformer.h.1.mlp.c_proj.weight"] = torch.zeros(4 * WIDTH, WIDTH + 1)
    with pytest.raises(WordformerError, match=r"transformer\.h\.1\.mlp\.c_proj\.weight has shape \(64, 17\)") as err:
        from_hf_state_dict(state, n_head=HEADS)
    assert "\n" not in str(err.value)
    with pytest.raises(WordformerError, match=r"transformer\.wpe\.weight has shape \(32, 16\) .* needs \(64, 16\)"):
        from_hf_state_dict(hf.state_dict(), gpt2_config(LAYERS, HEADS, WIDTH, 64, VOCAB))


def test_missing_extra_and_headless_tensors_are_refused():
    state = dict(hf_gpt2().state_dict())
    with pytest.raises(WordformerError, match="heads"):
        from_hf_state_dict(state)  # n_embd=16 is not a multiple of GPT-2's head size 64
    bad = {k: v for k, v in state.items() if k != "transformer.h.0.ln_2.bias"}
    with pytest.raises(WordformerError, match="h.0.ln_2.bias"):
        from_hf_state_dict(bad, gpt2_config(LAYERS, HEADS, WIDTH, N_POS, VOCAB))
    with pytest.raises(WordformerError, match="transformer.h.0.extra"):
        from_hf_state_dict({**state, "transformer.h.0.extra": torch.zeros(1)}, n_head=HEADS)
    with pytest.raises(WordformerError, match="num_layers=3"):
        from_hf_state_dict(state, gpt2_config(3, HEADS, WIDTH, N_POS, VOCAB))


# --------------------------------------------------------------------------------------------------- nanoGPT


def test_nanogpt_round_trip(tmp_path):
    hf = hf_gpt2(activation_function="gelu")  # nanoGPT's MLP is nn.GELU(): exact
    ckpt = nanogpt_dict(hf, prefix="_orig_mod.")  # as saved after torch.compile
    ids = random_ids()
    model = from_nanogpt_checkpoint(ckpt)
    assert max_diff(hf, model, ids) < TOL
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path)
    assert max_diff(hf, from_nanogpt_checkpoint(path), ids) < TOL

    out = to_nanogpt_checkpoint(model)
    plain = nanogpt_dict(hf)["model"]
    assert set(out["model"]) == {k for k in plain if not k.endswith(".attn.bias")}
    for key, tensor in out["model"].items():
        assert torch.equal(tensor, plain[key]), key
    assert out["model_args"] == nanogpt_dict(hf)["model_args"]
    torch.save(out, path)
    assert max_diff(hf, from_nanogpt_checkpoint(path), ids) < TOL


def test_bias_free_nanogpt_round_trip():
    torch.manual_seed(2)
    config = gpt2_config(LAYERS, HEADS, WIDTH, N_POS, VOCAB)
    config.bias, config.activation = False, "gelu"
    model = WordPredictor(config).eval()
    ckpt = to_nanogpt_checkpoint(model)
    assert not any(k.endswith("bias") for k in ckpt["model"]) and ckpt["model_args"]["bias"] is False
    back = from_nanogpt_checkpoint(ckpt)
    ids = random_ids()
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids))


class _Payload:
    ran: list[str] = []

    def __reduce__(self):
        return (_Payload.ran.append, ("code ran",))


def test_nanogpt_checkpoint_with_pickled_code_is_refused(tmp_path):
    ckpt = nanogpt_dict(hf_gpt2())
    ckpt["config"] = {"trap": _Payload()}
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path)
    with pytest.raises(WordformerError, match="refusing to load .*pickled objects") as err:
        from_nanogpt_checkpoint(path)
    assert "\n" not in str(err.value)
    assert _Payload.ran == []
    with pytest.raises(WordformerError, match="does not exist"):
        from_nanogpt_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(WordformerError, match="not a nanoGPT checkpoint"):
        from_nanogpt_checkpoint({"state_dict": {}})


# --------------------------------------------------------------------------------------------------- pretrained


def small_gpt2_tokenizer():
    """A byte-level BPE saved the way GPT-2's is, with <|endoftext|> last: the real vocabulary needs internet."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=280, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["the cat sat on the mat, the dog sat on the log"] * 20, trainer)
    tok.add_special_tokens(["<|endoftext|>"])
    return transformers.GPT2TokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def test_load_pretrained_gpt2_from_a_local_folder(tmp_path):
    hf_tok = small_gpt2_tokenizer()
    vocab = len(hf_tok)
    hf = hf_gpt2(vocab=vocab)
    hf.save_pretrained(tmp_path)
    with pytest.raises(WordformerError, match="with_tokenizer=False"):
        load_pretrained_gpt2(str(tmp_path))
    bare = load_pretrained_gpt2(str(tmp_path), with_tokenizer=False)
    assert bare.tokenizer is None
    ids = random_ids(vocab=vocab)
    assert max_diff(hf, bare.model, ids) < TOL

    hf_tok.save_pretrained(tmp_path)
    loaded = load_pretrained_gpt2(str(tmp_path))
    tok = loaded.tokenizer
    text = "the cat sat on the log"
    assert tok.encode(text) == hf_tok(text).input_ids
    assert tok.eos_id == tok.pad_id == hf_tok.eos_token_id == vocab - 1
    from wordformer.tokenizers import tokenizer_from_dict

    reloaded = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))  # as stored in a checkpoint
    assert reloaded.encode(text) == tok.encode(text) and reloaded.eos_id == reloaded.pad_id == tok.eos_id
    prompt = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        new = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=8,
                          pad_token_id=tok.pad_id, eos_token_id=tok.eos_id)[0, prompt.size(1):].tolist()
    if new and new[-1] == tok.eos_id:
        new = new[:-1]
    assert loaded.generate(text, max_new_tokens=8, temperature=0) == hf_tok.decode(new)
    (best, p), *_ = loaded.predict_next(text, k=3)
    assert best == tok.id_to_token(new[0]) and 0 < p <= 1
    with pytest.raises(WordformerError, match="cannot load GPT-2"):
        load_pretrained_gpt2(str(tmp_path / "nowhere"))


def test_text_methods_without_a_tokenizer_say_to_pass_ids(tmp_path):
    """``load_pretrained_gpt2(dir, with_tokenizer=False).generate("x")`` raised AttributeError."""
    from wordformer import generate, generate_ids
    from wordformer.plots import plot_attention

    hf_gpt2(vocab=64).save_pretrained(tmp_path)
    bare = load_pretrained_gpt2(str(tmp_path), with_tokenizer=False)
    for call in (lambda: bare.generate("the cat"), lambda: bare.predict_next("the cat"),
                 lambda: generate(bare.model, None, "the cat"), lambda: plot_attention(bare, prompt="the cat")):
        with pytest.raises(WordformerError, match="no tokenizer.*with_tokenizer=False.*token ids.*generate_ids"):
            call()
    assert len(generate_ids(bare.model, [[1, 2, 3]], max_new_tokens=4, temperature=0)[0]) == 4  # ids still work
