"""Step ``train``: train the endpoints (every seed in ``train.seeds``) of every cell of a preset.

Writes, per cell and seed, ``init.pt`` / ``final.pt`` checkpoints and ``metrics.json`` (per-epoch history
and final train/test loss and accuracy) under ``<output_dir>/<preset>/<cell>/``. A rerun resumes
unfinished training and does not retrain finished endpoints.

Each cell is also one MLflow run (experiment = the preset's name, tag ``lgeom.stage=train``, the cell's
config as params): endpoints ``a``, ``b``, ... (seeds in order) get final metrics ``a.test_acc`` ...,
their per-epoch history as series ``train/a/<column>`` (step = epoch) and their weights as MLflow
PyTorch models ``a``, ``b``. Runs go to ``$MLFLOW_TRACKING_URI`` or the embedded ``./mlflow.db``; a cell
already logged FINISHED with the same config hash is not logged again; ``--no-tracking`` skips MLflow.

    lgeom train --preset quick train.lr=0.05
    mlflow run . -e train -P preset=quick -P overrides="train.epochs=5" --env-manager local
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from lgeom import names
from lgeom.params import count_params
from pipelines.common import applicable_params, cell_dir, load_splits, plugin_tags, train_endpoint
from pipelines.config import Cell, Config, config_hash, expand_matrix
from pipelines.guards import check_writable_dir
from tracking.bundle import write_json
from tracking.runs import ensure_experiment, find_finished_run, run_tags, tracked_run
from tracking.steps import log_train_result
from tracking.store import connect


def main(
    cfg: Config,
    *,
    cell: str | None = None,
    progress: bool = True,
    track: bool = True,
    store: Any = None,
) -> list[dict[str, Any]]:
    """Train every endpoint of ``cfg`` (or of its cell named ``cell``); returns one summary per endpoint.

    With ``track`` each cell is logged as an MLflow run in ``store`` (default: resolved from the
    environment and health-checked first); the summaries then carry its ``run_id``.

    Raises:
        tracking.store.StoreUnavailableError: tracking is on and the store does not answer.
        ValueError: ``output_dir`` cannot be written (found before anything is trained or logged).
    """
    cells = select_cells(cfg, cell)
    check_writable_dir(cfg.output_dir, "output_dir")
    if track and store is None:
        store = connect()
    summaries = []
    for c in cells:
        splits = load_splits(c.config)
        with _cell_run(store if track else None, cfg, c) as run:
            for index, seed in enumerate(c.config.train.seeds):
                model, result, ckpt = train_endpoint(c.config, seed, splits, cell_dir(cfg, c.name), progress=progress)
                summary = {
                    "cell": c.name,
                    "seed": seed,
                    "n_params": count_params(model),
                    "final": {k: vars(v) for k, v in result.final.items()},
                    "history": result.history.to_dict(),
                    "samples_per_s": result.samples_per_s,
                    "checkpoint": str(ckpt / "final.pt"),
                    "config": c.config.to_dict(),
                }
                if run is not None:
                    log_train_result(run, names.endpoint_name(index), model, result)
                    summary["run_id"] = run.run_id
                write_json(ckpt / "metrics.json", summary)
                summaries.append(summary)
                print(
                    f"{c.name} seed {seed}: train acc {result.final['train'].acc:.2f}%  "
                    f"test acc {result.final['test'].acc:.2f}%  -> {ckpt}"
                )
        if run is not None:
            print(f"{c.name}: logged to MLflow run {run.run_id} ({store.describe()})")
    return summaries


@contextlib.contextmanager
def _cell_run(store: Any, cfg: Config, cell: Cell) -> Any:
    """The MLflow run of one cell (None when not tracking or already logged FINISHED)."""
    if store is None:
        yield None
        return
    exp_id = ensure_experiment(store, cfg.name)
    h = config_hash(cell.config)
    done = find_finished_run(store, exp_id, h, stage=names.STAGE_TRAIN, cell=cell.name)
    if done is not None:
        print(f"{cell.name}: already logged to MLflow run {done.info.run_id}; not logging again")
        yield None
        return
    tags = run_tags(
        study=cfg.name, stage=names.STAGE_TRAIN, cell=cell.name, config_hash=h, extra=plugin_tags(cell.config)
    )
    with tracked_run(
        store,
        experiment_id=exp_id,
        run_name=f"train:{cell.name}",
        tags=tags,
        params=applicable_params(cell.config.flat()),
        adopt_project_run=True,
    ) as run:
        yield run


def select_cells(cfg: Config, cell: str | None) -> list[Any]:
    """All cells of ``cfg``'s matrix, or the one named ``cell``.

    Raises:
        ValueError: no cell has that name (lists the names).
    """
    cells = expand_matrix(cfg)
    if cell is None:
        return cells
    chosen = [c for c in cells if c.name == cell]
    if not chosen:
        raise ValueError(f"cell: expected one of {', '.join(c.name for c in cells)}, got {cell!r}")
    return chosen


def add_arguments(parser: Any, step: str) -> None:
    """``--no-tracking``: train and write local outputs only, without MLflow."""
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow (local outputs only)")


def cli(cfg: Config, args: Any) -> int:
    """``lgeom train``: train, log and report; exit status 0 (1 if the tracking store is unreachable, see cli)."""
    main(cfg, cell=args.cell, progress=not args.no_progress, track=not args.no_tracking)
    return 0


if __name__ == "__main__":
    from pipelines.cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))
