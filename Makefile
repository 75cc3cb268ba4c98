# wordformer — the README's quickstart: `make demo`, `make test`; benchmarks: `make bench`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch lies on local disk here; elsewhere pip fetches the same pinned release.
TORCH_PIN ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench install clean help

help:
	@echo "make demo   - set up and train a word predictor on the built-in corpus, then generate and predict"
	@echo "make test   - set up and run the test suite (CPU)"
	@echo "make bench  - run the benchmarks and update BENCHMARKS.md"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	@# Install the pinned CPU torch first, only where no torch is present, so no CUDA build is pulled in.
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/wordformer demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) runs .pytest_cache
