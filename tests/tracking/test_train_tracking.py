"""``lgeom train`` logs each cell to MLflow (here the session server): tags, params, final metrics,
per-epoch history and the endpoints as models; a rerun does not log the cell again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.cli import main as lgeom
from pipelines.config import config_hash, expand_matrix, load_config
from tracking import query
from tracking.log import load_model
from tracking.steps import log_tune_results

pytestmark = pytest.mark.integration
CELL = "mlp2x16/moons/sgd"


def test_train_logs_cells(
    server_store: Any, unique_study: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = [f"name={unique_study}", f"output_dir={tmp_path / 'out'}", "train.epochs=2"]
    args = ["train", "--preset", "quick-tiny", "--cell", CELL, "--no-progress", *overrides]
    assert lgeom(args) == 0
    assert "logged to MLflow run" in capsys.readouterr().out
    runs = query.runs(unique_study, store=server_store, stage="train")
    assert len(runs) == 1
    row = runs.iloc[0]
    cell = next(c for c in expand_matrix(load_config("quick-tiny", overrides)) if c.name == CELL)
    assert row["cell"] == CELL and row["config_hash"] == config_hash(cell.config) and row["study"] == unique_study
    assert row["params.train.lr"] == "0.05" and row["params.model.width"] == "16" and int(row["params.n_params"]) > 0
    assert 0 <= row["metrics.a.test_acc"] <= 100 and 0 <= row["metrics.b.train_acc"] <= 100
    hist = server_store.client().get_metric_history(row["run_id"], "a.history.train_loss")
    assert sorted(h.step for h in hist) == [1, 2]
    ckpt = next((tmp_path / "out" / unique_study / CELL / "endpoints").glob("*/seed0")) / "final.pt"
    state = torch.load(ckpt, weights_only=True)
    model = load_model(server_store, row["run_id"], "a")
    for name, value in model.named_parameters():
        assert torch.equal(value, state["params"][name])

    assert lgeom(args) == 0
    assert "already logged to MLflow run " + row["run_id"] in capsys.readouterr().out
    assert len(query.runs(unique_study, store=server_store, stage="train", status=None)) == 1
    assert lgeom([*args, "--no-tracking"]) == 0
    assert "logged to MLflow" not in capsys.readouterr().out


def test_tune_results_logged(server_store: Any, unique_study: str, tmp_path: Path) -> None:
    cfg = load_config("quick-tiny", [f"name={unique_study}"])
    preset = tmp_path / "tuned.yaml"
    preset.write_text("base: quick-tiny\ntrain: {lr: 0.02}\n")
    outcome = {
        "best": {"lr": 0.02, "weight_decay": 1e-4, "batch_size": 64},
        "best_test_acc": 91.5,
        "trials": [
            {"lr": 0.02, "weight_decay": 1e-4, "batch_size": 64, "test_acc": 91.5, "epochs": 8, "error": ""},
            {"lr": 0.3, "weight_decay": 1e-3, "batch_size": 32, "test_acc": None, "epochs": None, "error": "NaN loss"},
        ],
    }
    cell = next(c for c in expand_matrix(cfg) if c.name == CELL)
    run_id = log_tune_results(
        outcome,
        study=cfg.name,
        cell=CELL,
        config_hash=config_hash(cell.config),
        params=cell.config.flat(),
        preset_path=preset,
        store=server_store,
    )
    client = server_store.client()
    parent = client.get_run(run_id)
    assert (
        parent.info.status == "FINISHED"
        and parent.data.params["best.lr"] == "0.02"
        and parent.data.metrics["best_test_acc"] == 91.5
    )
    assert [i.path for i in client.list_artifacts(run_id, "tuned")] == ["tuned/tuned.yaml"]
    kids = query.runs(unique_study, store=server_store, parent_run_id=run_id, status=None)
    assert sorted(kids["status"]) == ["FAILED", "FINISHED"]
    failed = kids[kids["status"] == "FAILED"].iloc[0]
    assert "NaN loss" in failed["tags.lgeom.error"] and failed["params.lr"] == "0.3"
