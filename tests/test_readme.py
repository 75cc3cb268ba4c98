"""The README's Python examples run as written, and print what their ``# -> `` comments say.

Each block is taken from README.md by its section heading and run statement by statement in a temporary
folder that holds the files the block names (``my_text.txt``, ``qa.tsv``). A statement whose last line ends in
``# -> TEXT`` must print TEXT (whitespace aside: a tensor prints over several lines). The serve section's
OpenAI-client block runs in tests/test_serve_api.py, against the server those tests start.
"""

from __future__ import annotations

import ast
import contextlib
import io
from pathlib import Path

import pytest
import torch

from conftest import SMALL_TEXT

README = Path(__file__).resolve().parents[1] / "README.md"
QA = "who wrote hamlet\tshakespeare\nwho wrote faust\tgoethe\nwho painted the mona lisa\tleonardo da vinci\n" \
     "what is the capital of france\tparis\n"
MY_TEXT = SMALL_TEXT + "\nthe list of what the cat saw is long .\n"


def python_blocks(heading: str) -> list[str]:
    """The ```python blocks of the README section that starts with ``heading`` (up to the next heading)."""
    blocks, inside, current, fence = [], False, [], None
    for line in README.read_text(encoding="utf-8").splitlines():
        if fence is None and line.startswith("#"):  # a heading (a "#" inside a code block is a comment)
            if inside:
                break
            inside = line == heading
        elif line.startswith("```"):
            if fence is None:
                fence, current = line, []
            else:
                if inside and fence == "```python":
                    blocks.append("\n".join(current) + "\n")
                fence = None
        elif fence is not None:
            current.append(line)
    return blocks


def run_block(source: str, namespace: dict) -> list[tuple[str, str]]:
    """Run ``source`` one statement at a time; returns (expected, printed) for every ``# -> `` statement."""
    lines = source.splitlines()
    checks = []
    for node in ast.parse(source).body:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(ast.Module([node], type_ignores=[]), "README.md", "exec"), namespace)
        last = lines[node.end_lineno - 1]
        if "# -> " in last:
            checks.append((last.split("# -> ", 1)[1], out.getvalue()))
    return checks


def squeeze(text: str) -> str:
    return "".join(text.split())


def test_the_chapters_in4_block_prints_the_chapters_numbers():
    (block,) = python_blocks("### The chapter's In[4], reproduced")
    try:
        checks = run_block(block, {})
    finally:
        torch.set_printoptions(profile="default")
    assert len(checks) == 2
    for expected, printed in checks:
        assert squeeze(printed) == squeeze(expected)


@pytest.mark.slow
def test_the_python_api_blocks_run_and_a_pairs_model_answers(tmp_path, monkeypatch):
    """Trains the two small models the README trains (~10 s): the word predictor and the question/answer model,
    whose answer comes through the plain ``generate(model, tokenizer, question)`` with no option."""
    blocks = python_blocks("## Python API")
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_text.txt").write_text(MY_TEXT, encoding="utf-8")
    (tmp_path / "qa.tsv").write_text(QA, encoding="utf-8")
    namespace: dict = {}
    plain = run_block(blocks[0], namespace)
    assert plain == []  # sampled text: nothing to compare, but every line ran
    ckpt = namespace["ckpt"]
    sampled = dict(max_new_tokens=30, temperature=0.8, seed=0)
    # what the README says of the two generate lines: the continuation, and the whole line the CLI prints
    line, continuation = (ckpt.generate("the cat", echo=echo, **sampled) for echo in (True, False))
    assert line.startswith("the cat") and line.endswith(continuation) and len(line) > len(continuation)

    answers = run_block(blocks[1], namespace)
    assert len(answers) == 3
    for expected, printed in answers:
        assert printed.strip() == expected.strip()
