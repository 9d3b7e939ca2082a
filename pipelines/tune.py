"""Step ``tune``: Optuna search (through Ray Tune, with ASHA early stopping) over one cell's training
hyperparameters — learning rate, weight decay, batch size — maximising test accuracy.

The best configuration is logged to MLflow (a ``tune`` run in the study's experiment, one child run per
trial) and written as a preset override file that ``lgeom study`` accepts:

    lgeom tune --preset quick --cell mlp2x16/moons/sgd --num-samples 16
    lgeom study --preset outputs/quick/tuned-mlp2x16-moons-sgd.yaml
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lgeom import names
from lgeom.progress import ProgressEvent
from pipelines.common import applicable_params, load_splits, plugin_modules, train_endpoint, trial_settings
from pipelines.config import Cell, Config, config_from_dict, config_hash, expand_matrix
from pipelines.ray_runtime import hidden_credentials, ray_session
from tracking.steps import log_tune_results

# ray (and optuna through it) is imported inside the functions that run the search: importing it takes
# seconds, and every ``lgeom`` command imports this module to build its parser.

TUNED_KEYS = ("lr", "weight_decay", "batch_size")
# What each trial reports to Ray Tune (lgeom.train's epoch metrics) and what the tune runs log (lgeom.names).
_TEST_ACC, _TEST_LOSS, _TRAIN_LOSS = (
    names.split_column("test", "acc"),
    names.split_column("test", "loss"),
    names.split_column("train", "loss"),
)
_TRIAL_ACC, _TRIAL_EPOCHS = names.TUNE_TRIAL_METRICS


@dataclass(frozen=True)
class SearchSpace:
    """Bounds of the search: log-uniform lr and weight decay (0 included as a choice), batch-size choices."""

    lr_min: float = 1e-3
    lr_max: float = 0.3
    wd_min: float = 1e-6
    wd_max: float = 1e-2
    batch_sizes: tuple[int, ...] = (32, 64, 128, 256)

    def problems(self) -> list[str]:
        """Every invalid bound (empty when valid)."""
        out = []
        if not (math.isfinite(self.lr_min) and math.isfinite(self.lr_max) and 0 < self.lr_min < self.lr_max):
            out.append(f"lr range: expected 0 < lr_min < lr_max, got lr_min={self.lr_min!r}, lr_max={self.lr_max!r}")
        if not (math.isfinite(self.wd_min) and math.isfinite(self.wd_max) and 0 < self.wd_min <= self.wd_max):
            out.append(
                f"weight-decay range: expected 0 < wd_min <= wd_max, got wd_min={self.wd_min!r}, wd_max={self.wd_max!r}"
            )
        if not self.batch_sizes or any(b <= 0 for b in self.batch_sizes):
            out.append(f"batch sizes: expected positive integers, got {list(self.batch_sizes)!r}")
        return out


def _tune_trial(config: dict[str, Any], *, base: dict[str, Any]) -> None:
    """One Ray Tune trial: train endpoint A of the cell with the sampled hyperparameters, reporting test
    accuracy after every epoch (ASHA stops weak trials early).
    """
    from ray import tune

    data = {**base, "train": {**base["train"], **{k: config[k] for k in TUNED_KEYS}}}
    cfg = config_from_dict(data)

    def report(event: ProgressEvent) -> None:
        if event.kind == "epoch":
            tune.report(
                {**{k: event.metrics[k] for k in (_TEST_ACC, _TEST_LOSS, _TRAIN_LOSS)}, "epoch": event.epoch + 1}
            )

    train_endpoint(cfg, cfg.train.seeds[0], load_splits(cfg), None, callbacks=[report], progress=False)


def search(
    cfg: Config,
    cell: Cell,
    space: SearchSpace,
    *,
    num_samples: int,
    address: str | None = None,
    storage: Path | None = None,
) -> dict[str, Any]:
    """Run the Optuna + ASHA search for ``cell`` on Ray Tune.

    Returns:
        ``{"best": {lr, weight_decay, batch_size}, "best_test_acc": float, "trials": [per-trial dicts]}``.

    Raises:
        RuntimeError: every trial failed.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    c = cell.config
    param_space = {
        "lr": tune.loguniform(space.lr_min, space.lr_max),
        "weight_decay": tune.loguniform(space.wd_min, space.wd_max),
        "batch_size": tune.choice(list(space.batch_sizes)),
    }
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=c.train.epochs,
        grace_period=max(1, c.train.epochs // 4),
        reduction_factor=2,
    )
    trainable = tune.with_resources(
        tune.with_parameters(_tune_trial, base=trial_settings(c)), {"cpu": c.study.cpu, "gpu": c.study.gpu}
    )
    storage = (storage or Path(c.output_dir) / c.name / "ray").resolve()
    with ray_session(address, py_modules=plugin_modules([c])):
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=_TEST_ACC,
                mode="max",
                search_alg=OptunaSearch(seed=c.train.seeds[0]),
                scheduler=scheduler,
                num_samples=num_samples,
                max_concurrent_trials=c.study.max_concurrent or None,
            ),
            run_config=tune.RunConfig(name=f"tune-{cell.name.replace('/', '-')}", storage_path=str(storage), verbose=1),
        )

        with hidden_credentials():  # Tune would copy AWS_* into each trial's (logged) runtime environment
            results = tuner.fit()
    trials = []
    for r in results:
        row = {k: r.config.get(k) for k in TUNED_KEYS}
        row.update(
            {
                _TRIAL_ACC: (r.metrics or {}).get(_TEST_ACC),
                _TRIAL_EPOCHS: (r.metrics or {}).get("epoch"),
                "error": str(r.error) if r.error else "",
            }
        )
        trials.append(row)
    ok = [t for t in trials if t[_TRIAL_ACC] is not None and not t["error"]]
    if not ok:
        raise RuntimeError(f"tune: every trial failed; first error: {trials[0]['error'] if trials else 'no trials'}")
    best = max(ok, key=lambda t: (t[_TRIAL_ACC], t[_TRIAL_EPOCHS] or 0))
    return {"best": {k: best[k] for k in TUNED_KEYS}, names.TUNE_BEST_METRIC: best[_TRIAL_ACC], "trials": trials}


def tuned_preset(cfg: Config, preset: str, cell: Cell, best: dict[str, Any]) -> dict[str, Any]:
    """A preset override (``base: <preset>``) applying the tuned values to ``cell``'s setting.

    Matrix axes that set a tuned key are narrowed to the tuned cell's value (with the tuned keys replaced),
    so e.g. a per-optimizer learning-rate axis keeps only the tuned optimizer; other axes stay.
    """
    tuned_train = {k: best[k] for k in TUNED_KEYS}
    matrix: dict[str, Any] = {}
    for key, values in cfg.study.matrix.items():
        if key == "train":
            cell_value = dict(cell.values[key])
            matrix[key] = [{**cell_value, **tuned_train}]
        elif key in (f"train.{k}" for k in TUNED_KEYS):
            continue
        else:
            matrix[key] = values
    return {
        "base": preset,
        "name": f"{cfg.name}-tuned",
        "description": f"{cfg.name} with lr, weight decay and batch size tuned on {cell.name}",
        "train": tuned_train,
        "study": {"matrix": matrix},
    }


def add_arguments(parser: Any, step: str) -> None:
    """Search options."""
    parser.add_argument("--num-samples", type=int, default=8, help="number of trials")
    parser.add_argument("--lr-min", type=float, default=1e-3)
    parser.add_argument("--lr-max", type=float, default=0.3)
    parser.add_argument("--wd-min", type=float, default=1e-6)
    parser.add_argument("--wd-max", type=float, default=1e-2)
    parser.add_argument("--batch-sizes", default="32,64,128,256", help="comma-separated choices")
    parser.add_argument("--address", default="", help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    parser.add_argument(
        "--out", default="", help="where to write the tuned preset (default: <output_dir>/<name>/tuned-<cell>.yaml)"
    )


def cli(cfg: Config, args: Any) -> int:
    """``lgeom tune``: validate, search, log, write the override file."""
    try:
        sizes = tuple(int(s) for s in str(args.batch_sizes).split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--batch-sizes: expected comma-separated integers, got {args.batch_sizes!r}") from None
    space = SearchSpace(args.lr_min, args.lr_max, args.wd_min, args.wd_max, sizes)
    problems = space.problems()
    if args.num_samples < 1:
        problems.append(f"--num-samples: expected an integer >= 1, got {args.num_samples!r}")
    if problems:
        raise ValueError("; ".join(problems))
    cells = expand_matrix(cfg)
    if args.cell is None and len(cells) > 1:
        raise ValueError(
            f"--cell: expected one of {', '.join(c.name for c in cells)} (tune works on one cell), got none"
        )
    cell = cells[0] if args.cell is None else next((c for c in cells if c.name == args.cell), None)
    if cell is None:
        raise ValueError(f"--cell: expected one of {', '.join(c.name for c in cells)}, got {args.cell!r}")
    outcome = main(
        cfg,
        args.preset,
        cell,
        space,
        num_samples=args.num_samples,
        address=args.address or None,
        out=Path(args.out) if args.out else None,
    )
    print(f"best on {cell.name}: {outcome['best']} (test acc {outcome[names.TUNE_BEST_METRIC]:.2f}%)")
    print(f"tuned preset: {outcome['path']}\nrun it with: lgeom study --preset {outcome['path']}")
    return 0


def main(
    cfg: Config,
    preset: str,
    cell: Cell,
    space: SearchSpace,
    *,
    num_samples: int,
    address: str | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Search, write the tuned preset and log everything; returns the search outcome plus ``path``."""
    outcome = search(cfg, cell, space, num_samples=num_samples, address=address)
    slug = cell.name.replace("/", "-")
    path = out or Path(cfg.output_dir) / cfg.name / f"tuned-{slug}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    preset_ref = preset if not Path(preset).suffix else str(Path(preset).resolve())
    path.write_text(yaml.safe_dump(tuned_preset(cfg, preset_ref, cell, outcome["best"]), sort_keys=False))
    outcome["path"] = path
    log_tune_results(
        outcome,
        study=cfg.name,
        cell=cell.name,
        config_hash=config_hash(cell.config),
        params=applicable_params(cell.config.flat()),
        preset_path=path,
    )
    return outcome


if __name__ == "__main__":
    from pipelines.cli import main as cli_main

    sys.exit(cli_main(["tune", *sys.argv[1:]]))
