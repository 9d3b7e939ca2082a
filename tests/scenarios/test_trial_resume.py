"""Stage-level resume of one study trial, without Ray: a trial whose ``stages.json`` records ``train`` and
``connect`` (it was killed while probing) resumes at ``probe`` — nothing is retrained or reconnected — and
its child run says which stages it skipped. Real MLflow (embedded sqlite).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from lgeom import names
from lgeom.progress import ProgressEvent
from pipelines.config import expand_matrix, load_config
from pipelines.trial import STAGES, TrialContext, run_cell, work_dir
from tracking.runs import ensure_experiment, start_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CELL = "mlp2x16/moons/sgd"


def _fingerprints(paths: list[Path]) -> dict[Path, tuple[int, str]]:
    return {p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in paths}


def _trial_seconds(store: Any, run_id: str) -> dict[str, float]:
    metrics = store.client().get_run(run_id).data.metrics
    return {k: v for k, v in metrics.items() if k.startswith(names.TRIAL + names.SEP)}


def test_a_trial_killed_after_connect_resumes_at_probe(embedded_store: Any, tmp_path: Path) -> None:
    cfg = load_config("quick-tiny", ["train.epochs=2", "curve.epochs=1", f"output_dir={tmp_path / 'outputs'}"])
    cell = next(c for c in expand_matrix(cfg) if c.name == CELL)
    exp_id = ensure_experiment(embedded_store, cfg.name)
    parent = start_run(embedded_store, experiment_id=exp_id, run_name="study")
    root = work_dir(cfg.output_dir, cfg.name, cell.name, cell.config)
    ctx = TrialContext(cfg.name, cell.name, cell.config.to_dict(), exp_id, parent.run_id, embedded_store, str(root))

    first_events: list[ProgressEvent] = []
    first = run_cell(ctx, callbacks=[first_events.append])
    assert first["status"] == "FINISHED" and first["stages_skipped"] == [], first.get("traceback")
    assert {e.task for e in first_events} >= {"train", "fit_curve", "probes"}
    seconds = _trial_seconds(embedded_store, first["run_id"])
    assert set(seconds) == {names.trial_metric(q) for q in names.TRIAL_TIMES} and all(
        v > 0 for v in seconds.values()
    ), seconds
    parts = seconds["trial/fit_s"] + seconds["trial/path_eval_s"] + seconds["trial/plane_s"]
    assert parts <= seconds["trial/connect_s"]
    stages_s = seconds["trial/train_s"] + seconds["trial/connect_s"] + seconds["trial/probe_s"]
    assert (
        stages_s <= seconds["trial/compute_s"]
        and seconds["trial/compute_s"] + seconds["trial/log_s"] <= seconds["trial/wall_time_s"]
    )

    # The trial was killed while probing: train and connect are recorded, probe and log are not.
    stages_file = root / "stages.json"
    done = json.loads(stages_file.read_text())
    assert list(done) == list(STAGES)
    stages_file.write_text(json.dumps({k: done[k] for k in ("train", "connect")}))
    checkpoints = sorted((root / "endpoints").rglob("*.pt"))
    bundle = root / "bundle"
    connect_outputs = sorted(
        [
            *(bundle / "curves").glob("*.pt"),
            *(bundle / "fits").glob("*.json"),
            *(bundle / "planes").glob("bezier.npz"),
            *(bundle / "planes").glob("polychain.npz"),
            bundle / "alignment.json",
        ]
    )
    assert len(checkpoints) >= 6 and len(connect_outputs) >= 5
    before = _fingerprints(checkpoints + connect_outputs)
    probe_output = bundle / "spectra" / "mid.json"
    probe_mtime = probe_output.stat().st_mtime_ns

    events: list[ProgressEvent] = []
    again = run_cell(ctx, callbacks=[events.append])

    assert again["status"] == "FINISHED", again.get("traceback")
    assert again["stages_skipped"] == ["train", "connect"]
    assert not [e for e in events if e.task == "train" and e.kind == "epoch"], "endpoints were retrained"
    assert not [e for e in events if e.task in ("fit_curve", "connect")], "the endpoints were reconnected"
    assert any(e.task == "probes" for e in events), "probe must run again"
    after = _fingerprints(checkpoints + connect_outputs)
    changed = [str(p.relative_to(root)) for p in before if before[p][1] != after[p][1]]
    assert not changed, f"resume rewrote {changed}"
    touched = [str(p.relative_to(root)) for p in before if before[p][0] != after[p][0] and not p.name == "final.pt"]
    assert not touched, f"resume rewrote {touched}"  # final.pt is rewritten by train()'s reload, with the same bytes
    assert probe_output.stat().st_mtime_ns > probe_mtime
    assert list(json.loads(stages_file.read_text())) == list(STAGES)

    resumed = _trial_seconds(embedded_store, again["run_id"])
    for q in ("connect_s", "fit_s", "path_eval_s", "plane_s"):  # the skipped stage keeps its first attempt's seconds
        assert resumed[f"trial/{q}"] == pytest.approx(seconds[f"trial/{q}"]), q
    assert resumed["trial/probe_s"] != seconds["trial/probe_s"]  # probed again, timed again
    run = embedded_store.client().get_run(again["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["lgeom.stages_skipped"] == "train,connect"
    assert "barrier/bezier/test/loss" in run.data.metrics and "hessian/mid/lambda_max" in run.data.metrics
    assert "lgeom.stages_skipped" not in embedded_store.client().get_run(first["run_id"]).data.tags
    parent.client.set_terminated(parent.run_id, "FINISHED")
