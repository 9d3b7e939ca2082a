"""Queries and tables on a known set of runs logged to the session server (the ``study`` fixture)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tracking import query
from tracking.runs import find_finished_run

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
