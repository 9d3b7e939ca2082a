"""The child run as a lab notebook: a real ``lgeom study`` in a subprocess (local Ray, embedded MLflow) run
from a git working tree, polled with ``MlflowClient`` while its trial is RUNNING — per-epoch series and the
current stage appear before the run ends, and the finished run has every epoch once and the progress tag of its
long loops (whose lines per 10% are in the study's log) — then its provenance
(git commit, dataset input, system metrics, descriptions, entry point, applicable params only).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lgeom import names
from lgeom.progress import LONG_TASKS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CELL = "mlp2x16/moons/sgd"
EPOCHS = 150


def _client(cwd: Path) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


def _child(client: Any) -> Any | None:
    exp = client.get_experiment_by_name("quick-tiny")
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], f"tags.`{names.TAG_STAGE}` = '{names.STAGE_TRIAL}'")
    return runs[0] if runs else None


def test_epoch_series_are_visible_while_the_trial_runs(tmp_path: Path) -> None:
    # every long loop's lines from its start (by default a loop shorter than 5 s, as all are here, writes none)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1", "LGEOM_PROGRESS_AFTER_S": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "notes.txt").write_text("lab notebook\n")
    subprocess.run([*git, "add", "notes.txt"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "start"], cwd=tmp_path, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, check=True, capture_output=True, text=True
    ).stdout.strip()
    _client(
        tmp_path
    ).search_experiments()  # create the store's tables first: polling must not race the study's migration
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "study",
            "--preset",
            "quick-tiny",
            "--cell",
            CELL,
            f"train.epochs={EPOCHS}",
            "train.eval_every=1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen_live: list[int] = []
    stage_live = None
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            client = _client(tmp_path)
            run = _child(client)
            if run is None or run.info.status != "RUNNING":
                continue
            history = client.get_metric_history(run.info.run_id, names.history_metric("a", "train_loss"))
            if len(history) >= 2:
                seen_live = [m.step for m in history]
                stage_live = client.get_run(run.info.run_id).data.tags.get(names.TAG_CURRENT_STAGE)
                break
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(seen_live) >= 2, "no live train/a/loss history seen while the trial was RUNNING:\n" + (out or "")[-3000:]
    assert stage_live == names.STAGE_TRAIN
    assert proc.returncode == 0, out[-3000:]
    client = _client(tmp_path)
    run = _child(client)
    assert run.info.status == "FINISHED" and run.data.tags[names.TAG_CURRENT_STAGE] == "done"
    # The long loops (planes, path evaluations, probes) kept the progress tag up to date while the trial ran; the
    # last one left it at 100%. In the Ray log each of them wrote a line per 10%.
    assert re.fullmatch(rf"({'|'.join(LONG_TASKS)})( \S+)? 100%", run.data.tags[names.TAG_PROGRESS]), run.data.tags
    for line in (f"[{CELL}] plane bezier: started", f"[{CELL}] plane bezier: 100%", f"[{CELL}] path linear: 100%"):
        assert line in out, out[-3000:]
    for endpoint in names.ENDPOINTS:
        steps = [
            m.step for m in client.get_metric_history(run.info.run_id, names.history_metric(endpoint, "train_loss"))
        ]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), endpoint  # every epoch once, no duplicates
        test_acc = client.get_metric_history(run.info.run_id, names.history_metric(endpoint, "test_acc"))
        assert len(test_acc) == EPOCHS
    # quick-tiny inherits quick's train.track_hessian_every=3: lambda_max every 3 epochs, 2/lr for SGD, a figure
    lam = client.get_metric_history(run.info.run_id, names.history_metric("a", "lambda_max"))
    assert sorted(m.step for m in lam) == list(range(3, EPOCHS + 1, 3))
    assert len(client.get_metric_history(run.info.run_id, names.history_metric("a", "two_over_lr"))) == len(lam)
    assert names.figure_artifact("train_sharpness") in {
        f.path for f in client.list_artifacts(run.info.run_id, names.FIGURES_DIR)
    }
    fit = client.get_metric_history(run.info.run_id, names.fit_history_metric("bezier", "loss"))
    assert len(fit) >= 2 and sorted(m.step for m in fit) == list(range(1, len(fit) + 1))

    # provenance
    tags = run.data.tags
    assert tags[names.TAG_GIT_COMMIT] == head and tags[names.TAG_GIT_DIRTY] == "false"
    assert tags[names.TAG_SOURCE_NAME] == "lgeom study" and CELL in tags[names.TAG_NOTE]
    assert tags[names.TAG_PID].isdigit() and names.TAG_HOST in tags
    inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["moons"]
    assert '"train": 200' in inputs[0].dataset.profile and '"test": 200' in inputs[0].dataset.profile
    assert any(k.startswith("system/") for k in run.data.metrics), sorted(run.data.metrics)[:20]
    params = run.data.params
    assert "train.momentum" in params and "train.betas" not in params and "None" not in params.values()
    parent = client.get_run(tags[names.TAG_PARENT])
    assert parent.data.tags[names.TAG_GIT_COMMIT] == head and "report/report.html" in parent.data.tags[names.TAG_NOTE]
    experiment = client.get_experiment(run.info.experiment_id)
    assert "quick-tiny" in experiment.tags[names.TAG_NOTE]
