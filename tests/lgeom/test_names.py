"""The metric contract (``lgeom.names``): today's names exactly, the README table rendered from the module,
and no metric name spelled by hand anywhere else in the code.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from lgeom import names

ROOT = Path(__file__).resolve().parents[2]


def test_metric_names_are_the_documented_ones() -> None:
    assert names.endpoint_metric("a", "test", "acc") == "a.test_acc"
    assert names.endpoint_stat_metric("b", "samples_per_s") == "b.samples_per_s"
    assert names.history_prefix("a") == "a.history"
    assert names.barrier_metric("bezier", "test", "loss_barrier") == "bezier.test.loss_barrier"
    assert names.barrier_metric(None, "train", "acc_auc") == "train.acc_auc"
    assert names.gap_metric("linear", "gen_gap_max") == "linear.gen_gap_max"
    assert names.gap_metric(None, "gen_gap_acc_max") == "gen_gap_acc_max"
    assert names.triangle_metric("polychain", "angle_acb_deg") == "polychain.angle_acb_deg"
    assert names.triangle_metric("bezier", "dist_ac", point="mid") == "bezier.mid.dist_ac"
    assert names.fit_metric("bezier", "fit_loss") == "bezier.fit_loss"
    assert names.align_metric("similarity_after") == "align.similarity_after"
    assert names.probe_metric("hessian", "lambda_max", point="mid") == "hessian.mid.lambda_max"
    assert names.probe_metric("sharpness", "eps_avg") == "sharpness.eps_avg"
    assert names.probe_column("hessian", names.topk_quantity(3)) == "hessian_top3"
    assert names.trajectory_metric(names.PCA, "explained_variance_1") == "pca.explained_variance_1"
    assert names.trial_metric("compute_s") == "trial.compute_s"
    assert names.study_metric("cells_failed") == "study.cells_failed"
    assert names.series_metric("linear_aligned", "test_acc") == "linear_aligned.test_acc"
    assert names.tune_best_param("lr") == "best.lr"
    assert names.aligned(names.LINE) == "linear_aligned" and names.is_aligned("bezier_aligned")


def test_tag_and_artifact_names() -> None:
    assert (names.TAG_STUDY, names.TAG_CELL, names.TAG_CONFIG_HASH, names.TAG_STAGE) == (
        "lgeom.study",
        "lgeom.cell",
        "lgeom.config_hash",
        "lgeom.stage",
    )
    assert names.TAG_PARENT == "mlflow.parentRunId" and names.model_tag("a") == "lgeom.model.a"
    assert names.path_table_artifact("bezier") == "paths/bezier.csv"
    assert names.curve_artifact("bezier") == "curves/bezier.pt"
    assert names.spectrum_artifact("mid") == "spectra/mid.json"
    assert names.plane_artifact("slice_a") == "planes/slice_a.npz"
    assert names.figure_artifact("paths") == "figures/paths.png"
    assert names.endpoint_artifact("b_aligned") == "endpoints/b_aligned.pt"
    assert names.fit_artifact("polychain") == "fits/polychain.json"


def test_series_names_parse_back() -> None:
    assert names.parse_series_metric(names.series_metric("bezier", "hessian_lambda_max")) == (
        "bezier",
        "hessian_lambda_max",
    )
    assert names.parse_series_metric("hessian.a.lambda_max") is None
    assert names.parse_series_metric("best_test_acc") is None
    assert names.topk_columns(["t", "hessian_top2", "hessian_topk_mean", "hessian_top10"]) == [
        "hessian_top2",
        "hessian_top10",
    ]


def test_endpoint_names_and_errors() -> None:
    assert [names.endpoint_name(i) for i in range(3)] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="endpoint index: expected 0..25, got 26"):
        names.endpoint_name(26)


def test_readme_mlflow_layout_is_the_rendered_contract() -> None:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- contract:begin[^\n]*-->\n(.*?)\n<!-- contract:end -->", text, re.S)
    assert match, "README.md: expected the contract table between <!-- contract:begin --> and <!-- contract:end -->"
    assert match.group(1) == names.contract_markdown(), (
        "README.md's MLflow layout table differs from lgeom.names.contract_markdown(): paste the rendered table"
    )


# Metric names written out in full: a family or path, a dot, a quantity (``hessian.a.lambda_max``,
# ``bezier.test.acc_auc``, ``a.test_acc``), or pieces of one glued together in an f-string. (``study.``
# is left out: it is also the config section ``study.cpu``; the study's metrics use names.study_metric.)
_FULL_NAME = re.compile(
    r"^(a|b|mid|linear|bezier|polychain|hessian|sharpness|curvature|probe|pca|gradients|align|trial)"
    r"(_aligned)?\.[a-z]"
)
_PIECES = (
    ".test.",
    ".train.",
    ".test_",
    ".train_",
    "_loss",
    "_acc",
    "loss_barrier",
    "lambda_max",
    "hessian.",
    "sharpness.",
)
_SCANNED = ("lgeom", "tracking", "pipelines")


def _hand_spelled(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            pieces = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            # an f-string assembling a name: a constant piece of a metric name next to a formatted part
            if any(p in piece for piece in pieces for p in _PIECES) and len(node.values) > len(pieces):
                text = "".join(
                    piece if isinstance(v, ast.Constant) else "{}"
                    for v, piece in zip(node.values, [getattr(v, "value", "") for v in node.values])
                )
                if not any(w in text for w in (" ", ":", "(", "expected")):  # messages, not names
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: f{text!r}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if _FULL_NAME.match(node.value) and " " not in node.value:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    return found


def test_no_metric_name_is_spelled_by_hand() -> None:
    found = [
        hit
        for pkg in _SCANNED
        for p in sorted((ROOT / pkg).rglob("*.py"))
        if p != ROOT / "lgeom" / "names.py"
        for hit in _hand_spelled(p)
    ]
    assert not found, "build these names with lgeom.names:\n" + "\n".join(found)
