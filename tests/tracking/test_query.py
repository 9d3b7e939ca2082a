"""Queries and tables on a known set of runs logged to the session server (the ``study`` fixture)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lgeom import names
from tracking import query
from tracking.runs import ensure_experiment, find_finished_run, run_tags, tracked_run

pytestmark = pytest.mark.integration


def test_runs_of_a_study(study: dict[str, Any]) -> None:
    df = query.runs(study["name"], store=study["store"])
    assert len(df) == 5 and set(df["status"]) == {"FINISHED"}  # parent + 4 trials, the FAILED one left out
    kids = query.runs(study["name"], store=study["store"], children_only=True)
    assert set(kids["run_id"]) == set(study["children"].values())
    assert set(kids["model"]) == {"preresnet8", "preresnet26"} and set(kids["dataset"]) == {"cifar10"}
    assert list(query.runs(study["name"], store=study["store"], status="FAILED")["run_id"]) == [study["failed"]]
    one = query.runs(study["name"], store=study["store"], cell="preresnet26/cifar10/sgd/seeds=[2, 3]")
    assert list(one["run_id"]) == [study["children"][("preresnet26", 1)]]
    with pytest.raises(query.StudyNotFoundError, match=r"got 'depth-knwn'"):
        query.runs("depth-knwn", store=study["store"])


def test_compare_aggregates_over_pairs(study: dict[str, Any]) -> None:
    table = query.compare(
        study["name"],
        ["barrier/bezier/test/acc_auc", "barrier/linear/test/acc_drop"],
        by=["model"],
        store=study["store"],
    )
    assert list(table["model"]) == ["preresnet8", "preresnet26"]  # natural order
    row = table.set_index("model").loc["preresnet26"]
    assert row["barrier/bezier/test/acc_auc.mean"] == pytest.approx(1.5)
    assert row["barrier/bezier/test/acc_auc.std"] == pytest.approx(np.std([1.0, 2.0], ddof=1))
    assert row["barrier/bezier/test/acc_auc.n"] == 2 and row["barrier/linear/test/acc_drop.mean"] == pytest.approx(65.0)
    by_depth = query.compare(study["name"], ["endpoint/a/test_acc"], by=["model.depth"], store=study["store"])
    assert list(by_depth["model.depth"]) == ["8", "26"]
    with pytest.raises(KeyError, match="did you mean 'barrier/bezier/test/acc_auc'"):
        query.compare(study["name"], ["barrier/bezier/test/acc_aux"], store=study["store"])


def test_depth_tables(study: dict[str, Any]) -> None:
    auc = query.depth_auc_table(study["name"], store=study["store"])
    assert list(auc["model"]) == ["preresnet8", "preresnet26"] and list(auc["n_params"]) == [78_000, 370_000]
    r8 = auc.iloc[0]
    assert r8["barrier/linear/test/acc_auc.mean"] == pytest.approx(12.0) and r8[
        "barrier/bezier/test/acc_drop.mean"
    ] == pytest.approx(3.0)
    tri = query.depth_triangle_table(study["name"], store=study["store"])
    assert list(zip(tri["model"], tri["curve"])) == [
        ("preresnet8", "bezier"),
        ("preresnet8", "polychain"),
        ("preresnet26", "bezier"),
        ("preresnet26", "polychain"),
    ]
    row = tri[(tri["model"] == "preresnet26") & (tri["curve"] == "polychain")].iloc[0]
    assert row["dist_ac.mean"] == pytest.approx(19.0) and row["angle_acb_deg.mean"] == pytest.approx(72.0)
    assert row["dist_bc.n"] == 2
    text = query.format_table(tri, "text")
    assert "± " in text and "preresnet26" in text


def test_reuse_lookup_and_path_series(study: dict[str, Any]) -> None:
    exp = query.experiment_id(study["name"], store=study["store"])
    found = find_finished_run(study["store"], exp, "preresnet8-1")
    assert found is not None and found.info.run_id == study["children"][("preresnet8", 1)]
    assert find_finished_run(study["store"], exp, "preresnet8-1", stage="train") is None
    assert find_finished_run(study["store"], exp, "nope") is None
    series = query.path_series(study["children"][("preresnet26", 0)], "bezier", store=study["store"])
    assert set(series.columns) == {"t", "test_acc", "hessian_lambda_max"}
    np.testing.assert_allclose(series["t"], np.linspace(0, 1, 5))
    np.testing.assert_allclose(series["hessian_lambda_max"], 26 + np.sin(np.pi * np.linspace(0, 1, 5)))
    with pytest.raises(KeyError, match="path 'polychain'"):
        query.path_series(study["children"][("preresnet26", 0)], "polychain", store=study["store"])


def _log_trial(
    store: Any, exp_id: str, parent: str, cell: str, seconds: dict[str, float], status: str = "FINISHED"
) -> str:
    tags = run_tags(study="timed", stage=names.STAGE_TRIAL, cell=cell, parent_run_id=parent)
    with tracked_run(store, experiment_id=exp_id, run_name=cell, tags=tags, check=False) as run:
        run.log_metrics({names.trial_metric(q): v for q, v in seconds.items()})
        if status != "FINISHED":
            raise RuntimeError("the trial failed")
    return run.run_id


def test_stage_times_split_each_cells_wall_time(embedded_store: Any) -> None:
    exp_id = ensure_experiment(embedded_store, "timed")
    with tracked_run(
        embedded_store, experiment_id=exp_id, run_name="study", tags=run_tags(study="timed", stage="study")
    ) as parent:
        full = {"train_s": 10, "fit_s": 4, "path_eval_s": 3, "plane_s": 2, "connect_s": 11, "probe_s": 5, "log_s": 1}
        _log_trial(embedded_store, exp_id, parent.run_id, "mlp2x64/moons/sgd", {**full, "wall_time_s": 30})
        # an older trial of the same cell, then the newer one that counts
        _log_trial(embedded_store, exp_id, parent.run_id, "mlp2x16/moons/sgd", {**full, "wall_time_s": 99})
        newer = {**full, "train_s": 1, "wall_time_s": 20, "compute_cpu_s": 15}
        _log_trial(embedded_store, exp_id, parent.run_id, "mlp2x16/moons/sgd", newer)
        _log_trial(embedded_store, exp_id, parent.run_id, "old/moons/sgd", {"compute_s": 7, "wall_time_s": 8})
        with pytest.raises(RuntimeError):
            _log_trial(embedded_store, exp_id, parent.run_id, "mlp2x16/circles/sgd", full, status="FAILED")

    table = query.stage_times("timed", store=embedded_store)
    assert list(table.columns) == ["cell", *query.STAGE_TIME_COLUMNS]
    assert list(table["cell"]) == ["mlp2x16/moons/sgd", "mlp2x64/moons/sgd", "old/moons/sgd"]  # FAILED left out
    row = table.set_index("cell").loc["mlp2x16/moons/sgd"]
    assert row.to_dict() == {
        "train": 1,
        "fit": 4,
        "path_eval": 3,
        "plane": 2,
        "connect_other": 2,
        "probe": 5,
        "log": 1,
        "other": 20 - 1 - 11 - 5 - 1,
        "total": 20,
        "compute_cpu": 15,
    }
    parts = [c for c in query.STAGE_TIME_COLUMNS if c not in ("total", "compute_cpu")]
    assert (table[parts].sum(axis=1).iloc[:2] == table["total"].iloc[:2]).all()
    old = table.set_index("cell").loc["old/moons/sgd"]
    assert old["total"] == 8 and np.isnan(old["train"]) and np.isnan(old["other"])  # before stage timing
    assert query.stage_times(query.runs("timed", store=embedded_store).iloc[:0]).empty
