"""Hyperparameter tuning with Optuna: search spaces in YAML, trials that are real training runs.

* :mod:`.space` - the YAML search space (types, bounds, log scale, power-of-two transform, defaults);
  heads divide the width by construction.
* :mod:`.study` - storages (SQLite, any SQLAlchemy URL, journal files), samplers, pruners, heartbeats.
* :mod:`.fixed` - what every trial shares (corpus, tokenizer, pairs, untuned options): recorded, compared.
* :mod:`.objective` - one trial = one ``wordformer.training.train`` run, failures recorded with a reason.
* :mod:`.report` - ranked table, CSV, PNG (and HTML with plotly) plots.
* :mod:`.choices` - the metrics, samplers and pruners a study can use (no Optuna import).

The command line (``wordformer tune``) is :mod:`wordformer.cli.tune`.

Names are loaded lazily so that importing the package does not import Optuna, torch or Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Param": "space", "SearchSpace": "space", "load_space": "space", "parse_space": "space",
    "power_2": "space", "sample_configs": "space", "apply_overrides": "space",
    "StudySettings": "study", "TrialFailed": "study", "fail_trial": "study", "open_storage": "study",
    "open_study": "study", "load_existing_study": "study", "make_sampler": "study", "make_pruner": "study",
    "run_study": "study", "best_trial": "study", "METRICS": "choices", "SAMPLERS": "choices", "PRUNERS": "choices",
    "ObjectiveSettings": "objective", "TrainingObjective": "objective", "StepPruningCallback": "objective",
    "CheckpointPruner": "objective", "retrain": "objective", "trial_configs": "objective",
    "Report": "report", "write_report": "report", "trial_rows": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wordformer.tune' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
