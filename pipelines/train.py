"""Step ``train``: train the endpoints (every seed in ``train.seeds``) of every cell of a preset.

Writes, per cell and seed, ``init.pt`` / ``final.pt`` checkpoints and ``metrics.json`` (per-epoch history
and final train/test loss and accuracy) under ``<output_dir>/<preset>/<cell>/``. A rerun resumes
unfinished training and does not retrain finished endpoints.

    lgeom train --preset quick train.lr=0.05
    mlflow run . -e train -P preset=quick -P overrides="train.epochs=5" --env-manager local
"""

from __future__ import annotations

import sys
from typing import Any

from lgeom.params import count_params
from pipelines.common import cell_dir, load_splits, train_endpoint, write_json
from pipelines.config import Config, expand_matrix


def main(cfg: Config, *, cell: str | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Train every endpoint of ``cfg`` (or of its cell named ``cell``); returns one summary per endpoint."""
    cells = select_cells(cfg, cell)
    summaries = []
    for c in cells:
        splits = load_splits(c.config)
        for seed in c.config.train.seeds:
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
            write_json(ckpt / "metrics.json", summary)
            summaries.append(summary)
            print(
                f"{c.name} seed {seed}: train acc {result.final['train'].acc:.2f}%  "
                f"test acc {result.final['test'].acc:.2f}%  -> {ckpt}"
            )
    return summaries


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
    """No options beyond the preset ones."""


def cli(cfg: Config, args: Any) -> int:
    """``lgeom train``: train and report; exit status 0."""
    main(cfg, cell=args.cell, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    from pipelines.cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))
