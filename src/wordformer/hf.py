"""A HuggingFace folder from a wordformer checkpoint: ``AutoModelForCausalLM`` and ``AutoTokenizer`` load it.

``wordformer export --checkpoint C --to hf DIR`` writes

* ``config.json`` - a ``GPT2Config`` (``model_type`` gpt2; a sinusoidal-position model, the chapter's, as the
  same function with its sinusoids as GPT-2's position table, :func:`wordformer.gpt2.with_learned_positions`), or
  for a model with rotary positions (the ``fast`` preset, the demo) a ``GPTNeoXConfig`` (:mod:`wordformer.neox`), with ``eos_token_id``/``pad_token_id``/``bos_token_id``
  set to the tokenizer's ``<eos>``/``<pad>``, so ``generate`` stops at ``<eos>`` as wordformer does;
* ``generation_config.json`` - the same ids and ``suppress_tokens: [<pad>]`` (wordformer never generates
  ``<pad>``); ask ``generate`` for at most block_size tokens in all (GPT-2 stops at ``n_positions``; GPT-NeoX
  goes on with the whole context where wordformer slides its window);
* ``model.safetensors`` - the weights as a ``GPT2LMHeadModel`` state dict (:func:`wordformer.gpt2.to_hf_state_dict`)
  or a ``GPTNeoXForCausalLM`` one (:func:`wordformer.neox.to_neox_state_dict`);
* ``tokenizer.json`` - the tokenizer in the ``tokenizers`` library's format, plus ``tokenizer_config.json`` and
  ``special_tokens_map.json`` naming ``<eos>`` and ``<pad>``.

How each tokenizer becomes a ``tokenizers`` one, so that ids and decoded text equal wordformer's:

* word: ``WordLevel`` over the vocabulary with ``<unk>`` for unknown words; a ``Lowercase`` normalizer when
  the tokenizer lowercases; a ``Split`` pre-tokenizer with :data:`wordformer.tokenizers.WORD_PATTERN` (its
  ``<eos>`` alternative left to the added-token matcher); the decoder joins with spaces as
  :func:`~wordformer.tokenizers.join_words` does: punctuation that takes no space before it becomes a
  ``##`` continuation for ``WordPiece``, an opening bracket carries a tab (no vocabulary entry holds
  whitespace) that is removed with the space after it once the pieces are fused.
* char: ``WordLevel`` over single characters, a ``Split`` pre-tokenizer that isolates every character, and
  a ``Fuse`` decoder.
* BPE: already a ``tokenizers`` object; written as it is.

``<unk>`` is the word and char models' unknown entry but not declared special, so ``decode(...,
skip_special_tokens=True)`` keeps it as wordformer's decode does. For a model trained on prompt/answer
pairs the tokenizer appends ``<eos>`` to every text it encodes (a ``TemplateProcessing`` post-processor),
just as ``wordformer generate`` does for such models, so ``generate`` answers a question directly.

Known differences: transformers matches the literal text ``<pad>`` in the input as the pad token (wordformer
reads it as text); the word pattern runs on the Oniguruma engine, whose ``\\w`` may differ from Python's
for rare characters (marks, some number signs); HuggingFace's GPT-2 stops at ``n_positions`` tokens
where wordformer slides its window.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

from .checkpoint import LoadedModel, load_checkpoint
from .errors import WordformerError
from .files import file_in_the_way, make_folder, save_bytes
from .tokenizers import NO_SPACE_AFTER, NO_SPACE_BEFORE, UNK, WORD_PATTERN, Tokenizer

HF_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json")
GLUE = "##"  # WordPiece's continuation mark: never the start of a word token (\w has no "#", "#" is one token)
OPENER_MARK = "\t"  # after an opening bracket; no vocabulary entry holds whitespace


# ----------------------------------------------------------------------------------------------- tokenizer


def _word_pieces_pattern() -> str:
    """WORD_PATTERN without its literal ``<eos>`` alternative: the added-token matcher takes ``<eos>``
    before normalisation, so ``<EOS>`` stays three tokens, as in wordformer."""
    pattern = WORD_PATTERN.pattern
    return pattern.removeprefix("<eos>|")


def _join_words_decoder() -> Any:
    """A decoder sequence whose output equals :func:`~wordformer.tokenizers.join_words` on the same tokens."""
    from tokenizers import decoders

    steps = [decoders.Replace(c, GLUE + c) for c in sorted(NO_SPACE_BEFORE)]
    steps += [decoders.Replace(c, c + OPENER_MARK) for c in sorted(NO_SPACE_AFTER)]
    steps += [
        decoders.WordPiece(prefix=GLUE, cleanup=False),  # " " before each token except continuations
        decoders.Fuse(),  # one string: the marks below span two tokens
        decoders.Replace(OPENER_MARK + " ", ""),  # no space after an opening bracket
        decoders.Replace(OPENER_MARK, ""),
        decoders.Replace(GLUE, ""),  # WordPiece keeps the mark on the first token
    ]
    return decoders.Sequence(steps)


def hf_tokenizer(tokenizer: Tokenizer, *, pairs: bool = False) -> Any:
    """``tokenizer`` as a ``tokenizers.Tokenizer`` that encodes and decodes as it does (see the module notes)."""
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import Tokenizer as HFTokenizer

    data = tokenizer.to_dict()
    if tokenizer.kind == "bpe":
        hf = HFTokenizer.from_str(data["tokenizer_json"])
    elif tokenizer.kind in ("word", "char"):
        vocab = {tokenizer.id_to_token(i): i for i in range(tokenizer.vocab_size)}
        hf = HFTokenizer(models.WordLevel(vocab, unk_token=UNK))
        if tokenizer.kind == "word":
            if data.get("lowercase", True):
                hf.normalizer = normalizers.Lowercase()
            hf.pre_tokenizer = pre_tokenizers.Split(Regex(_word_pieces_pattern()), behavior="removed", invert=True)
            hf.decoder = _join_words_decoder()
        else:
            hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
            hf.decoder = decoders.Fuse()
        hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (tokenizer.PAD, tokenizer.EOS)])
    else:  # pragma: no cover - the three kinds above are all there are
        raise WordformerError(f"a {tokenizer.kind} tokenizer cannot be written for HuggingFace")
    if pairs:
        hf.post_processor = processors.TemplateProcessing(
            single=f"$A {tokenizer.EOS}", special_tokens=[(tokenizer.EOS, tokenizer.eos_id)])
    return hf


def tokenizer_files(tokenizer: Tokenizer, *, pairs: bool, block_size: int) -> dict[str, bytes]:
    """``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``."""
    # GPT-2's habit: one token begins and ends texts (config.json's bos_token_id); nothing adds it to inputs
    specials = {"bos_token": tokenizer.EOS, "eos_token": tokenizer.EOS, "pad_token": tokenizer.PAD}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # transformers 5 reads it as its tokenizers backend
        **specials,
        "clean_up_tokenization_spaces": False,  # the decoder already spaces as wordformer does
        "model_max_length": block_size,
    }
    return {
        "tokenizer.json": hf_tokenizer(tokenizer, pairs=pairs).to_str(pretty=True).encode("utf-8"),
        "tokenizer_config.json": _json(config),
        "special_tokens_map.json": _json(specials),
    }


# ----------------------------------------------------------------------------------------------- model


def model_files(loaded: LoadedModel) -> dict[str, bytes]:
    """``config.json``, ``generation_config.json`` and ``model.safetensors``: GPT-2 for a GPT-2-shaped model,
    GPT-NeoX for a rotary-position one (:mod:`wordformer.neox`)."""
    from safetensors.torch import save

    tok, model = loaded.tokenizer, loaded.model
    if model.config.positional == "rope":
        from .neox import neox_config_dict, to_neox_state_dict

        config = neox_config_dict(model, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
        state, embedding = to_neox_state_dict(model), "gpt_neox.embed_in.weight"
    else:
        from .gpt2 import hf_config_dict, to_hf_state_dict, with_learned_positions

        model = with_learned_positions(model)  # sinusoids become a fixed "learned" table: GPT-2 holds them
        # hf_config_dict refuses, naming the option, what GPT-2 cannot hold
        config = hf_config_dict(model, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
        state, embedding = to_hf_state_dict(model), "transformer.wte.weight"
    if model.config.tie_weights:
        del state["lm_head.weight"]  # the same tensor as the embedding (safetensors stores no shared memory)
    config["torch_dtype"] = str(state[embedding].dtype).removeprefix("torch.")
    generation = {
        "bos_token_id": tok.eos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id,
        "do_sample": False,
    }
    if tok.pad_id != tok.eos_id:
        generation["suppress_tokens"] = [tok.pad_id]  # wordformer never generates <pad>
    tensors = {name: t.contiguous() for name, t in state.items()}
    return {
        "config.json": _json(config),
        "generation_config.json": _json(generation),
        "model.safetensors": save(tensors, metadata={"format": "pt"}),
    }


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# ----------------------------------------------------------------------------------------------- the folder


def check_hf_folder(folder: Path, *, overwrite: bool) -> None:
    """Refuse a target that is a file, or a folder holding an earlier export (without ``overwrite``).

    A folder with other files is fine: only the export's own files are written, nothing else is touched.
    """
    if folder.suffix == ".safetensors":
        raise WordformerError(f"--to {folder}: a HuggingFace export is a folder, not a .safetensors file; "
                              f"give a folder such as --to hf {folder.with_suffix('')}")
    if folder.exists() and not folder.is_dir():
        raise WordformerError(f"--to {folder} is a file; a HuggingFace export is a folder: choose another --to")
    blocker = file_in_the_way(folder.parent)
    if blocker is not None:
        raise WordformerError(f"cannot write --to {folder}: {blocker} is a file, not a folder; choose another --to")
    present = [name for name in HF_FILES if (folder / name).exists()]
    if present and not overwrite:
        raise WordformerError(f"{folder} already holds {', '.join(present)}; choose another --to or pass "
                              f"--overwrite to replace them")


def save_hf(loaded: LoadedModel, folder: Union[str, Path], *, overwrite: bool = False) -> Path:
    """Write the HuggingFace folder of ``loaded``; every file is written atomically, weights last but one,
    config.json last, so a folder with a config.json is complete."""
    folder = Path(folder)
    check_hf_folder(folder, overwrite=overwrite)
    files = {**tokenizer_files(loaded.tokenizer, pairs=loaded.pairs, block_size=loaded.model_config.block_size),
             **model_files(loaded)}
    make_folder(folder, advice="choose another --to")
    for name in sorted(files, key=lambda name: (name == "config.json", name == "model.safetensors", name)):
        save_bytes(files[name], folder / name, advice="choose another --to")
    return folder


def export_hf(checkpoint: Union[str, Path], folder: Union[str, Path], *, overwrite: bool = False) -> Path:
    """Convert a checkpoint (``.ckpt`` or ``.safetensors``) into a HuggingFace folder (see the module notes)."""
    check_hf_folder(Path(folder), overwrite=overwrite)  # before the (possibly slow) read
    return save_hf(load_checkpoint(checkpoint, map_location="cpu"), folder, overwrite=overwrite)


__all__ = ["HF_FILES", "check_hf_folder", "export_hf", "hf_tokenizer", "model_files", "save_hf", "tokenizer_files"]
