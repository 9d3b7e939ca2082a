"""``tracking.steps``: a step's bundle logged as its own run from plain values (study, cell, config hash,
params), reused by config hash, and a tune search as a parent run with one child per trial. MLflow is the
real embedded store (sqlite in a temp folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lgeom import names
from lgeom.table import Table
from pipelines.config import config_hash, expand_matrix, load_config
from tracking import query
from tracking.bundle import Bundle
from tracking.steps import log_step_bundle, log_tune_results

CELL = "mlp2x16/moons/sgd"


def _bundle(root: Path) -> Bundle:
    bundle = Bundle(root)
    bundle.add_metrics({names.barrier_metric(names.LINE, "test", "loss_barrier"): 1.25})
    bundle.write_path(names.LINE, Table({"t": [0.0, 0.5, 1.0], names.split_column("test", "acc"): [90.0, 40.0, 89.0]}))
    return bundle


def test_step_bundle_logged_with_the_given_cell_values_and_reused(
    embedded_store: Any, unique_study: str, tmp_path: Path
) -> None:
    bundle = _bundle(tmp_path / "connect")
    kwargs = dict(study=unique_study, cell=CELL, config_hash="c0ffee", stage=names.STAGE_CONNECT, store=embedded_store)
    run_id = log_step_bundle(bundle, params={"train": {"lr": 0.05}}, **kwargs)
    got = embedded_store.client().get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == f"connect:{CELL}"
    assert {k: got.data.tags[k] for k in (names.TAG_STUDY, names.TAG_CELL, names.TAG_CONFIG_HASH, names.TAG_STAGE)} == {
        names.TAG_STUDY: unique_study,
        names.TAG_CELL: CELL,
        names.TAG_CONFIG_HASH: "c0ffee",
        names.TAG_STAGE: "connect",
    }
    assert got.data.params == {"train.lr": "0.05"}
    assert got.data.metrics[names.barrier_metric(names.LINE, "test", "loss_barrier")] == 1.25
    assert names.series_metric(names.LINE, names.split_column("test", "acc")) in got.data.metrics
    assert log_step_bundle(tmp_path / "connect", params={}, reuse=True, **kwargs) == run_id
    assert log_step_bundle(tmp_path / "connect", params={}, reuse=False, **kwargs) != run_id


def test_tune_search_logged_as_parent_and_trials(embedded_store: Any, unique_study: str, tmp_path: Path) -> None:
    preset = tmp_path / "tuned.yaml"
    preset.write_text("base: quick-tiny\ntrain: {lr: 0.02}\n")
    outcome = {
        "best": {"lr": 0.02},
        names.TUNE_BEST_METRIC: 91.5,
        "trials": [
            {"lr": 0.02, "test_acc": 91.5, "epochs": 8, "error": ""},
            {"lr": 0.3, "test_acc": None, "epochs": None, "error": "NaN loss"},
        ],
    }
    run_id = log_tune_results(
        outcome,
        study=unique_study,
        cell=CELL,
        config_hash="c0ffee",
        params={"train": {"epochs": 8}},
        preset_path=preset,
        store=embedded_store,
    )
    client = embedded_store.client()
    parent = client.get_run(run_id)
    assert parent.data.params == {"train.epochs": "8", names.tune_best_param("lr"): "0.02"}
    assert (
        parent.data.metrics == {names.TUNE_BEST_METRIC: 91.5} and parent.data.tags[names.TAG_STAGE] == names.STAGE_TUNE
    )
    assert [i.path for i in client.list_artifacts(run_id, names.TUNED_DIR)] == ["tuned/tuned.yaml"]
    kids = query.runs(unique_study, store=embedded_store, parent_run_id=run_id, status=None)
    assert sorted(kids["status"]) == ["FAILED", "FINISHED"] and set(kids["stage"]) == {names.STAGE_TUNE_TRIAL}
    assert "NaN loss" in kids[kids["status"] == "FAILED"].iloc[0]["tags.lgeom.error"]


@pytest.mark.integration
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
