"""Bare cells of ``synthetic-matrix``: a trial's stages (train A and B, connect, probe) run in this process,
no Ray and no MLflow, one torch thread (what a 1-CPU trial gets), printing each cell's wall and CPU seconds
and the stage times the trial records (``trial/*_s``). ``--profile FILE`` writes a cProfile of the last
cell, e.g. to see where the probe stage of a 4x250 MLP cell goes.

To compare two checkouts on a shared machine, run this script alternately from each (``PYTHONPATH`` set to
the checkout) and compare the CPU seconds, which the load moves far less than the wall seconds:

    PYTHONPATH=. python3 bench/matrix_cells.py --model 4x250 --model 1x50 --model 4x100
    PYTHONPATH=. python3 bench/matrix_cells.py --model 4x250 --profile /tmp/cell.prof
    PYTHONPATH=. python3 bench/matrix_cells.py --model 1x50 --repeat 3 --override study.cell_figures=false

Needs the full install (the trial's modules import mlflow): run it in the project's .venv.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import tempfile
import time
from pathlib import Path

import torch


def parse_model(text: str) -> tuple[int, int]:
    """``"4x250"`` -> ``(depth 4, width 250)``."""
    depth, _, width = text.partition("x")
    if not (depth.isdigit() and width.isdigit()):
        raise argparse.ArgumentTypeError(f"--model: expected DEPTHxWIDTH such as 4x250, got {text!r}")
    return int(depth), int(width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=parse_model, action="append", help="DEPTHxWIDTH (repeatable; default 4x250)")
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of the last cell here")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every cell (repeatable), e.g. study.cell_figures=false",
    )
    parser.add_argument("--repeat", type=int, default=1, help="run each cell this many times (interleaved)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from pipelines.config import expand_matrix, load_config
    from pipelines.trial import StageLog, run_stages, work_dir
    from tracking.bundle import Bundle

    # the optimizer's learning rate as the preset's matrix sets it
    trains = load_config("synthetic-matrix").study.matrix["train"]
    lr = next(e["lr"] for e in trains if e["optimizer"] == args.optimizer)
    for depth, width in [m for _ in range(max(1, args.repeat)) for m in args.model or [(4, 250)]]:
        with tempfile.TemporaryDirectory() as out:
            cfg = load_config(
                "synthetic-matrix",
                [
                    f"output_dir={out}",
                    json.dumps({"depth": depth, "width": width}).join(('study.matrix={"model": [', "]}")),
                    f"train.optimizer={args.optimizer}",
                    f"train.lr={lr}",
                    "model.activation=relu",
                    "data.name=moons",
                    *args.override,
                ],
            )
            cell = expand_matrix(cfg)[0]
            wd = work_dir(Path(out), cfg.name, cell.name, cell.config)
            wd.mkdir(parents=True, exist_ok=True)
            bundle = Bundle(wd / "bundle")
            prof = cProfile.Profile() if args.profile else None
            t0, c0 = time.perf_counter(), time.process_time()
            if prof:
                prof.enable()
            run_stages(cell.config, cell.name, wd, bundle, StageLog(wd / "stages.json"))
            if prof:
                prof.disable()
                prof.dump_stats(args.profile)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            stages = {k.split("/", 1)[1]: round(v, 2) for k, v in bundle.metrics().items() if k.startswith("trial/")}
            figures = len(list((wd / "bundle").rglob("*.png")))
            print(f"{cell.name:<24} wall {wall:6.1f} s  cpu {cpu:6.1f} s  {figures:2d} PNGs  {stages}", flush=True)


if __name__ == "__main__":
    main()
