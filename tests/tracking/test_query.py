"""Queries and tables on a known set of runs logged to the session server (the ``study`` fixture), and the
matrix-axis and per-family table logic on small synthetic runs tables.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from lgeom import names
from tracking import query
from tracking.runs import ensure_experiment, find_finished_run, run_tags, tracked_run


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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
    tables = query.path_tables(study["children"][("preresnet26", 0)], store=study["store"])
    assert "polychain" not in tables
    pd.testing.assert_frame_equal(tables["bezier"], series)


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


def _runs(pairs: int) -> pd.DataFrame:
    """Two optimizers x ``pairs`` seed pairs; barriers of every path kind (aligned included), a triangle with
    its midpoint variant, and a diagnostics metric that no table shows.
    """
    rows = []
    for optimizer in ("sgd", "adam"):
        for pair in range(pairs):
            row: dict[str, object] = {
                "setting": f"mlp/moons/{optimizer}",
                "params.train.optimizer": optimizer,
                "params.train.seeds": f"[{2 * pair}, {2 * pair + 1}]",
                "params.data.name": "moons",
                f"metrics.{names.probe_metric(names.HESSIAN, 'n_hvp', point='a')}": 40.0,
            }
            if optimizer == "sgd":
                row["params.train.momentum"] = "0.9"
            for i, path in enumerate((*names.PATHS, *(names.aligned(p) for p in names.PATHS))):
                row[f"metrics.{names.barrier_metric(path, 'test', 'loss_barrier')}"] = i + pair
                row[f"metrics.{names.barrier_metric(path, 'train', 'acc_drop')}"] = 10.0 * i
            row[f"metrics.{names.triangle_metric('bezier', 'angle_acb_deg')}"] = 100.0 + pair
            row[f"metrics.{names.triangle_metric('bezier', 'angle_acb_deg', point=names.MID)}"] = 150.0
            rows.append(row)
    return pd.DataFrame(rows)


def test_varying_axes_leave_out_seeds_constants_and_params_that_do_not_apply() -> None:
    df = _runs(2)
    assert query.varying_axes(df) == ["train.optimizer"]
    assert query.varying_axes(df[df["params.train.optimizer"] == "sgd"]) == []
    assert query.is_numeric_axis(pd.Series(["8", "26", None])) and not query.is_numeric_axis(pd.Series(["sgd"]))


def test_family_table_keeps_every_path_kind_in_order_with_units() -> None:
    table = query.family_table(_runs(2), names.BARRIER)
    paths = (*names.PATHS, *(names.aligned(p) for p in names.PATHS))
    sgd = table[table["setting"] == "mlp/moons/sgd"]
    assert list(zip(sgd["path"], sgd["split"])) == [(p, s) for p in paths for s in ("train", "test")]
    row = sgd[(sgd["path"] == names.aligned("polychain")) & (sgd["split"] == "test")].iloc[0]
    assert row["loss.mean"] == pytest.approx(5.5) and row["loss.std"] == pytest.approx(np.std([5, 6], ddof=1))
    assert row["loss.n"] == 2 and row["acc_drop.n"] == 0 and np.isnan(row["acc_drop.mean"])
    shown = query.narrow_table(table, names.BARRIER)
    assert list(shown.columns) == ["setting", "path", "split", "loss [nats]", "acc_drop [pp]", "n"]
    assert shown.iloc[0]["setting"] == "mlp/moons/adam" and "±" in shown["loss [nats]"].iloc[1]
    numbers = query.narrow_table(table, names.BARRIER, text=False)
    assert list(numbers.columns) == [
        "setting",
        "path",
        "split",
        "loss [nats]",
        "loss std",
        "acc_drop [pp]",
        "acc_drop std",
        "n",
    ]


def test_std_and_n_only_when_a_setting_has_several_seed_pairs() -> None:
    table = query.family_table(_runs(1), names.TRIANGLE)
    assert list(table["curve"]) == ["bezier", "bezier/mid", "bezier", "bezier/mid"]
    assert not query.has_repeats(table)
    assert list(query.narrow_table(table, names.TRIANGLE).columns) == ["setting", "curve", "angle_acb_deg [deg]"]
    assert list(query.narrow_table(table, names.TRIANGLE, text=False).columns) == [
        "setting",
        "curve",
        "angle_acb_deg [deg]",
    ]
    assert "±" not in "".join(query.narrow_table(table, names.TRIANGLE)["angle_acb_deg [deg]"])
    assert query.family_table(_runs(1), names.HESSIAN).empty, "diagnostics (diag/) are not the hessian table"
    with pytest.raises(KeyError, match="family: expected one of endpoint, barrier, .*got 'diag'"):
        query.family_table(_runs(1), names.DIAG)


def test_terminal_tables_show_n_only_when_a_group_has_several_runs() -> None:
    one = query.compare(_runs(1), [names.triangle_metric("bezier", "angle_acb_deg")], by=["setting"])
    assert query.format_table(one, "markdown").splitlines()[0] == "| setting | triangle/bezier/angle_acb_deg |"
    two = query.compare(_runs(2), [names.triangle_metric("bezier", "angle_acb_deg")], by=["setting"])
    text = query.format_table(two, "markdown")
    assert text.splitlines()[0] == "| setting | triangle/bezier/angle_acb_deg | n |" and "100.500 ± 0.707" in text
