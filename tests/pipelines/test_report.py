"""The report step: a small study logged to a real embedded MLflow store (sqlite in a temp folder) is
written as Markdown + self-contained HTML (no relative link, figures as ``data:`` URIs), with one narrow
table per metric family carrying units and definitions, std/n columns only when a setting has several seed
pairs, every path kind including aligned PolyChain, and its figures and tables logged to the parent run with
``mlflow.log_figure`` / ``mlflow.log_table``; an unknown study exits 2. A whole study's report is written in
``tests/scenarios/test_study.py``.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lgeom import names
from pipelines.cli import main as cli_main
from pipelines.report import (
    FAMILY_TITLES,
    MAIN_METRICS,
    html_page,
    present_metrics,
    with_setting,
    write_report,
)
from tracking.log import log_series
from tracking.runs import run_tags, tracked_run

_ALL_PATHS = (*names.PATHS, *(names.aligned(p) for p in names.PATHS))


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


def test_main_metrics_cover_every_path_kind_and_every_family_has_units() -> None:
    barriers = {names.barrier_metric(p, "test", "loss_barrier") for p in _ALL_PATHS}
    assert barriers <= set(MAIN_METRICS) and len(set(MAIN_METRICS)) == len(MAIN_METRICS)
    assert set(FAMILY_TITLES) == set(names.REPORT_FAMILIES)
    for metric in MAIN_METRICS:
        family, _, quantity = names.split_metric_name(metric) or ("", (), "")
        assert family in FAMILY_TITLES and names.quantity_info(family, quantity), metric


def test_the_html_page_stands_alone() -> None:
    page = html_page("study <x>", "<p>body</p>")
    assert page.startswith("<!doctype html>") and "<title>study &lt;x&gt;</title>" in page and "\n<p>body</p>\n" in page
    assert "max-width:100%" in page and "http" not in page, "inline style only, nothing fetched"


def test_an_unknown_study_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli_main(["report", "--study", "no-such-study", "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # MLflow logs the new database's creation before it
    assert last.startswith("lgeom report: error: study: expected one of") and last.endswith("got 'no-such-study'"), last
    assert not (tmp_path / "r").exists(), "nothing is written for an unknown study"


# --- a small study in a real embedded store ----------------------------------------------------------------


def _log_study(store: Any, name: str, *, pairs: int, aligned: bool = True) -> str:
    """A parent run and, per optimizer (sgd, adam) and width (16, 64), ``pairs`` seed-pair runs with endpoint,
    barrier (every path kind, aligned ones when ``aligned``), triangle and Hessian metrics and path series.
    """
    barrier, rng = names.barrier_metric, np.random.default_rng(0)
    with tracked_run(store, experiment=name, run_name="study", tags=run_tags(study=name, stage="study")) as parent:
        for optimizer, lr in (("sgd", 0.05), ("adam", 0.005)):
            for width, n_params in ((16, 353), (64, 4_481)):
                for pair in range(pairs):
                    cell = f"mlp2x{width}/moons/{optimizer}/seeds=[{2 * pair}, {2 * pair + 1}]"
                    tags = run_tags(study=name, stage="trial", cell=cell, parent_run_id=parent.run_id)
                    params = {
                        "model.width": width,
                        "model.depth": 2,
                        "data.name": "moons",
                        "train.optimizer": optimizer,
                        "train.lr": lr,
                        "train.seeds": f"[{2 * pair}, {2 * pair + 1}]",
                        names.PARAM_N_PARAMS: n_params,
                    }
                    if optimizer == "sgd":
                        params["train.momentum"] = 0.9  # applies to SGD cells only: not an axis
                    paths = _ALL_PATHS if aligned else names.PATHS
                    metrics = {
                        names.endpoint_metric(e, s, "acc"): 90.0 + rng.normal() for e in "ab" for s in names.SPLITS
                    }
                    metrics.update({barrier(p, "test", "loss_barrier"): 0.5 + pair + i for i, p in enumerate(paths)})
                    metrics.update({barrier(p, "test", "acc_auc"): 2.0 + rng.random() for p in paths})
                    metrics[names.triangle_metric("bezier", "angle_acb_deg")] = 120.0 + pair
                    metrics[names.probe_metric(names.HESSIAN, "lambda_max", point="a")] = 3.0 + pair
                    metrics[names.probe_metric(names.HESSIAN, "n_hvp", point="a")] = 40.0  # diagnostics: no table
                    with tracked_run(
                        store, experiment_id=parent.experiment_id, run_name=cell, tags=tags, params=params
                    ) as run:
                        run.log_metrics(metrics)
                        t = np.linspace(0, 1, 5)
                        for p in ("linear", "bezier", names.aligned("bezier")):
                            log_series(run, p, {names.split_column("test", "acc"): 90 - width / 8 * np.sin(np.pi * t)})
    return parent.run_id


class _Links(HTMLParser):
    """Every URL an HTML page refers to (``src``, ``href``, ``srcset``, ``url(...)`` in style)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.images += tag == "img"
        for key, value in attrs:
            if key in ("src", "href", "srcset", "data", "poster", "background") and value is not None:
                self.urls.append(value)

    def handle_data(self, data: str) -> None:
        self.urls += re.findall(r"url\(([^)]*)\)", data)


def _tables(markdown: str) -> dict[str, list[str]]:
    """``{section title: header cells of its table}`` of the report's Markdown."""
    out, title = {}, None
    for line in markdown.splitlines():
        if line.startswith("## "):
            title = line[3:]
        elif line.startswith("| ") and title is not None and title not in out:
            out[title] = [c.strip() for c in line.strip("|").split("|")]
    return out


@pytest.mark.parametrize(("pairs", "aligned"), [(1, False), (2, True)])
def test_report_is_self_contained_with_a_narrow_table_per_family(
    embedded_store: Any, unique_study: str, tmp_path: Path, pairs: int, aligned: bool
) -> None:
    parent_id = _log_study(embedded_store, unique_study, pairs=pairs, aligned=aligned)
    paths = _ALL_PATHS if aligned else names.PATHS
    out = tmp_path / "report"
    md_path = write_report(unique_study, out, store=embedded_store)
    page = (out / names.REPORT_HTML).read_text()
    markdown = md_path.read_text()

    links = _Links()
    links.feed(page)
    assert links.images >= 3 and links.urls, "the figures are in the page"
    for url in links.urls:
        assert url.startswith("data:image/png;base64,"), f"not embedded: {url[:80]}"
    assert "figures/" not in page and ".png" not in page, "no link to a file next to the page"
    assert re.search(r"!\[path_test_acc\]\(figures/path_test_acc\.png\)", markdown), "Markdown links the PNGs"
    assert (out / "figures" / "path_test_acc.png").read_bytes()[:4] == b"\x89PNG"

    tables = _tables(markdown)
    assert list(tables) == [FAMILY_TITLES[f] for f in (names.ENDPOINT, names.BARRIER, names.TRIANGLE, names.HESSIAN)]
    barrier_head = tables[FAMILY_TITLES[names.BARRIER]]
    assert barrier_head[:3] == ["setting", "path", "split"]
    assert "loss [nats]" in barrier_head and "acc_auc [pp x t]" in barrier_head
    assert tables[FAMILY_TITLES[names.ENDPOINT]][:2] == ["setting", "endpoint"]
    assert "test_acc [%]" in tables[FAMILY_TITLES[names.ENDPOINT]]
    assert "- `loss` [nats]: max_t L(t) - max(L(0), L(1)) along the path" in markdown, "one-line definitions"
    assert "n_hvp" not in markdown, "solver diagnostics stay out of the tables"
    assert max(len(h) for h in tables.values()) <= 8, "narrow tables"
    barrier_rows = markdown.split(f"## {FAMILY_TITLES[names.BARRIER]}")[1].split("## ")[0].splitlines()
    for path in _ALL_PATHS:
        present = any(f"| {path} | test |" in row for row in barrier_rows)
        assert present is (path in paths), f"{path}: expected in the barrier table {path in paths}, got {present}"
    spread = pairs > 1
    for head in tables.values():
        assert ("n" in head) is spread, head
    assert ("±" in markdown) is spread and ("±" in page) is spread
    csv = pd.read_csv(out / "tables" / "barrier.csv")
    assert ("loss std" in csv.columns) is spread and ("n" in csv.columns) is spread
    if spread:
        assert set(csv["n"]) == {2}, "n counts the seed pairs of one setting"
        row = csv[(csv["setting"] == "mlp2x16/moons/sgd") & (csv["path"] == "linear")].iloc[0]
        assert row["loss [nats]"] == pytest.approx(1.0) and row["loss std"] == pytest.approx(np.std([0.5, 1.5], ddof=1))
    assert (
        "Matrix axes that vary: model.width (16, 64); train.lr (0.005, 0.05); train.optimizer (adam, sgd)." in markdown
    )

    client = embedded_store.client()
    files = {f.path for f in client.list_artifacts(parent_id, "figures")}
    assert {"figures/acc_auc_vs_params.png", "figures/path_test_acc.png"} <= files
    assert "figures/acc_auc_vs_depth.png" not in files, "one depth: no plot against depth"
    tables_logged = {f.path for f in client.list_artifacts(parent_id, "tables")}
    assert names.report_table_artifact(names.BARRIER) in tables_logged
    report_files = {f.path for f in client.list_artifacts(parent_id, names.REPORT_DIR)}
    assert {"report/report.html", "report/report.md"} <= report_files
    logged = json.loads(client.get_run(parent_id).data.tags["mlflow.loggedArtifacts"])
    assert {"path": names.report_table_artifact(names.BARRIER), "type": "table"} in logged, "the UI shows it as a table"
    local = client.download_artifacts(parent_id, names.report_table_artifact(names.BARRIER), str(tmp_path / "dl"))
    doc = json.loads(Path(local).read_text())
    assert len(doc["data"]) == 4 * len(paths), "one row per setting and path kind"
    if aligned:
        write_report(unique_study, tmp_path / "again", store=embedded_store)  # a rerun replaces, never appends
        again = client.download_artifacts(parent_id, names.report_table_artifact(names.BARRIER), str(tmp_path / "d2"))
        assert len(json.loads(Path(again).read_text())["data"]) == 4 * len(paths)
