"""The report step's pieces: settings aggregate over seed pairs, only logged metrics are shown, table and
page helpers; an unknown study exits 2 (real embedded MLflow store, nothing logged). A whole report of a
study is written in ``tests/scenarios/test_study.py``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.cli import main as cli_main
from pipelines.report import (
    MAIN_METRICS,
    SECTIONS,
    _html_page,
    _slug,
    present_metrics,
    with_setting,
)


def test_settings_are_cells_without_their_seed_pair() -> None:
    df = pd.DataFrame({"cell": ["mlp2x16/moons/sgd/seeds=[0, 1]", "mlp2x16/moons/sgd/seeds=[2, 3]", "cnn/digits/adam"]})
    out = with_setting(df)
    assert out["setting"].tolist() == ["mlp2x16/moons/sgd", "mlp2x16/moons/sgd", "cnn/digits/adam"]
    assert "setting" not in df.columns, "the input is left alone"
    assert "setting" not in with_setting(pd.DataFrame({"run_id": ["r"]})).columns


def test_only_metrics_some_run_has_are_present() -> None:
    df = pd.DataFrame(
        {
            "metrics.endpoint/a/test_acc": [90.0, None],
            "metrics.endpoint/b/test_acc": [None, None],
            "params.lr": ["0.1", "0.1"],
        }
    )
    listed = ["endpoint/a/test_acc", "endpoint/b/test_acc", "endpoint/c/test_acc", "lr"]
    assert present_metrics(df, listed) == ["endpoint/a/test_acc"]


def test_the_main_metrics_are_listed_in_the_sections() -> None:
    listed = {m for metrics in SECTIONS.values() for m in metrics}
    assert set(MAIN_METRICS) <= listed and len(set(MAIN_METRICS)) == len(MAIN_METRICS)


def test_slugs_and_the_html_page() -> None:
    assert _slug("Barriers along paths (test set)") == "barriers_along_paths_test_set"
    assert _slug("Triangle A, C, B") == "triangle_a_c_b"
    page = _html_page("study <x>", "<p>body</p>")
    assert page.startswith("<!doctype html>") and "<title>study &lt;x&gt;</title>" in page and "\n<p>body</p>\n" in page


def test_an_unknown_study_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli_main(["report", "--study", "no-such-study", "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # MLflow logs the new database's creation before it
    assert last.startswith("lgeom report: error: study: expected one of") and last.endswith("got 'no-such-study'"), last
