"""The chapter notebook and the toy script run end to end (the notebook asserts the chapter's numbers itself)."""

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real processes and servers: make test runs it, make test-fast does not

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOK = EXAMPLES / "word_predictor.ipynb"


def test_notebook_is_stored_without_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_notebook_executes_and_reproduces_the_chapter(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=180,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # a failing cell (the notebook's own asserts included) raises CellExecutionError
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "[ 0.2246,  0.5556]" in text  # In[4]'s values
    assert "what is statquest <eos> -> awesome" in text and "statquest is what <eos> -> awesome" in text
    assert "7. sum of the weighted values" in text and "best:" in text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # positional encoding, embeddings, attention map


def test_toy_script_trains_and_answers_awesome(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import toy_word_predictor

    assert toy_word_predictor.main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "what is statquest <eos> -> awesome" in out and "statquest is what <eos> -> awesome" in out
    sys.modules.pop("toy_word_predictor", None)
