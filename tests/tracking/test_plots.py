"""Study figures: a metric against depth or size and the generalisation gap from a tiny synthetic runs
table (Agg, no store), the errors for missing data, and with a real server every figure of the known study
logged to its parent run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tracking.plots import plot_gen_gap, plot_metric_vs, study_figures

PNG = b"\x89PNG\r\n\x1a\n"


def _runs() -> pd.DataFrame:
    rows = []
    for model, depth, n_params in (("preresnet8", 8, 78_000), ("preresnet26", 26, 370_000)):
        for pair, noise in enumerate((-0.1, 0.1)):
            rows.append(
                {
                    "run_id": f"{model}-{pair}",
                    "model": model,
                    "dataset": "cifar10",
                    "params.model.depth": str(depth),
                    "params.n_params": str(n_params),
                    "metrics.bezier.test.acc_auc": depth / 10 + noise,
                    "metrics.endpoint/a/train_acc": 100.0,
                    "metrics.endpoint/a/test_acc": 92.0 - depth / 10,
                    "metrics.endpoint/b/train_acc": 99.0,
                    "metrics.endpoint/b/test_acc": 91.0 - depth / 10 + noise,
                }
            )
    rows.append({**rows[-1], "run_id": "no-metric", "metrics.bezier.test.acc_auc": float("nan")})  # left out
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("x", "log_x"), [("depth", None), ("n_params", None), ("n_params", True)])
def test_metric_against_depth_or_size(tmp_path: Path, x: str, log_x: bool | None) -> None:
    out = plot_metric_vs(_runs(), "bezier.test.acc_auc", tmp_path / f"auc_vs_{x}.png", x=x, log_x=log_x)
    assert out == tmp_path / f"auc_vs_{x}.png" and out.read_bytes()[:8] == PNG and out.stat().st_size > 5_000


def test_generalisation_gap(tmp_path: Path) -> None:
    out = plot_gen_gap(_runs(), tmp_path / "gap.png", group="model")
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 5_000


def test_missing_data_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    df = _runs()
    with pytest.raises(
        KeyError, match="column 'bezier.test.acc_aux': expected a run field, param, tag or metric of the runs"
    ):
        plot_metric_vs(df, "bezier.test.acc_aux", tmp_path / "x.png")
    with pytest.raises(KeyError, match="column 'width'"):
        plot_metric_vs(df, "bezier.test.acc_auc", tmp_path / "x.png", x="width")
    empty = df.assign(**{"metrics.bezier.test.acc_auc": float("nan")})
    with pytest.raises(
        ValueError, match="plot bezier.test.acc_auc vs depth: expected runs with finite values of both, got none"
    ):
        plot_metric_vs(empty, "bezier.test.acc_auc", tmp_path / "x.png", x="depth")
    with pytest.raises(
        KeyError, match="generalisation gap: expected metrics endpoint/<endpoint>/train_acc and /test_acc for a, b"
    ):
        plot_gen_gap(df.drop(columns=[c for c in df.columns if c.endswith("_acc")]), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


@pytest.mark.integration
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
