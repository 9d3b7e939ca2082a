"""Study overhead: what Ray Tune orchestration and MLflow tracking add to each trial.

The four cells of the quick preset, sized so that a trial computes for 30-60 s, are run twice in this
process, one after the other on the same machine:

* **bare** — the trial's stages (train A and B, connect, probe) called directly, no Ray, no MLflow;
* **study** — ``lgeom study`` on the embedded MLflow store and a local Ray, one trial at a time
  (``study.max_concurrent=1``) so both runs see the same load.

Overhead per trial = the trial's wall time minus its compute (MLflow child run, logging and verifying every
metric, series, model and artifact) plus Tune's scheduling gap between trials, as a fraction of the trial
time (the tracking inside each trial is also printed per trial, with its median). Fixed costs paid once per
study (Ray start, Tune set-up, the parent run, the report and its figures) are reported apart, since they do
not grow with the number of trials. Target: <= 5 % of the quick preset's trials.

    PYTHONPATH=. python3 bench/study_overhead.py [--epochs 200] [--curve-epochs 100]

``--epochs 30 --curve-epochs 20`` gives the quick preset's own trial length.

Needs the full install (mlflow, ray): run it in the project's .venv.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def bare_compute(cfg, cells, root: Path) -> list[float]:
    """Seconds each cell's stages take without orchestration or tracking."""
    from pipelines.trial import StageLog, run_stages, work_dir
    from tracking.bundle import Bundle

    times = []
    for cell in cells:
        wd = work_dir(root, cfg.name, cell.name, cell.config)
        wd.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        run_stages(cell.config, cell.name, wd, Bundle(wd / "bundle"), StageLog(wd / "stages.json"))
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=200, help="endpoint training epochs (sets the trial length)")
    parser.add_argument("--curve-epochs", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    torch.set_num_threads(1)  # what a 1-CPU trial gets

    from pipelines.config import expand_matrix, load_config
    from pipelines.study import main as run_study

    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs; torch {torch.__version__}")
    overrides = [
        f"train.epochs={args.epochs}",
        f"curve.epochs={args.curve_epochs}",
        "study.max_concurrent=1",
        'study.matrix={"model.width": [16, 64], '
        '"train": [{"optimizer": "sgd", "lr": 0.05}, {"optimizer": "adam", "lr": 0.005}]}',
    ]
    with tempfile.TemporaryDirectory() as bare_dir, tempfile.TemporaryDirectory() as study_dir:
        cfg = load_config("quick", overrides + [f"output_dir={bare_dir}"])
        cells = expand_matrix(cfg)
        bare = bare_compute(cfg, cells, Path(bare_dir))
        for c, t in zip(cells, bare):
            print(f"bare   {c.name:<22} {t:7.1f} s")
        cwd = os.getcwd()
        os.chdir(study_dir)
        try:
            cfg = load_config("quick", overrides + [f"output_dir={study_dir}/outputs"])
            t0 = time.perf_counter()
            summary = run_study(cfg)
            wall = time.perf_counter() - t0
        finally:
            os.chdir(cwd)
    n = len(cells)
    trials = sorted(summary.trials, key=lambda t: t.get("started_at", 0))
    computes = [t.get("compute_s", 0.0) for t in trials]
    in_trial = [t.get("wall_time_s", 0.0) - t.get("compute_s", 0.0) for t in trials]
    gaps = [b["started_at"] - a["ended_at"] for a, b in zip(trials, trials[1:])]
    span = trials[-1]["ended_at"] - trials[0]["started_at"]
    fixed = wall - span
    per_trial = sum(in_trial) / n + (sum(gaps) / len(gaps) if gaps else 0.0)
    trial_time = sum(bare) / n
    print(
        f"study  wall {wall:.1f} s for {n} trials (one at a time); "
        f"in-trial compute {sum(computes):.1f} s (bare {sum(bare):.1f} s)"
    )
    print(
        f"per trial: tracking inside the trial {sum(in_trial) / n:.2f} s "
        f"(child run, params, metrics, series, endpoint models, artifacts, upload verification), "
        f"Tune scheduling gap between trials {sum(gaps) / max(len(gaps), 1):.2f} s"
    )
    print(
        f"per study (fixed): {fixed:.1f} s "
        "(MLflow health check, Ray start/stop, Tune set-up, parent run, report + figures)"
    )
    print(
        f"overhead per trial {per_trial:.2f} s on {trial_time:.1f} s trials = {100 * per_trial / trial_time:.1f} % "
        f"-> {100 * per_trial / 60:.1f} % of a 60 s trial; fixed per study {fixed:.1f} s "
        f"= {100 * fixed / (n * trial_time):.1f} % of this study, {100 * fixed / (n * 60):.1f} % of {n} x 60 s trials"
    )
    print(f"study wall / bare compute: {wall / sum(bare):.3f}")
    med_track, med_trial = statistics.median(in_trial), statistics.median(bare)
    print(
        "tracking inside each trial: "
        + ", ".join(f"{x:.2f}" for x in in_trial)
        + f" s; median {med_track:.2f} s = {100 * med_track / med_trial:.1f} % of the median bare trial "
        f"({med_trial:.1f} s), {100 * med_track / statistics.median(t['wall_time_s'] for t in trials):.1f} % "
        "of the median trial wall time"
    )


if __name__ == "__main__":
    main()
