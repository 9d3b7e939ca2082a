"""Queries, tables, plots and ``lgeom compare`` on a known set of runs logged to the session server."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lgeom import names
from pipelines.cli import main as lgeom
from tracking import query
from tracking.log import log_series
from tracking.plots import study_figures
from tracking.runs import find_finished_run, run_tags, tracked_run
from tracking.store import resolve_store

pytestmark = pytest.mark.integration

# model -> (depth, n_params, [(bezier auc, linear auc, bezier drop, linear drop, dist_ac, angle) per pair])
KNOWN = {
    "preresnet8": (8, 78_000, [(0.4, 10.0, 2.0, 30.0, 9.0, 70.0), (0.6, 14.0, 4.0, 50.0, 11.0, 80.0)]),
    "preresnet26": (26, 370_000, [(1.0, 20.0, 6.0, 60.0, 19.0, 60.0), (2.0, 30.0, 8.0, 70.0, 21.0, 64.0)]),
}


@pytest.fixture(scope="module")
def study(local_stack: Any) -> dict[str, Any]:
    """The known study: a parent run, two endpoint pairs per model, and one FAILED trial to ignore."""
    barrier, tri, endpoint = names.barrier_metric, names.triangle_metric, names.endpoint_metric
    test_acc, lam = names.split_column("test", "acc"), names.probe_column(names.HESSIAN, "lambda_max")
    store = resolve_store(local_stack.tracking_uri)
    name = f"depth-known-{np.random.default_rng().integers(1 << 30)}"
    children = {}
    with tracked_run(store, experiment=name, run_name="study", tags=run_tags(study=name, stage="study")) as parent:
        for model, (depth, n_params, pairs) in KNOWN.items():
            for pair, (bz_auc, ln_auc, bz_drop, ln_drop, dist_ac, angle) in enumerate(pairs):
                cell = f"{model}/cifar10/sgd/seeds=[{2 * pair}, {2 * pair + 1}]"
                tags = run_tags(
                    study=name, stage="trial", cell=cell, config_hash=f"{model}-{pair}", parent_run_id=parent.run_id
                )
                with tracked_run(
                    store,
                    experiment_id=parent.experiment_id,
                    run_name=cell,
                    tags=tags,
                    params={"model.depth": depth, "n_params": n_params},
                ) as run:
                    run.log_metrics(
                        {
                            barrier("bezier", "test", "acc_auc"): bz_auc,
                            barrier("linear", "test", "acc_auc"): ln_auc,
                            barrier("bezier", "test", "acc_drop"): bz_drop,
                            barrier("linear", "test", "acc_drop"): ln_drop,
                            tri("bezier", "dist_ac"): dist_ac,
                            tri("bezier", "dist_bc"): dist_ac + 1,
                            tri("bezier", "angle_acb_deg"): angle,
                            tri("polychain", "dist_ac"): dist_ac - 1,
                            tri("polychain", "dist_bc"): dist_ac,
                            tri("polychain", "angle_acb_deg"): angle + 10,
                            endpoint("a", "train", "acc"): 100.0,
                            endpoint("a", "test", "acc"): 90.0 - depth / 10,
                            endpoint("b", "train", "acc"): 99.0,
                            endpoint("b", "test", "acc"): 89.0 - depth / 10,
                            barrier("linear", "test", "loss_barrier"): ln_drop / 10,
                        }
                    )
                    t = np.linspace(0, 1, 5)
                    log_series(
                        run, "bezier", {test_acc: 90 - bz_drop * np.sin(np.pi * t), lam: depth + np.sin(np.pi * t)}
                    )
                    log_series(run, "linear", {test_acc: 90 - ln_drop * np.sin(np.pi * t), lam: depth + t})
                children[(model, pair)] = run.run_id
        with pytest.raises(RuntimeError):
            with tracked_run(
                store,
                experiment_id=parent.experiment_id,
                run_name="broken",
                tags=run_tags(
                    study=name, stage="trial", cell="preresnet8/cifar10/sgd/broken", parent_run_id=parent.run_id
                ),
            ) as bad:
                bad.log_metrics({barrier("bezier", "test", "acc_auc"): 1e6})
                raise RuntimeError("NaN loss")
    return {"store": store, "name": name, "parent": parent.run_id, "children": children, "failed": bad.run_id}


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
        study["name"], ["bezier.test.acc_auc", "linear.test.acc_drop"], by=["model"], store=study["store"]
    )
    assert list(table["model"]) == ["preresnet8", "preresnet26"]  # natural order
    row = table.set_index("model").loc["preresnet26"]
    assert row["bezier.test.acc_auc.mean"] == pytest.approx(1.5)
    assert row["bezier.test.acc_auc.std"] == pytest.approx(np.std([1.0, 2.0], ddof=1))
    assert row["bezier.test.acc_auc.n"] == 2 and row["linear.test.acc_drop.mean"] == pytest.approx(65.0)
    by_depth = query.compare(study["name"], ["a.test_acc"], by=["model.depth"], store=study["store"])
    assert list(by_depth["model.depth"]) == ["8", "26"]
    with pytest.raises(KeyError, match="did you mean 'bezier.test.acc_auc'"):
        query.compare(study["name"], ["bezier.test.acc_aux"], store=study["store"])


def test_depth_tables(study: dict[str, Any]) -> None:
    auc = query.depth_auc_table(study["name"], store=study["store"])
    assert list(auc["model"]) == ["preresnet8", "preresnet26"] and list(auc["n_params"]) == [78_000, 370_000]
    r8 = auc.iloc[0]
    assert r8["linear.test.acc_auc.mean"] == pytest.approx(12.0) and r8["bezier.test.acc_drop.mean"] == pytest.approx(
        3.0
    )
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


def test_lgeom_compare_cli(
    study: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", study["store"].tracking_uri)
    assert lgeom(["compare", "--study", study["name"], "--table", "depth-auc", "--format", "csv"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(df["model"]) == ["preresnet8", "preresnet26"] and df[
        "bezier.test.acc_auc.mean"
    ].tolist() == pytest.approx([0.5, 1.5])
    assert (
        lgeom(
            [
                "compare",
                "--study",
                study["name"],
                "--metrics",
                "bezier.dist_ac",
                "--by",
                "model",
                "--format",
                "markdown",
            ]
        )
        == 0
    )
    md = capsys.readouterr().out.splitlines()
    assert md[0] == "| model | bezier.dist_ac | n |" and md[2].startswith("| preresnet8 | 10.000 ± 1.414 | 2 |")
    assert lgeom(["compare", "--study", study["name"], "--table", "depth-triangle"]) == 0
    assert "polychain" in capsys.readouterr().out
    assert lgeom(["compare", "--study", "no-such-study", "--metrics", "x"]) == 2
    assert "study: expected one of" in capsys.readouterr().err
    assert lgeom(["compare", "--study", study["name"]]) == 0  # no --metrics: the main comparison per setting
    main_table = capsys.readouterr().out
    assert "setting" in main_table and "preresnet26/cifar10/sgd" in main_table and "a.test_acc" in main_table
    assert lgeom(["compare", "--study", study["name"], "--metrics", "bezier.dist_acc"]) == 2
    assert "did you mean 'bezier.dist_ac'" in capsys.readouterr().err


def test_study_figures_logged_to_parent(study: dict[str, Any], tmp_path: Any) -> None:
    paths = study_figures(study["name"], tmp_path, store=study["store"])
    names = {p.name for p in paths}
    assert {
        "acc_auc_vs_depth.png",
        "acc_auc_vs_params.png",
        "path_test_acc.png",
        "path_lambda_max.png",
        "gen_gap_vs_params.png",
    } <= names
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5_000
    listed = {i.path: i.file_size for i in study["store"].client().list_artifacts(study["parent"], "figures")}
    assert listed == {f"figures/{p.name}": p.stat().st_size for p in paths}
