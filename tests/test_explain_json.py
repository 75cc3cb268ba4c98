"""`wordformer explain --json` holds exactly the numbers the text output prints, step by step."""

import json
import math
import re

import pytest
import torch

from wordformer import DataConfig, ModelConfig, TrainConfig, WordPredictor, WordTokenizer
from wordformer.checkpoint import wordformer_entry
from wordformer.cli import main

TOY = ["what is statquest <eos> awesome <eos>", "statquest is what <eos> awesome <eos>"]
NUM = r"-?\d+\.\d+"


def checkpoint(tmp_path, **overrides):
    tok = WordTokenizer.train(TOY)
    torch.manual_seed(5)
    kw = dict(vocab_size=tok.vocab_size, d_model=4, num_heads=2, num_layers=2, block_size=8, norm="pre")
    kw.update(overrides)
    model = WordPredictor(ModelConfig(**kw)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.7)
    entry = wordformer_entry(model.config, DataConfig(pairs=True), TrainConfig(), tok, step=0)
    path = tmp_path / "m.ckpt"
    torch.save({"wordformer": entry, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return str(path)


def section(text: str, start: str, end: str) -> list[str]:
    """The labelled rows between the line starting ``start`` and the one starting ``end``."""
    body = text.split("\n" + start, 1)[1].split("\n" + end, 1)[0]
    return body.splitlines()[1:]


def numbers(line: str) -> list[float]:
    return [float(x) for x in re.findall(NUM, line)]


@pytest.mark.parametrize("norm, layer, head, token", [("pre", 1, 1, 2), ("none", 0, 0, -1), ("post", 1, 0, 0)])
def test_json_equals_the_text_numbers(tmp_path, capsys, norm, layer, head, token):
    ckpt = checkpoint(tmp_path, norm=norm)
    argv = ["explain", "--checkpoint", ckpt, "--prompt", "what is statquest", "--layer", str(layer),
            "--head", str(head), "--token", str(token), "--top-k", "3"]
    assert main(argv + ["--full", "--decimals", "6"]) == 0
    text = capsys.readouterr().out
    assert main(argv + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    close = dict(abs=6e-7)
    n = data["token"] + 1
    assert data["layer"] == layer and data["head"] == head and data["tokens"][:n] == data["tokens"][: data["token"] + 1]
    assert numbers(section(text, "1. ", "2. ")[0]) == pytest.approx(data["query"], **close)
    assert [numbers(r) for r in section(text, "2. ", "3. ")] == [pytest.approx(k, **close) for k in data["keys"]]
    step3 = [numbers(r) for r in section(text, "3. ", "4. ")]
    assert [r[0] for r in step3] == pytest.approx(data["dot_products"], **close)
    assert [r[1] for r in step3] == pytest.approx(data["scores"], **close)
    assert data["scores"] == pytest.approx([d / data["scale"] for d in data["dot_products"]], rel=1e-6)
    assert data["scale"] == pytest.approx(math.sqrt(data["head_size"]))
    assert [numbers(r)[0] for r in section(text, "4. ", "5. ")] == pytest.approx(data["weights"], **close)
    assert [numbers(r) for r in section(text, "5. ", "6. ")] == [pytest.approx(v, **close) for v in data["values"]]
    step6 = [numbers(r) for r in section(text, "6. ", "7. ")]
    d = data["head_size"]
    assert [r[-d:] for r in step6] == [pytest.approx(w, **close) for w in data["weighted"]]
    assert numbers(section(text, "7. ", "\n")[0]) == pytest.approx(data["summed"], **close)
    residual_line = next(ln for ln in text.splitlines() if ln.startswith("residual connection"))
    assert numbers(residual_line)[-data["d_model"]:] == pytest.approx(data["residual"], **close)
    attn_line = next(ln for ln in text.splitlines() if ln.startswith("attention output"))
    assert numbers(attn_line) == pytest.approx(data["attention_output"], **close)
    top_rows = text.split("next token after", 1)[1].splitlines()[1:]
    assert [r.split()[1] for r in top_rows] == [t["label"] for t in data["top"]]
    assert [numbers(r)[0] for r in top_rows] == pytest.approx([t["probability"] for t in data["top"]], **close)
