"""The search space: which config fields a study tunes, over which ranges, declared in YAML.

A space file looks like this (``default_space.yaml`` beside this module is the built-in one)::

    params:
      log2_num_heads: {target: model.num_heads, type: int, low: 0, high: 3, transform: power_2, default: 2}
      lr:             {target: train.lr, type: float, low: 1.0e-4, high: 1.0e-2, log: true, default: 1.0e-3}
      positional:     {target: model.positional, type: categorical, choices: [sinusoidal, learned]}
      tie_weights:    {target: model.tie_weights, type: bool, default: true}
    fixed:                      # optional: config values every trial uses
      train.eval_interval: 50

Each key under ``params`` is the Optuna parameter name; ``target`` is ``section.field`` of
:class:`~wordformer.config.ModelConfig` (``model``), ``DataConfig`` (``data``) or ``TrainConfig``
(``train``). ``transform: power_2`` tunes an exponent ``x`` and sets the field to ``2**x`` (as
spotpython's ``transform_power_2_int``); ``low``, ``high`` and ``default`` are then exponents.

Heads must divide the model width. The space guarantees it by construction, never by failing
trials, in one of two ways:

* target the virtual field ``model.head_size``: the width is ``d_model = num_heads * head_size``,
  so every sampled head count divides it (the default space does this);
* tune ``model.d_model`` and ``model.num_heads`` directly: the space is accepted only when every
  head count it can produce divides every width it can produce (e.g. both powers of two with
  ``num_heads <= d_model``), checked once when the file is loaded.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import yaml

from ..config import SECTIONS, DataConfig, ModelConfig, TrainConfig, field_names, field_optional, field_type
from ..errors import WordformerError

TYPES = ("int", "float", "categorical", "bool")
TRANSFORMS = ("none", "power_2")
HEAD_SIZE = "model.head_size"  # virtual target: d_model = num_heads * head_size
ENTRY_KEYS = ("target", "type", "low", "high", "step", "log", "choices", "default", "transform")
TOP_KEYS = ("params", "fixed")
_MAX_DIVISIBILITY_PAIRS = 1_000_000  # beyond this the head/width check is refused, not run


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Param:
    """One tuned hyperparameter: how Optuna samples it and which config field receives it."""

    name: str
    target: str  # "section.field", or "model.head_size"
    type: str  # one of TYPES
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    default: Any = None
    transform: str = "none"

    @property
    def section(self) -> str:
        return self.target.split(".", 1)[0]

    @property
    def field(self) -> str:
        return self.target.split(".", 1)[1]

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this parameter in the tuned domain (an exponent for power_2)."""
        if self.type == "int":
            step = int(self.step) if self.step is not None else 1
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=step, log=self.log)
        if self.type == "float":
            return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def distribution(self) -> Any:
        """The Optuna distribution ``suggest`` samples from (to compare with a study's earlier trials)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "int":
            step = int(self.step) if self.step is not None else 1
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=step)
        if self.type == "float":
            return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)
        return CategoricalDistribution(list(self.choices))

    def to_value(self, raw: Any) -> Any:
        """Map a sampled value to the config value (applies the power-of-two transform)."""
        if self.transform == "power_2":
            return power_2(raw)
        return raw

    def grid_values(self) -> list[Any]:
        """Every value of the tuned domain, for the grid sampler; a float needs a step."""
        if self.type in ("categorical", "bool"):
            return list(self.choices)
        if self.type == "int":
            step = int(self.step) if self.step is not None else 1
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.step is None:
            raise WordformerError(
                f"grid sampler: float parameter '{self.name}' has no step; give it a step in the space "
                f"file or use another sampler (tpe, gp, random, qmc, cmaes)"
            )
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]

    def values(self) -> Optional[list[Any]]:
        """Every config value this parameter can produce, or None when the set is not finite."""
        if self.type == "float" and self.step is None:
            return None
        return [self.to_value(v) for v in self.grid_values()]

    def default_raw(self) -> Any:
        """The default in the tuned domain: the entry's default, else the middle of its range."""
        if self.default is not None:
            return self.default
        if self.type in ("categorical", "bool"):
            return self.choices[0]
        if self.type == "int":
            if self.log:
                mid = round(math.sqrt(self.low * self.high))
            else:
                mid = (int(self.low) + int(self.high)) // 2
            step = int(self.step) if self.step is not None else 1
            mid = int(self.low) + ((mid - int(self.low)) // step) * step
            return max(int(self.low), min(int(self.high), mid))
        if self.log:
            return math.sqrt(self.low * self.high)
        if self.step is not None:
            steps = round((self.high - self.low) / self.step)  # 0.3 / 0.05 is 5.999...: count, then halve
            return round(self.low + (steps // 2) * self.step, 12)
        return (self.low + self.high) / 2

    def as_dict(self) -> dict[str, Any]:
        """The YAML entry that re-creates this parameter (stored with a study for later reports)."""
        out: dict[str, Any] = {"target": self.target, "type": self.type}
        if self.type in ("int", "float"):
            out.update(low=self.low, high=self.high)
            if self.step is not None:
                out["step"] = self.step
            if self.log:
                out["log"] = True
        elif self.type == "categorical":
            out["choices"] = list(self.choices)
        if self.transform != "none":
            out["transform"] = self.transform
        if self.default is not None:
            out["default"] = self.default
        return out


def power_2(x: Any) -> int:
    """Turn a tuned exponent into the config value 2**x (spotpython's transform_power_2_int)."""
    return int(2 ** int(x))


@dataclass(frozen=True)
class SearchSpace:
    """The tuned parameters plus the fixed config values every trial shares."""

    params: tuple[Param, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def targets(self) -> list[str]:
        return [p.target for p in self.params]

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise WordformerError(f"search space {self.source}: no parameter '{name}'; known: {', '.join(self.names)}")

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample every parameter from the trial; returns the raw (tuned-domain) values by name."""
        return {p.name: p.suggest(trial) for p in self.params}

    def defaults(self) -> dict[str, Any]:
        """The default point in the tuned domain, ready for ``study.enqueue_trial``."""
        return {p.name: p.default_raw() for p in self.params}

    def grid(self) -> dict[str, list[Any]]:
        """The full grid for Optuna's GridSampler; refuses floats without a step."""
        return {p.name: p.grid_values() for p in self.params}

    def overrides(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Config values ("section.field" -> value) for raw sampled values, fixed values included.

        ``model.head_size`` is resolved here: d_model becomes num_heads * head_size, which is why
        heads always divide the width.
        """
        out: dict[str, Any] = dict(self.fixed)
        head_size: Optional[int] = None
        for p in self.params:
            if p.name not in raw:
                continue
            value = p.to_value(raw[p.name])
            if p.target == HEAD_SIZE:
                head_size = int(value)
            else:
                out[p.target] = value
        if head_size is not None:
            out["model.head_size"] = head_size
        return out

    def configs(
        self,
        raw: Mapping[str, Any],
        model: Optional[ModelConfig] = None,
        data: Optional[DataConfig] = None,
        train: Optional[TrainConfig] = None,
    ) -> tuple[ModelConfig, DataConfig, TrainConfig]:
        """Apply sampled values on top of base configs; the config classes validate the result."""
        return apply_overrides(self.overrides(raw), model, data, train)

    def without(self, targets: Iterable[str]) -> "SearchSpace":
        """Drop entries whose target the command line fixes (the command line wins)."""
        drop = set(targets)
        if "model.d_model" in drop:
            drop.add(HEAD_SIZE)  # a fixed width leaves nothing for head_size to decide
        kept = tuple(p for p in self.params if p.target not in drop)
        fixed = {k: v for k, v in self.fixed.items() if k not in drop}
        return dataclasses.replace(self, params=kept, fixed=fixed)

    def as_dict(self) -> dict[str, Any]:
        """The space as plain data (JSON/YAML-safe), stored with a study."""
        out: dict[str, Any] = {"params": {p.name: p.as_dict() for p in self.params}}
        if self.fixed:
            out["fixed"] = dict(self.fixed)
        return out

    def check_combinations(self, base: Optional[ModelConfig] = None) -> None:
        """Refuse a space that could combine options the config refuses together, so no trial fails for it:
        ``zero_init_output`` with a tied output layer, and rotary positions with an odd head size.

        Without ``base`` (at load time) only what the space itself sets is judged; with it, the base config supplies
        the rest (``wordformer tune`` checks again with its base config).
        """
        in_space = set(self.targets) | set(self.fixed)
        if base is None and not {"model.zero_init_output", "model.tie_weights"} <= in_space:
            zero, tied = [], []
        else:
            defaults = base or ModelConfig()
            zero = _values_for(self, "model.zero_init_output", defaults.zero_init_output) or []
            tied = _values_for(self, "model.tie_weights", defaults.tie_weights) or []
        base_given = base is not None
        base = base or ModelConfig()
        if True in zero and True in tied:
            raise WordformerError(
                f"search space {self.source}: model.zero_init_output can be true while model.tie_weights is true, "
                f"which the config refuses; fix model.tie_weights: false (under fixed:) or leave zero_init_output out"
            )
        if "rope" not in (_values_for(self, "model.positional", base.positional) or []):
            return
        if any(p.target == HEAD_SIZE for p in self.params) or HEAD_SIZE in self.fixed:
            sizes = _values_for(self, HEAD_SIZE, None) or []
        elif not base_given and not {"model.num_heads", "model.d_model"} & in_space:
            sizes = []  # the base config decides the head size: judged when tuning starts
        else:
            heads = _values_for(self, "model.num_heads", base.num_heads) or []
            widths = _values_for(self, "model.d_model", base.d_model) or []
            sizes = [d // h for h in heads for d in widths if _is_int(h) and _is_int(d) and h >= 1 and d % h == 0]
        odd = sorted({s for s in sizes if _is_int(s) and s % 2})
        if odd:
            raise WordformerError(
                f"search space {self.source}: model.positional can be rope, which needs an even head size, but the "
                f"space allows head size {odd[0]}; use even head sizes (e.g. model.head_size as a power of two >= 2)"
            )

    def check_heads(self, base: Optional[ModelConfig] = None) -> None:
        """Refuse a space whose head counts might not divide its widths (see the module doc), or whose options
        could meet in a combination the config refuses (:meth:`check_combinations`).

        Without ``base`` only a space that sets both num_heads and d_model is checked (at load
        time); with it, the base config supplies whichever of the two the space leaves alone.
        """
        self.check_combinations(base)
        has_head_size = any(p.target == HEAD_SIZE for p in self.params) or HEAD_SIZE in self.fixed
        if has_head_size:
            return
        in_space = set(self.targets) | set(self.fixed)
        if base is None and not {"model.num_heads", "model.d_model"} <= in_space:
            return
        base = base or ModelConfig()
        heads = _values_for(self, "model.num_heads", base.num_heads)
        widths = _values_for(self, "model.d_model", base.d_model)
        if heads is None or widths is None:
            who = "num_heads" if heads is None else "d_model"
            raise WordformerError(
                f"search space {self.source}: {who} is a float without step, so heads dividing the width "
                f"cannot be guaranteed; tune model.head_size (d_model = num_heads * head_size) instead"
            )
        if len(heads) * len(widths) > _MAX_DIVISIBILITY_PAIRS:
            raise WordformerError(
                f"search space {self.source}: too many (num_heads, d_model) pairs to check that heads divide "
                f"the width; tune model.head_size (d_model = num_heads * head_size) instead"
            )
        for h, d in itertools.product(heads, widths):
            if not _is_int(h) or not _is_int(d) or h < 1 or d % h:
                raise WordformerError(
                    f"search space {self.source}: num_heads={h} does not divide d_model={d}; "
                    f"tune model.head_size (d_model = num_heads * head_size) or use powers of two "
                    f"with num_heads <= d_model"
                )


def _values_for(space: SearchSpace, target: str, base_value: Any) -> Optional[list[Any]]:
    for p in space.params:
        if p.target == target:
            return p.values()
    if target in space.fixed:
        return [space.fixed[target]]
    return [base_value]


def apply_overrides(
    overrides: Mapping[str, Any],
    model: Optional[ModelConfig] = None,
    data: Optional[DataConfig] = None,
    train: Optional[TrainConfig] = None,
) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    """Build the three configs from bases plus ``section.field`` overrides (head_size sets d_model)."""
    base = {"model": model or ModelConfig(), "data": data or DataConfig(), "train": train or TrainConfig()}
    changes: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "train": {}}
    head_size = None
    for target, value in overrides.items():
        if target == HEAD_SIZE:
            head_size = value
            continue
        section, name = target.split(".", 1)
        changes[section][name] = value
    if head_size is not None:
        heads = changes["model"].get("num_heads", base["model"].num_heads)
        changes["model"]["d_model"] = int(heads) * int(head_size)
    if "lr" in changes["train"] and "min_lr" not in changes["train"]:
        # The cosine floor follows the tuned peak (same ratio as the base), so min_lr <= lr always holds.
        ratio = base["train"].min_lr / base["train"].lr
        changes["train"]["min_lr"] = changes["train"]["lr"] * ratio
    built = {s: dataclasses.replace(base[s], **changes[s]) if changes[s] else base[s] for s in base}
    return built["model"], built["data"], built["train"]


WARMUP, MAX_STEPS = "train.warmup_steps", "train.max_steps"


def bound_warmup(space: SearchSpace, train: TrainConfig, *,
                 warmup_given: bool = False) -> tuple[SearchSpace, TrainConfig, Optional[str]]:
    """Keep every trial's warm-up within half its step budget, and say so (a note, or None when nothing changed).

    A warm-up as long as the run never lets the rate peak nor decay (the built-in space samples up to 200 steps,
    a study with ``--max-steps 30`` would waste most trials). The budget is the smallest ``max_steps`` the space
    can give (the fixed one otherwise); a tuned warm-up loses the values above half of it (one value left: it is
    fixed), and the base warm-up (when not given on the command line) is lowered to it.
    """
    budget_param = next((p for p in space.params if p.target == MAX_STEPS), None)
    values = budget_param.values() if budget_param is not None else None
    budget = int(min(values)) if values else int(space.fixed.get(MAX_STEPS, train.max_steps))
    limit = budget // 2
    notes: list[str] = []
    param = next((p for p in space.params if p.target == WARMUP), None)
    if param is not None and param.type in ("int", "categorical"):
        raw = param.grid_values()
        kept = [v for v in raw if param.to_value(v) <= limit]
        if len(kept) < len(raw):
            shown = f"{param.to_value(raw[0])}..{param.to_value(raw[-1])}" if param.type == "int" else str(raw)
            others = tuple(p for p in space.params if p is not param)
            if len(kept) <= 1:
                value = param.to_value(kept[0]) if kept else limit
                space = dataclasses.replace(space, params=others, fixed={**space.fixed, WARMUP: value})
                notes.append(f"warm-up {shown} fixed at {value}")
            else:
                if param.type == "int":
                    default = param.default if param.default is None or param.default <= max(kept) else max(kept)
                    bounded = dataclasses.replace(param, high=max(kept), default=default)
                    notes.append(f"warm-up {shown} -> {param.to_value(kept[0])}..{param.to_value(max(kept))}")
                else:
                    default = param.default if param.default in kept else None
                    bounded = dataclasses.replace(param, choices=tuple(kept), default=default)
                    notes.append(f"warm-up choices {shown} -> {kept}")
                space = dataclasses.replace(space, params=tuple(bounded if p is param else p for p in space.params))
    fixed_warmup = space.fixed.get(WARMUP)
    if param is None and fixed_warmup is None and not warmup_given and train.warmup_steps > limit:
        notes.append(f"warm-up {train.warmup_steps} -> {limit}")
        train = dataclasses.replace(train, warmup_steps=limit)
    if not notes:
        return space, train, None
    return space, train, (f"{'; '.join(notes)}: at most half the step budget ({budget} steps, the smallest "
                          "max_steps of the study)")


# ---------------------------------------------------------------------------------------------
# parsing


def _check_target(name: str, target: Any, where: str) -> str:
    if not isinstance(target, str) or "." not in target:
        raise WordformerError(
            f"{where}: entry '{name}' needs target: section.field (sections: {', '.join(SECTIONS)}), got {target!r}"
        )
    if target == HEAD_SIZE:
        return target
    section, fname = target.split(".", 1)
    if section not in SECTIONS:
        raise WordformerError(
            f"{where}: entry '{name}' has target {target!r} with unknown section '{section}'; "
            f"use one of: {', '.join(SECTIONS)}"
        )
    known = field_names(SECTIONS[section])
    if fname not in known:
        extra = ", head_size" if section == "model" else ""
        raise WordformerError(
            f"{where}: entry '{name}' has target {target!r}, which is not a {section} config field; "
            f"known: {', '.join(known)}{extra}"
        )
    return target


def _parse_param(name: str, entry: Any, where: str) -> Param:
    """Validate one YAML entry; every message names the entry and says what to change."""
    def bad(problem: str) -> WordformerError:
        return WordformerError(f"{where}: entry '{name}': {problem}")

    if not isinstance(entry, dict):
        raise bad(f"must be a mapping with target and type, got {entry!r}")
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise bad(f"unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(ENTRY_KEYS)}")
    target = _check_target(name, entry.get("target"), where)
    kind = entry.get("type")
    if kind not in TYPES:
        raise bad(f"type {kind!r} is not one of: {', '.join(TYPES)}")
    transform = entry.get("transform", "none")
    if transform is None:
        transform = "none"
    if transform not in TRANSFORMS:
        raise bad(f"transform {transform!r} is not one of: {', '.join(TRANSFORMS)}")
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise bad(f"log must be true or false, got {log!r}")
    default = entry.get("default")
    low, high, step = entry.get("low"), entry.get("high"), entry.get("step")
    choices: tuple[Any, ...] = ()

    if kind in ("int", "float"):
        if "choices" in entry:
            raise bad(f"a {kind} takes low/high, not choices; use type: categorical for a list")
        if low is None or high is None:
            raise bad(f"a {kind} needs both low and high")
        check = _is_int if kind == "int" else _is_number
        for key, value in (("low", low), ("high", high)):
            if not check(value):
                raise bad(f"{key}={value!r} must be {'an integer' if kind == 'int' else 'a number'}")
        if low > high:
            raise bad(f"low={low} is greater than high={high}; swap them")
        if step is not None:
            if not check(step) or step <= 0:
                raise bad(f"step={step!r} must be a positive {'integer' if kind == 'int' else 'number'}")
            if log and not (kind == "int" and step == 1):
                raise bad("log scale cannot be combined with a step; drop one of them")
        if log and low <= 0:
            raise bad(f"log scale needs low > 0, got low={low}")
        if transform == "power_2" and kind != "int":
            raise bad("transform power_2 needs type: int (the tuned value is the exponent)")
        if transform == "power_2" and low < 0:
            raise bad(f"transform power_2 needs low >= 0 (an exponent), got low={low}")
        if default is not None:
            if not check(default):
                raise bad(f"default={default!r} must be {'an integer' if kind == 'int' else 'a number'}")
            if not low <= default <= high:
                unit = " (an exponent: the value is 2**default)" if transform == "power_2" else ""
                raise bad(f"default={default} lies outside [{low}, {high}]{unit}")
            if step is not None and abs(((default - low) / step) - round((default - low) / step)) > 1e-9:
                raise bad(f"default={default} is not on the grid low + k*step (low={low}, step={step})")
        if kind == "float":
            low, high = float(low), float(high)
            step = float(step) if step is not None else None
            default = float(default) if default is not None else None
    else:
        for key in ("low", "high", "step"):
            if key in entry:
                raise bad(f"a {kind} takes no {key}; {'list choices' if kind == 'categorical' else 'it is true/false'}")
        if log:
            raise bad(f"log scale applies to int and float, not {kind}")
        if transform != "none":
            raise bad(f"transform {transform} applies to int, not {kind}")
        if kind == "bool":
            if "choices" in entry:
                raise bad("a bool takes no choices (it is true/false)")
            choices = (False, True)
            if default is not None and not isinstance(default, bool):
                raise bad(f"default={default!r} must be true or false")
        else:
            raw = entry.get("choices")
            if not isinstance(raw, list) or not raw:
                raise bad("a categorical needs a non-empty list of choices")
            for c in raw:
                if c is not None and not isinstance(c, (bool, int, float, str)):
                    raise bad(f"choice {c!r} must be a string, number, boolean or null")
            if len(set(map(repr, raw))) != len(raw):
                raise bad(f"choices {raw} contain duplicates")
            choices = tuple(raw)
            if default is not None and default not in choices:
                raise bad(f"default={default!r} is not one of the choices {list(choices)}")

    param = Param(
        name=name, target=target, type=kind, low=low, high=high, step=step, log=log,
        choices=choices, default=default, transform=transform,
    )
    _check_value_types(param, bad)
    _check_config_values(param, bad)
    return param


def _check_value_types(param: Param, bad: Any) -> None:
    """Refuse values the target field cannot hold (a float num_layers, a string lr)."""
    if param.target == HEAD_SIZE:
        if param.type not in ("int", "categorical") or (
            param.type == "categorical" and not all(_is_int(c) and c > 0 for c in param.choices)
        ):
            raise bad("model.head_size takes positive integers (type int or integer choices)")
        return
    section, name = param.target.split(".", 1)
    want = field_type(SECTIONS[section], name)
    if param.type == "bool" and want is not bool:
        raise bad(f"type bool does not fit {param.target}, which holds {want.__name__} values")
    if param.type == "int" and want not in (int, float):
        raise bad(f"type int does not fit {param.target}, which holds {want.__name__} values")
    if param.type == "float" and want is not float:
        raise bad(f"type float does not fit {param.target}, which holds {want.__name__} values; use int")
    if param.type == "categorical":
        for c in param.choices:
            ok = (
                (c is None and field_optional(SECTIONS[section], name))
                or (want is bool and isinstance(c, bool))
                or (want is int and _is_int(c))
                or (want is float and _is_number(c))
                or (want is str and isinstance(c, str))
            )
            if not ok:
                raise bad(f"choice {c!r} does not fit {param.target}, which holds {want.__name__} values")


def _config_complaint(target: str, value: Any) -> Optional[str]:
    """What the config classes say about ``target = value`` alone, or None when they accept it.

    The fields it depends on are made to fit (d_model for num_heads, lr for min_lr), so only the
    value itself is judged: a combination is the space's business (``check_heads``), not this check's.
    """
    overrides: dict[str, Any] = {target: value}
    if target == "model.num_heads" and _is_int(value) and value >= 1:
        overrides["model.d_model"] = value
    elif target == "model.d_model":
        overrides["model.num_heads"] = 1
    elif target == "train.min_lr":
        overrides["train.lr"] = math.nextafter(10.0, 0.0)  # the largest lr the config allows
    elif target == "model.zero_init_output" and value is True:
        overrides["model.tie_weights"] = False  # the pair is check_combinations' business
    try:
        apply_overrides(overrides)
    except WordformerError as exc:
        return str(exc)
    return None


def _check_config_values(param: Param, bad: Any) -> None:
    """Refuse bounds or choices the config would reject, so they fail here and not as failing trials."""
    if param.target == HEAD_SIZE:
        return
    if param.type in ("categorical", "bool"):
        for choice in param.choices:
            complaint = _config_complaint(param.target, choice)
            if complaint:
                raise bad(f"choice {choice!r} is refused by the config ({complaint}); remove it")
        return
    high = param.high
    if param.step is not None:  # the largest value on the grid low + k*step
        if param.type == "int":
            high = int(param.low) + (int(param.high) - int(param.low)) // int(param.step) * int(param.step)
        else:
            high = round(param.low + math.floor((param.high - param.low) / param.step + 1e-9) * param.step, 12)
    for key, raw in (("low", param.low), ("high", high)):
        complaint = _config_complaint(param.target, param.to_value(raw))
        if complaint:
            shown = f"{key}={raw}" + (f" (2**{raw} = {param.to_value(raw)})" if param.transform == "power_2" else "")
            raise bad(f"{shown} is refused by the config ({complaint}); narrow the range")


def _parse_fixed(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise WordformerError(f"{where}: 'fixed' must map section.field to a value, got {raw!r}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        target = _check_target(f"fixed.{key}", key, where)
        complaint = None if target == HEAD_SIZE else _config_complaint(target, value)
        if complaint:
            raise WordformerError(f"{where}: fixed {target}: {value!r} is refused by the config ({complaint})")
        out[target] = value
    return out


def parse_space(data: Any, *, source: str = "<memory>") -> SearchSpace:
    """Build a :class:`SearchSpace` from parsed YAML, refusing every malformed entry by name."""
    if not isinstance(data, dict):
        raise WordformerError(f"{source}: a search space must be a mapping with 'params', got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - set(TOP_KEYS))
    if unknown:
        raise WordformerError(
            f"{source}: unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(TOP_KEYS)}"
        )
    entries = data.get("params")
    if not isinstance(entries, dict) or not entries:
        raise WordformerError(f"{source}: 'params' must be a non-empty mapping of parameter name to entry")
    params = []
    for name, entry in entries.items():
        if not isinstance(name, str) or not name:
            raise WordformerError(f"{source}: parameter name {name!r} must be a non-empty string")
        params.append(_parse_param(name, entry, source))
    seen: dict[str, str] = {}
    for p in params:
        if p.target in seen:
            raise WordformerError(
                f"{source}: entries '{seen[p.target]}' and '{p.name}' both target {p.target}; keep one"
            )
        seen[p.target] = p.name
    if HEAD_SIZE in seen and "model.d_model" in seen:
        raise WordformerError(
            f"{source}: entry '{seen[HEAD_SIZE]}' (head_size) and '{seen['model.d_model']}' (d_model) both set "
            f"the width; keep one (with head_size, d_model = num_heads * head_size)"
        )
    fixed = _parse_fixed(data.get("fixed"), source)
    for target in fixed:
        if target in seen:
            raise WordformerError(f"{source}: {target} is both fixed and tuned by entry '{seen[target]}'; keep one")
    space = SearchSpace(params=tuple(params), fixed=fixed, source=source)
    space.check_heads()
    return space


BUILTIN_SPACES = {"default": "default_space.yaml", "recipe": "recipe_space.yaml"}  # --space NAME, beside this module


def load_space(path: Optional[str | Path] = None) -> SearchSpace:
    """Read a space file, or a built-in space: the default one when ``path`` is None, ``"recipe"`` for the recipe
    options of issue 15 (``recipe_space.yaml``), unless a file of that name exists."""
    if path is None or (str(path) in BUILTIN_SPACES and not Path(path).is_file()):
        source = BUILTIN_SPACES[str(path or "default")]
        text = resources.files("wordformer.tune").joinpath(source).read_text(encoding="utf-8")
    else:
        p = Path(path)
        if not p.is_file():
            raise WordformerError(f"search space file {p} not found; pass an existing .yaml file to --space")
        text = p.read_text(encoding="utf-8")
        source = str(p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise WordformerError(f"{source}: invalid YAML{at}: {problem}") from None
    return parse_space(data, source=source)


def space_from_dict(data: Mapping[str, Any], *, source: str = "<stored space>") -> SearchSpace:
    """Re-create a space stored with a study (see :meth:`SearchSpace.as_dict`)."""
    return parse_space(dict(data), source=source)


def sample_configs(
    space: SearchSpace,
    n: int,
    seed: int = 0,
    model: Optional[ModelConfig] = None,
    data: Optional[DataConfig] = None,
    train: Optional[TrainConfig] = None,
) -> list[tuple[ModelConfig, DataConfig, TrainConfig]]:
    """Draw ``n`` random configurations without a study, to check a space by construction."""
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.configs(space.suggest(trial), model, data, train))
        study.tell(trial, 0.0)
    return out


__all__: Sequence[str] = (
    "HEAD_SIZE", "Param", "SearchSpace", "apply_overrides", "load_space", "parse_space", "power_2",
    "sample_configs", "space_from_dict",
)
