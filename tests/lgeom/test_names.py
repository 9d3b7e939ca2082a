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
    assert names.SEP == "/"
    assert names.endpoint_metric("a", "test", "acc") == "endpoint/a/test_acc"
    assert names.endpoint_stat_metric("b", "samples_per_s") == "endpoint/b/samples_per_s"
    assert names.history_prefix("a") == "train/a"
    assert names.history_metric("a", "train_loss") == "train/a/loss"
    assert names.history_metric("b", "test_acc") == "train/b/test_acc"
    assert names.history_metric("a", "lambda_max") == "train/a/lambda_max"
    assert names.history_metric("a", "two_over_lr") == "train/a/two_over_lr"
    assert names.fit_history_metric("bezier", "loss") == "fit/bezier/loss"
    assert names.barrier_metric("bezier", "test", "loss_barrier") == "barrier/bezier/test/loss"
    assert names.barrier_metric("bezier", "test", "loss_barrier_interp") == "barrier/bezier/test/loss_interp"
    assert names.barrier_metric(None, "train", "acc_auc") == "barrier/train/acc_auc"
    assert names.gap_metric("linear", "gen_gap_max") == "gap/linear/gen_gap_max"
    assert names.gap_metric(None, "gen_gap_acc_max") == "gap/gen_gap_acc_max"
    assert names.triangle_metric("polychain", "angle_acb_deg") == "triangle/polychain/angle_acb_deg"
    assert names.triangle_metric("bezier", "dist_ac", point="mid") == "triangle/bezier/mid/dist_ac"
    assert names.fit_metric("bezier", "fit_loss") == "fit/bezier/final_loss"
    assert names.fit_metric("bezier", "fit_time_s") == "fit/bezier/time_s"
    assert names.align_metric("similarity_after") == "align/similarity_after"
    assert names.probe_metric("hessian", "lambda_max", point="mid") == "hessian/mid/lambda_max"
    assert names.probe_metric("hessian", "n_hvp", point="a") == "diag/a/hessian_n_hvp"
    assert names.probe_metric("hessian", "converged") == "diag/hessian_converged"
    assert names.probe_metric("sharpness", "eps_avg") == "sharpness/eps_avg"
    assert names.probe_metric("sharpness", "eps_avg", point="a") == "sharpness/a/eps_avg"
    assert names.probe_column("hessian", names.topk_quantity(3)) == "hessian_top3"
    assert names.trajectory_metric(names.PCA, "explained_variance_1") == "pca/explained_variance_1"
    assert names.trial_metric("compute_s") == "trial/compute_s"
    assert [names.trial_metric(q) for q in names.TRIAL_TIMES] == [
        "trial/train_s",
        "trial/fit_s",
        "trial/path_eval_s",
        "trial/plane_s",
        "trial/connect_s",
        "trial/probe_s",
        "trial/log_s",
        "trial/compute_s",
        "trial/compute_cpu_s",
        "trial/wall_time_s",
    ]
    assert names.study_metric("cells_failed") == "study/cells_failed"
    assert names.series_metric("linear_aligned", "test_acc") == "path/linear_aligned/test_acc"
    assert names.tune_best_param("lr") == "best.lr"
    assert names.aligned(names.LINE) == "linear_aligned" and names.is_aligned("bezier_aligned")
    assert names.model_name("mlp2x16/moons/sgd", "a") == "mlp2x16-moons-sgd-a"
    assert names.model_name("mlp2x16/moons/sgd/lr=0.05", "b") == "mlp2x16-moons-sgd-lr=0_05-b"


def test_every_family_is_one_ui_section() -> None:
    # The first part of a name is its family: the MLflow UI groups metrics by what precedes the first "/".
    samples = [
        names.endpoint_metric("a", "test", "acc"),
        names.barrier_metric("linear", "train", "acc_drop"),
        names.series_metric("bezier", "test_loss"),
        names.history_metric("b", "train_acc"),
        names.probe_metric("curvature", "mc_mean", point="mid"),
        names.fit_metric("polychain", "fit_loss"),
    ]
    assert [s.split("/")[0] for s in samples] == ["endpoint", "barrier", "path", "train", "curvature", "fit"]


def test_tag_and_artifact_names() -> None:
    assert (names.TAG_STUDY, names.TAG_CELL, names.TAG_CONFIG_HASH, names.TAG_STAGE) == (
        "lgeom.study",
        "lgeom.cell",
        "lgeom.config_hash",
        "lgeom.stage",
    )
    assert names.TAG_PARENT == "mlflow.parentRunId" and names.model_tag("a") == "lgeom.model.a"
    assert (names.TAG_HOST, names.TAG_PID, names.TAG_PROC_START) == (
        "lgeom.sys.host",
        "lgeom.sys.pid",
        "lgeom.sys.proc_start",
    )
    assert (names.TAG_CURRENT_STAGE, names.TAG_GIT_COMMIT, names.TAG_GIT_DIRTY) == (
        "lgeom.current_stage",
        "mlflow.source.git.commit",
        "lgeom.git_dirty",
    )
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
    assert names.parse_series_metric("hessian/a/lambda_max") is None
    assert names.parse_series_metric("path/bezier") is None
    assert names.parse_series_metric("best_test_acc") is None
    assert names.topk_columns(["t", "hessian_top2", "hessian_topk_mean", "hessian_top10"]) == [
        "hessian_top2",
        "hessian_top10",
    ]


def test_endpoint_names_and_errors() -> None:
    assert [names.endpoint_name(i) for i in range(3)] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="endpoint index: expected 0..25, got 26"):
        names.endpoint_name(26)


def _readme_block(marker: str) -> str:
    """The text of README.md between ``<!-- <marker>:begin ... -->`` and ``<!-- <marker>:end -->``."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker}:begin[^\n]*-->\n(.*?)\n<!-- {marker}:end -->", text, re.S)
    assert match, f"README.md: expected a table between <!-- {marker}:begin --> and <!-- {marker}:end -->"
    return match.group(1)


def test_readme_mlflow_layout_is_the_rendered_contract() -> None:
    assert _readme_block("contract") == names.contract_markdown(), (
        "README.md's MLflow layout table differs from lgeom.names.contract_markdown(): paste the rendered table"
    )


def test_readme_units_table_is_the_rendered_quantity_info() -> None:
    assert _readme_block("units") == names.units_markdown(), (
        "README.md's units table differs from lgeom.names.units_markdown(): paste the rendered table"
    )


def test_every_reported_family_has_units_and_definitions() -> None:
    for family in names.REPORT_FAMILIES:
        assert names.QUANTITY_INFO[family], family
        for quantity, (unit, meaning) in names.QUANTITY_INFO[family].items():
            assert unit and meaning and "\n" not in meaning, (family, quantity)
    assert names.quantity_info(names.BARRIER, "loss") == ("nats", "max_t L(t) - max(L(0), L(1)) along the path")
    assert names.quantity_info(names.ENDPOINT, names.split_column("test", "acc"))[0] == "%"
    with pytest.raises(KeyError, match="quantity barrier/acc_dorp: expected one of acc_auc, acc_drop"):
        names.quantity_info(names.BARRIER, "acc_dorp")
    name = names.barrier_metric(names.aligned("polychain"), "test", "loss_barrier")
    assert names.split_metric_name(name) == ("barrier", ("polychain_aligned", "test"), "loss")
    assert names.split_metric_name("best_test_acc") is None
    assert names.report_table_artifact(names.BARRIER) == "tables/barrier.json"


# Metric names written out in full: a family, a slash, the rest (``hessian/a/lambda_max``,
# ``barrier/bezier/test/acc_auc``, ``endpoint/a/test_acc``), names of the old dotted shape
# (``bezier.test.loss_barrier``), or pieces of one glued together in an f-string. (``study.`` is left out
# of the dotted shape: it is also the config section ``study.cpu``.)
_FULL_NAME = re.compile(
    r"^((a|b|mid|linear|bezier|polychain|hessian|sharpness|curvature|probe|pca|gradients|align|trial)(_aligned)?\.[a-z]"
    r"|(endpoint|train|fit|barrier|gap|path|triangle|align|diag|hessian|sharpness|curvature|probe|pca|gradients"
    r"|trial|study)/[a-z])"
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
    "/test/",
    "/train/",
    "/test_",
    "/train_",
    "hessian/",
    "sharpness/",
    "barrier/",
    "endpoint/",
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
