"""A person's view of the MLflow UI in headless Chromium: the compare-runs page of two logged runs, and a child
run's Model metrics tab, where MLflow draws one section per metric family (the prefix up to the last ``/``).
The screenshots are kept in the test artifacts folder (see :mod:`tests.scenarios.chromium`).
"""

from __future__ import annotations

import json
import urllib.parse
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest

from lgeom import names
from tests.scenarios.chromium import assert_rendered, needs_chromium, render
from tracking.log import log_series
from tracking.runs import run_tags, tracked_run

pytestmark = [pytest.mark.integration, needs_chromium]

#: data-testid of a chart section's header on MLflow 3's run page and compare view
SECTION_HEADER = "experiment-view-compare-runs-section-header"


class _SectionHeaders(HTMLParser):
    """Collects the texts of every element marked as a chart section header: ``[name, "(charts)", ...]``."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[list[str]] = []
        self._depth = 0  # open elements inside the current header (0: outside any)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._depth:
            self._depth += tag not in {"br", "img", "input", "path", "rect", "circle"}
        elif dict(attrs).get("data-testid") == SECTION_HEADER:
            self._depth = 1
            self.sections.append([])

    def handle_endtag(self, tag: str) -> None:
        if self._depth and tag not in {"br", "img", "input", "path", "rect", "circle"}:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth and data.strip():
            self.sections[-1].append(data.strip())


def section_headers(dom: str) -> dict[str, int]:
    """Section name -> number of charts MLflow says the section holds, from the rendered DOM."""
    parser = _SectionHeaders()
    parser.feed(dom)
    out = {}
    for texts in parser.sections:
        count = next((t for t in texts[1:] if t.startswith("(") and t.endswith(")")), None)
        if texts and count is not None:
            out[texts[0]] = int(count.strip("()"))
    return out


def test_compare_runs_page_screenshot(server_store: Any, unique_study: str) -> None:
    ids = []
    with tracked_run(
        server_store, experiment=unique_study, run_name="study", tags=run_tags(study=unique_study, stage="study")
    ) as parent:
        for lr, auc in ((0.05, 0.4), (0.1, 1.3)):
            with tracked_run(
                server_store,
                experiment_id=parent.experiment_id,
                run_name=f"mlp2x16/moons/sgd/lr={lr}",
                parent_run_id=parent.run_id,
                params={"train.lr": lr},
                tags=run_tags(study=unique_study, stage="trial", cell=f"mlp2x16/moons/sgd/lr={lr}"),
            ) as run:
                run.log_metrics(
                    {
                        names.barrier_metric("bezier", "test", "acc_auc"): auc,
                        names.barrier_metric("linear", "test", "loss_barrier"): 2 * auc,
                    }
                )
                ids.append(run.run_id)
    query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([parent.experiment_id])})
    url = f"{server_store.tracking_uri}/#/compare-runs?{query}"
    dom, shot = render(url, "mlflow-compare-runs.png", ready=_charts_drawn)
    assert_rendered(shot, width=1300, height=900)
    # What the page shows, not only that it shows something: the rendered DOM names both runs and a metric.
    for name in ("mlp2x16/moons/sgd/lr=0.05", "mlp2x16/moons/sgd/lr=0.1", "barrier/bezier/test/acc_auc"):
        assert name in dom, f"{name!r} not in the rendered compare-runs page ({len(dom)} characters of DOM)"


def test_model_metrics_tab_shows_one_section_per_metric_family(server_store: Any, unique_study: str) -> None:
    t = np.linspace(0.0, 1.0, 5)
    scalars = {
        names.endpoint_metric("a", "test", "acc"): 91.0,
        names.endpoint_metric("b", "test", "acc"): 90.5,
        names.barrier_metric("bezier", "test", "loss_barrier"): 0.05,
        names.barrier_metric("bezier", "test", "acc_auc"): 0.4,
        names.triangle_metric("bezier", "angle_acb_deg"): 143.0,
        names.triangle_metric("bezier", "dist_ac"): 9.0,
        names.probe_metric(names.HESSIAN, "lambda_max", point=names.MID): 12.5,
        names.probe_metric(names.SHARPNESS, "eps_avg", point="a"): 0.003,
        names.probe_metric(names.HESSIAN, "n_hvp", point="a"): 120.0,  # a solver diagnostic: diag/a/...
    }
    with tracked_run(
        server_store, experiment=unique_study, run_name="study", tags=run_tags(study=unique_study, stage="study")
    ) as parent:
        cell = "mlp2x16/moons/sgd"
        with tracked_run(
            server_store,
            experiment_id=parent.experiment_id,
            run_name=cell,
            parent_run_id=parent.run_id,
            tags=run_tags(study=unique_study, stage="trial", cell=cell),
        ) as run:
            run.log_metrics(scalars)
            epochs = {"train_loss": [1.0, 0.5, 0.3], "test_acc": [70.0, 85.0, 90.0]}
            logged = set(scalars)
            logged |= set(log_series(run, "a", epochs, naming=names.history_metric))
            logged |= set(log_series(run, "bezier", {"loss": [0.9, 0.4, 0.2]}, naming=names.fit_history_metric))
            logged |= set(log_series(run, "bezier", {"t": t, "test_loss": 0.2 + np.sin(np.pi * t)}))
    families = {key.rsplit(names.SEP, 1)[0] for key in logged}
    expected = {family: sum(k.rsplit(names.SEP, 1)[0] == family for k in logged) for family in families}
    assert {"train/a", "fit/bezier", "path/bezier", "endpoint/a", "barrier/bezier/test", "diag/a"} <= families

    url = f"{server_store.tracking_uri}/#/experiments/{run.experiment_id}/runs/{run.run_id}/model-metrics"
    dom, shot = render(url, "mlflow-model-metrics.png", ready=_charts_drawn)
    sections = section_headers(dom)
    assert {name: n for name, n in sections.items() if name in expected} == expected, (
        f"expected one section per family with its charts, {expected}; the page shows {sections}"
    )
    flat = [name for name in sections if name not in expected]
    assert len(flat) <= 1, f"only one catch-all section may remain besides the families, got {flat}"
    assert_rendered(shot, width=1300, height=900)


def _charts_drawn(dom: str) -> bool:
    """Whether MLflow's charts (Plotly, lazily drawn) are on the page rather than their loading spinners."""
    return "main-svg" in dom
