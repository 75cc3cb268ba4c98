"""The names a study can be configured with. Kept apart from :mod:`.study` (which imports Optuna) so the
command line can offer them without importing anything heavy."""

METRICS: dict[str, str] = {"val_loss": "minimize", "val_ppl": "minimize", "val_acc": "maximize"}
DIRECTIONS = ("minimize", "maximize")
SAMPLERS = ("tpe", "gp", "random", "qmc", "grid", "cmaes")
PRUNERS = ("median", "hyperband", "none")
