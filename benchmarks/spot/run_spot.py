"""One SPOT run of ``benchmarks/bench_spot.py``: ``spotpython.spot.Spot`` tuning wordformer training runs.

Runs in SPOT's own virtual environment (``benchmarks/spot/.venv``, made by bench_spot.py) and in its own
working folder: importing ``spotpython.spot`` seeds every random generator, switches multiprocessing to
"spawn" and opens log files in the current directory, none of which may touch the benchmark process.

    benchmarks/spot/.venv/bin/python benchmarks/spot/run_spot.py JOB.json

The search space is wordformer's (``benchmarks/spot/space.yaml``) translated into SPOT's terms:

* a float is a SPOT ``float``; a log-scaled one (the learning rate) is tuned as its base-10 exponent and
  turned back with spotpython's own ``transform_power_10``, as the cookbook tunes learning rates;
* an integer is a SPOT ``int``; a ``power_2`` one is tuned as its exponent and becomes ``2**x`` when the
  trial is built (spotpython's ``transform_power_2_int``; checked equal below);
* a categorical (or bool) is a SPOT ``factor`` with levels 0..n-1; its Kriging distance is the ``hamming``
  metric (``surrogate_control_init(metric_factorial="hamming")``).

SPOT keeps its documented defaults otherwise (Kriging, method "regression", Gaussian kernel, differential
evolution for the likelihood and the infill), with expected improvement as infill criterion and a Latin
hypercube initial design of ``init_size`` points counted in the budget of ``trials`` evaluations.

spotpython imports torchvision at module level (``spotpython.utils.file``) for its MNIST helpers, and PyPI's
torchvision does not load beside the CPU build of torch that both tools use here, so SPOT's environment has
none (bench_spot.py uninstalls it) and this process gives spotpython a stand-in module instead. It is put in
``sys.modules`` only after torch, Lightning and wordformer are imported, so none of them mistakes it for a
real torchvision; any use of it raises.
"""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import job as jobs  # noqa: E402  (this folder, not a package: the script runs in another environment)


class _MissingTorchvision(types.ModuleType):
    """What ``import torchvision`` gives spotpython here: importable, unusable."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(f"torchvision.{name}: torchvision is a stand-in in bench_spot's SPOT runner "
                          "(PyPI's torchvision does not load beside CPU torch); nothing here needs it")


def install_torchvision_stand_in() -> None:
    if "torchvision" in sys.modules:
        return
    root = _MissingTorchvision("torchvision")
    root.__path__ = []  # a package, so that `import torchvision.transforms` works
    for sub in ("transforms", "datasets", "models", "io", "ops", "utils"):
        module = _MissingTorchvision(f"torchvision.{sub}")
        setattr(root, sub, module)
        sys.modules[f"torchvision.{sub}"] = module
    sys.modules["torchvision"] = root


def spot_space(space: Any) -> tuple[list[str], list[float], list[float], list[str], Callable[[Any], dict[str, Any]]]:
    """SPOT's names, bounds and types for a wordformer space, and the decoder from a SPOT point to raw values."""
    from spotpython.utils.transform import transform_power_2_int, transform_power_10

    from wordformer.tune.space import power_2

    names, lower, upper, kinds, decoders = [], [], [], [], []
    for p in space.params:
        names.append(p.name)
        if p.type == "float":
            if p.step is not None:
                raise SystemExit(f"run_spot: float {p.name} has a step; SPOT tunes continuous floats here")
            if p.log:
                lower.append(math.log10(p.low))
                upper.append(math.log10(p.high))
                decoders.append(lambda x: float(transform_power_10(float(x))))
            else:
                lower.append(float(p.low))
                upper.append(float(p.high))
                decoders.append(lambda x: float(x))
            kinds.append("float")
        elif p.type == "int":
            if p.log or (p.step is not None and p.step != 1):
                raise SystemExit(f"run_spot: int {p.name} has log or a step; not translated to SPOT")
            lower.append(float(p.low))
            upper.append(float(p.high))
            kinds.append("int")
            if p.transform == "power_2":  # the space applies it; SPOT's own transform gives the same values
                for x in range(int(p.low), int(p.high) + 1):
                    assert transform_power_2_int(x) == power_2(x), (x, transform_power_2_int(x), power_2(x))
            decoders.append(lambda x: int(round(float(x))))
        else:
            levels = list(p.choices)
            lower.append(0.0)
            upper.append(float(len(levels) - 1))
            kinds.append("factor")
            decoders.append(lambda x, levels=levels: levels[int(round(float(x)))])

    def decode(row: Any) -> dict[str, Any]:
        return {name: dec(x) for name, dec, x in zip(names, decoders, row)}

    return names, lower, upper, kinds, decode


def main(argv: list[str]) -> int:
    job = jobs.read_job(argv)
    jobs.setup(job)
    import numpy as np

    from wordformer.errors import WordformerError
    from wordformer.training import train as train_fn

    if job["case"] == "check":
        install_torchvision_stand_in()
        import spotpython  # noqa: F401  (the check runs beside spotpython, as the trials do)

        jobs.write_result(job, {"check": jobs.check_run(job, "spot"), "versions": jobs.versions("spotpython")})
        return 0

    install_torchvision_stand_in()
    from spotpython.spot import Spot
    from spotpython.utils.init import design_control_init, fun_control_init, surrogate_control_init

    space, base_model, base_data, base_train = jobs.space_and_bases(job)
    names, lower, upper, kinds, decode = spot_space(space)
    work = Path(job["work"])
    log = jobs.TrialLog()
    timed_train = log.timed(train_fn)
    trials: list[dict[str, Any]] = []

    def fun(X: Any, fun_control: Any = None) -> Any:
        """SPOT's objective: one wordformer training run per row of X; its best validation loss."""
        values = []
        for row in np.atleast_2d(X):
            number = len(trials)
            raw = decode(row)
            model, data, train = space.configs(raw, base_model, base_data, base_train)
            record: dict[str, Any] = {"number": number, "params": raw, "config": jobs.flat_config(model, train)}
            try:
                result = timed_train(model, data, train, work / f"trial_{number:04d}", overwrite=True, logger=False)
                value = float(result.val_loss)
                record.update(log.rows[-1])
            except WordformerError as exc:  # e.g. a diverged run: SPOT drops NaN values
                value = math.nan
                record.update(log.rows[-1])
                record["fail_reason"] = str(exc).splitlines()[0]
            record["value"] = jobs.finite(value)
            record["state"] = "COMPLETE" if record["value"] is not None else "FAIL"
            trials.append(record)
            print(f"[run_spot] seed {job['seed']} trial {number:2d} val_loss {value:.4f} "
                  f"({record['train_s']:.1f} s, t={log.now():.0f} s)", file=sys.stderr, flush=True)
            values.append(value)
        return np.array(values, dtype=float)

    fun_control = fun_control_init(
        lower=np.array(lower), upper=np.array(upper), var_type=kinds, var_name=names,
        fun_evals=int(job["trials"]), max_time=math.inf, seed=int(job["seed"]), infill_criterion="ei",
        show_progress=False, tensorboard_log=False, save_result=False, save_experiment=False,
        PREFIX=f"spot_seed{job['seed']}", verbosity=0, log_level=50,
    )
    design_control = design_control_init(init_size=int(job["init_size"]))
    surrogate_control = surrogate_control_init(metric_factorial="hamming")
    log.start()
    spot = Spot(fun=fun, fun_control=fun_control, design_control=design_control, surrogate_control=surrogate_control)
    spot.run()
    wall_s = log.now()
    try:
        importance = dict(zip(spot.var_name, (float(v) for v in spot.get_importance())))
    except Exception as exc:  # importances are a bonus; the run's figures must not depend on them
        importance = {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    jobs.write_result(job, {
        "case": job["case"], "seed": job["seed"], "wall_s": wall_s, "trials": trials,
        "spot": {"min_y": jobs.finite(spot.min_y), "min_X": decode(spot.min_X), "evaluations": int(spot.counter),
                 "var_type": kinds, "lower": lower, "upper": upper, "importance": importance,
                 "surrogate": type(spot.surrogate).__name__, "metric_factorial": spot.surrogate.metric_factorial,
                 "infill_criterion": spot.infill_criterion, "init_size": int(job["init_size"])},
        "versions": jobs.versions("spotpython"),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
