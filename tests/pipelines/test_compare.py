"""``lgeom compare --metrics``: grouped like the main table (one row per setting, i.e. the cell without its
seeds), so SGD and Adam cells of one model are never averaged together unless ``--by`` asks for it. The
known study read back as depth tables, markdown and CSV; unknown studies and metrics exit 2.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import pytest

from pipelines.cli import main as lgeom
from tracking.runs import run_tags, tracked_run

pytestmark = pytest.mark.integration

# cell -> barrier/bezier/test/loss
BARRIERS = {
    "mlp2x16/moons/sgd/seeds=[0, 1]": 0.10,
    "mlp2x16/moons/sgd/seeds=[2, 3]": 0.30,
    "mlp2x16/moons/adam/seeds=[0, 1]": 1.00,
    "mlp2x16/moons/adam/seeds=[2, 3]": 2.00,
}


def log_cells(store: Any, study: str) -> None:
    """A study parent run with one FINISHED trial run per cell of :data:`BARRIERS`."""
    with tracked_run(store, experiment=study, run_name="study", tags=run_tags(study=study, stage="study")) as parent:
        for cell, barrier in BARRIERS.items():
            with tracked_run(
                store,
                experiment_id=parent.experiment_id,
                run_name=cell,
                parent_run_id=parent.run_id,
                tags=run_tags(study=study, stage="trial", cell=cell, config_hash=cell),
            ) as run:
                run.log_metrics({"barrier/bezier/test/loss": barrier, "endpoint/a/test_acc": 90.0})


def test_compare_metrics_groups_by_setting_by_default(
    embedded_store: Any, unique_study: str, capsys: pytest.CaptureFixture[str]
) -> None:
    log_cells(embedded_store, unique_study)
    assert lgeom(["compare", "--study", unique_study, "--metrics", "barrier/bezier/test/loss", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table["setting"]) == ["mlp2x16/moons/adam", "mlp2x16/moons/sgd"]
    assert table["barrier/bezier/test/loss.mean"].tolist() == pytest.approx([1.5, 0.2])
    assert table["barrier/bezier/test/loss.n"].tolist() == [2, 2]
    # the main table (no --metrics) has the same rows
    assert lgeom(["compare", "--study", unique_study, "--format", "csv"]) == 0
    assert list(pd.read_csv(io.StringIO(capsys.readouterr().out))["setting"]) == list(table["setting"])
    # coarser groups only when asked for
    assert (
        lgeom(
            [
                "compare",
                "--study",
                unique_study,
                "--metrics",
                "barrier/bezier/test/loss",
                "--by",
                "model,dataset",
                "--format",
                "csv",
            ]
        )
        == 0
    )
    coarse = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(coarse) == 1 and coarse["barrier/bezier/test/loss.n"].tolist() == [4]
    assert (
        lgeom(
            [
                "compare",
                "--study",
                unique_study,
                "--metrics",
                "barrier/bezier/test/loss",
                "--by",
                "optimizer",
                "--format",
                "csv",
            ]
        )
        == 0
    )
    assert sorted(pd.read_csv(io.StringIO(capsys.readouterr().out))["optimizer"]) == ["adam", "sgd"]


def test_lgeom_compare_cli(
    study: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", study["store"].tracking_uri)
    assert lgeom(["compare", "--study", study["name"], "--table", "depth-auc", "--format", "csv"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(df["model"]) == ["preresnet8", "preresnet26"] and df[
        "barrier/bezier/test/acc_auc.mean"
    ].tolist() == pytest.approx([0.5, 1.5])
    assert (
        lgeom(
            [
                "compare",
                "--study",
                study["name"],
                "--metrics",
                "triangle/bezier/dist_ac",
                "--by",
                "model",
                "--format",
                "markdown",
            ]
        )
        == 0
    )
    md = capsys.readouterr().out.splitlines()
    assert md[0] == "| model | triangle/bezier/dist_ac | n |" and md[2].startswith(
        "| preresnet8 | 10.000 ± 1.414 | 2 |"
    )
    assert lgeom(["compare", "--study", study["name"], "--table", "depth-triangle"]) == 0
    assert "polychain" in capsys.readouterr().out
    assert lgeom(["compare", "--study", "no-such-study", "--metrics", "x"]) == 2
    assert "study: expected one of" in capsys.readouterr().err
    assert lgeom(["compare", "--study", study["name"]]) == 0  # no --metrics: the main comparison per setting
    main_table = capsys.readouterr().out
    assert "setting" in main_table and "preresnet26/cifar10/sgd" in main_table and "endpoint/a/test_acc" in main_table
    assert lgeom(["compare", "--study", study["name"], "--metrics", "triangle/bezier/dist_acc"]) == 2
    assert "did you mean 'triangle/bezier/dist_ac'" in capsys.readouterr().err
