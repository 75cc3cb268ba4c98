"""What every trial of a study shares: its corpus, tokenizer, pairs mode and the config values it does not tune.

A study's values are comparable only while these stay the same: a per-character loss ranks below a
per-word loss on any text, and a pairs loss counts only answers. The first run records them with the
study (user attribute ``fixed``); a later run (another worker, or the same command again) must bring the
same, or it is refused before any trial, as a changed search space is. ``tune report`` shows them.

The record::

    {"corpus": sha256 of the texts and tokenizer options (the key checkpoints record, see data.Corpus.key),
     "data": the corpus path (None: the built-in corpus), "tokenizer": "word" | "char" | "bpe" | "tuned",
     "pairs": bool | "tuned", "options": {"section.field": value} for every config field the space does not
     tune, except the runtime ones below, "given": ["section.field", ...] fixed on the command line}

Not compared: the path itself (a moved file with the same text is the same corpus; the hash decides), the
seed (each parallel worker brings its own) and options that do not change what a trial measures (where it
runs, how it logs). Studies made before the record existed get this run's record on their next run; their
trials' stored configs are checked for data, tokenizer and pairs first.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Mapping, Optional

import optuna

from ..config import DataConfig, ModelConfig, SECTIONS, TrainConfig
from ..errors import WordformerError
from .space import HEAD_SIZE, SearchSpace, apply_overrides

FIXED_ATTR = "fixed"  # study user attr holding the record
CONFIG_ATTR = "config"  # trial user attr: the three configs the trial trained, as dicts
TUNED = "tuned"  # tokenizer or pairs chosen by the space, per trial
REPORT_WIDTH = 120  # the report's text lines never get wider (a long path excepted)
# Fields that never make two trials incomparable: where and how a run executes, and what the corpus hash covers.
NOT_COMPARED = frozenset({
    "data.data", "data.cache_dir", "data.encoding_errors", "data.encoding",
    "train.seed", "train.progress", "train.accelerator", "train.devices", "train.precision", "train.compile",
    "train.log_every", "train.deterministic", "data.workers", "train.num_nodes", "train.strategy",
})


def _flag(target: str) -> str:
    """``train.max_steps`` -> ``--max-steps`` (the option that sets it)."""
    return "--" + target.split(".", 1)[-1].replace("_", "-")


def _plain(value: Any) -> Any:
    """The value as a JSON round trip gives it back, so records compare equal after storage."""
    return json.loads(json.dumps(value))


def tuned_targets(space: SearchSpace) -> set[str]:
    """Config fields whose value differs from trial to trial (the width too when the space sets head_size)."""
    targets = set(space.targets)
    if HEAD_SIZE in targets or HEAD_SIZE in space.fixed:
        targets.add("model.d_model")
    return targets


def fixed_options(space: SearchSpace, model: ModelConfig, data: DataConfig, train: TrainConfig, *,
                  corpus_key: Optional[str], given: Iterable[str] = ()) -> dict[str, Any]:
    """The record of a run: the base configs with the space's fixed values applied, minus what is tuned."""
    model, data, train = apply_overrides(dict(space.fixed), model, data, train)
    tuned = tuned_targets(space)
    options: dict[str, Any] = {}
    for section, config in (("model", model), ("data", data), ("train", train)):
        for name, value in dataclasses.asdict(config).items():
            target = f"{section}.{name}"
            if target in tuned or target in NOT_COMPARED or target == "model.vocab_size":
                continue
            options[target] = value
    return _plain({
        "corpus": corpus_key,
        "data": data.data,
        "tokenizer": TUNED if "data.tokenizer" in tuned else data.tokenizer,
        "pairs": TUNED if "data.pairs" in tuned else data.pairs,
        "options": options,
        "given": sorted(set(given)),
        "tuned": sorted(tuned),
    })


def _show(target: str, value: Any) -> str:
    """How the option is spelled on the command line: ``--pairs``, ``--no-pairs``, ``--tokenizer char``."""
    if value is _TUNED_HERE:
        return f"{_flag(target)} tuned by the space"
    if isinstance(value, bool):
        return _flag(target) if value else "--no-" + _flag(target)[2:]
    return f"{_flag(target)} {'(none)' if value is None else value}"


_TUNED_HERE = object()  # an option that a record leaves out because its space tunes it


def describe_value(target: str, value: Any) -> str:
    """An option and its value as typed on the command line (``--no-pairs``, ``--data PATH``)."""
    if target == "data.data":
        return f"--data {value or '(the built-in corpus)'}"
    return _show(target, value)


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(the study's, this run's) for each option that differs, the corpus included; empty when they match."""
    old_opts, new_opts = dict(recorded.get("options") or {}), dict(current.get("options") or {})
    defaults = _defaults()
    out: list[tuple[str, str]] = []
    data_option_differs = False
    for target in sorted(set(old_opts) | set(new_opts), key=lambda t: (not t.startswith("data."), t)):
        old, new = _side(target, old_opts, recorded, defaults), _side(target, new_opts, current, defaults)
        if old is _UNKNOWN or new is _UNKNOWN:
            continue  # a field one side's version did not have and has no default for
        if old is _TUNED_HERE and new is _TUNED_HERE:
            continue
        if old is _TUNED_HERE or new is _TUNED_HERE or old != new:
            out.append((_show(target, old), _show(target, new)))
            data_option_differs = data_option_differs or target.startswith("data.")
    old_key, new_key = recorded.get("corpus"), current.get("corpus")
    if old_key and new_key and old_key != new_key:  # the same text at another path is the same corpus
        old_data, new_data = recorded.get("data"), current.get("data")
        if old_data != new_data:
            out.insert(0, (f"--data {old_data or '(the built-in corpus)'}", f"--data {new_data or '(the built-in corpus)'}"))
        elif not data_option_differs:  # same path, same options: the file itself changed
            where = new_data or "the built-in corpus"
            out.insert(0, (f"{where} as it was then", "as it is now (the text changed: its sha256 differs)"))
    return out


_UNKNOWN = object()


def _side(target: str, options: Mapping[str, Any], record: Mapping[str, Any], defaults: Mapping[str, Any]) -> Any:
    """One record's value of ``target``: its option, "tuned", or (a field newer than the record) the default."""
    if target in options:
        return options[target]
    if target in (record.get("tuned") or ()):
        return _TUNED_HERE
    return defaults.get(target, _UNKNOWN)


def _refusal(study: optuna.Study, diffs: list[tuple[str, str]], where: str) -> WordformerError:
    old = ", ".join(a for a, _ in diffs)
    new = ", ".join(b for _, b in diffs)
    return WordformerError(
        f"study {study.study_name!r} ({where}) was run with {old}, not {new}: its trials' values could not be "
        f"compared with this run's; repeat the study's options to continue it (`wordformer tune report` lists "
        f"them), or pass another --out or --study for a new study"
    )


def _from_trials(study: optuna.Study) -> dict[str, set[Any]]:
    """Data path, tokenizer and pairs of the trials of a study made before the record (from their configs)."""
    seen: dict[str, set[Any]] = {"data": set(), "tokenizer": set(), "pairs": set()}
    for trial in study.get_trials(deepcopy=False):
        stored = trial.user_attrs.get(CONFIG_ATTR)
        if not isinstance(stored, dict) or not isinstance(stored.get("data"), dict):
            continue
        for name in seen:
            if name in stored["data"]:
                seen[name].add(json.dumps(stored["data"][name]))
    return {k: {json.loads(v) for v in vs} for k, vs in seen.items()}


def check_fixed(study: optuna.Study, current: Mapping[str, Any], where: str) -> Optional[str]:
    """Refuse a run whose fixed options differ from the study's record (before any trial).

    A study made before records is checked against its trials' stored configs (data, tokenizer, pairs);
    the note returned then says, once, that this run's options become the study's record.
    """
    recorded = study.user_attrs.get(FIXED_ATTR)
    if isinstance(recorded, dict):
        diffs = differences(recorded, current)
        if diffs:
            raise _refusal(study, diffs, where)
        return None
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return None
    seen = _from_trials(study)
    diffs = []
    for name, target in (("data", "data.data"), ("tokenizer", "data.tokenizer"), ("pairs", "data.pairs")):
        ours = current.get(name)
        others = [] if ours == TUNED else sorted((v for v in seen[name] if v != ours), key=str)
        if not others:
            continue
        if name == "data":
            diffs.append((f"--data {others[0] or '(the built-in corpus)'}", f"--data {ours or '(the built-in corpus)'}"))
        else:
            diffs.append((_show(target, others[0]), _show(target, ours)))
    if diffs:
        raise _refusal(study, diffs, where)
    return (f"study {study.study_name!r} was made before wordformer recorded the options its trials share: its "
            f"{len(trials)} trial(s) match this run's data, tokenizer and pairs, and this run's options now "
            f"become the study's record")


def record_fixed(study: optuna.Study, current: Mapping[str, Any], where: str) -> None:
    """Store ``current`` as the study's record if it has none; refuse if a racing worker stored another."""
    if isinstance(study.user_attrs.get(FIXED_ATTR), dict):
        return
    study.set_user_attr(FIXED_ATTR, dict(current))
    stored = study.user_attrs.get(FIXED_ATTR)  # two workers starting at once: the last write wins
    if isinstance(stored, dict):
        diffs = differences(stored, current)
        if diffs:
            raise _refusal(study, diffs, where)


def recorded_fixed(study: optuna.Study) -> Optional[dict[str, Any]]:
    """The study's record, or None for a study made before records (or by Optuna directly)."""
    record = study.user_attrs.get(FIXED_ATTR)
    return dict(record) if isinstance(record, dict) else None


def _defaults() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f"{section}.{f.name}"] = _plain(f.default)
    return out


def describe_fixed(study: optuna.Study) -> list[str]:
    """Lines for the report: data, tokenizer, pairs, and the options fixed on the command line or changed
    from their defaults (or, for an older study, what its trials' configs say)."""
    record = recorded_fixed(study)
    if record is None:
        seen = _from_trials(study)

        def one(values: set[Any], show: Any) -> str:
            if not values:
                return "unknown"
            return " and ".join(sorted(show(v) for v in values)) + ("  (MIXED: values not comparable)" if len(values) > 1 else "")

        return [
            "fixed:     not recorded (study made before wordformer recorded them); from the trials' configs:",
            f"data:      {one(seen['data'], lambda v: v or 'the built-in corpus')}",
            f"tokenizer: {one(seen['tokenizer'], str)}",
            f"pairs:     {one(seen['pairs'], lambda v: 'yes' if v else 'no')}",
        ]
    key = record.get("corpus")
    data = record.get("data") or "the built-in corpus"
    pairs = record.get("pairs")
    lines = [
        f"data:      {data}" + (f"  (corpus sha256 {key[:12]})" if key else ""),
        f"tokenizer: {record.get('tokenizer')}",
        f"pairs:     {TUNED if pairs == TUNED else ('yes' if pairs else 'no')}",
    ]
    options = dict(record.get("options") or {})
    given = set(record.get("given") or ())
    defaults = _defaults()
    shown = [_show(t, options[t]) for t in sorted(options)
             if t not in ("data.tokenizer", "data.pairs") and (t in given or options[t] != defaults.get(t))]
    lines += wrap_items("fixed:     ", shown or ["(defaults only)"])
    return lines


def wrap_items(head: str, items: list[str], width: int = REPORT_WIDTH) -> list[str]:
    """``head`` then the items, space-separated, on as many lines as keep within ``width`` (continuation lines
    indented under the first item); an item is never split, so one longer than a line stands alone."""
    lines: list[str] = []
    line = head
    for item in items:
        if len(line) > len(head) and len(line) + 1 + len(item) > width:
            lines.append(line)
            line = " " * len(head) + item
        else:
            line += ("" if len(line) == len(head) else " ") + item
    return lines + [line]


__all__ = ["CONFIG_ATTR", "FIXED_ATTR", "NOT_COMPARED", "TUNED", "check_fixed", "describe_fixed", "describe_value",
           "differences", "fixed_options",
           "record_fixed", "recorded_fixed", "tuned_targets", "wrap_items", "REPORT_WIDTH"]
