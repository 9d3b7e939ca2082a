"""Study figures: which matrix axes a figure is drawn over (vary / skip) on small synthetic runs tables, lines
that never average different optimizers, n counting seed pairs, log-scale x for parameter counts, the errors
for missing data (Agg, no store), and with a real server every figure of the known study logged to its
parent run with ``mlflow.log_figure``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lgeom import names
from tracking.figures import save_figure
from tracking.plots import (
    X_DEPTH,
    X_PARAMS,
    X_SETTING,
    FigureAxes,
    colour_labels,
    figure_axes,
    gen_gap_figure,
    metric_by_setting_figure,
    metric_vs_figure,
    path_series_figure,
    study_figures,
)

PNG = b"\x89PNG\r\n\x1a\n"
AUC = names.barrier_metric("bezier", "test", "acc_auc")


def _matrix(axes: dict[str, list[Any]], *, pairs: int = 2, n_params: Any = None) -> pd.DataFrame:
    """One run per seed pair of every combination of ``axes`` (param name -> values), with ``n_params`` from
    ``n_params(row)`` and a known AUC: 10 x depth + (5 for adam) + the pair index.
    """
    rows = []
    keys = list(axes)
    for values in itertools.product(*axes.values()):
        setting = dict(zip(keys, values))
        for pair in range(pairs):
            row: dict[str, Any] = {f"params.{k}": str(v) for k, v in setting.items()}
            row["run_id"] = f"{'-'.join(map(str, values))}-{pair}"
            row["params.train.seeds"] = f"[{2 * pair}, {2 * pair + 1}]"
            depth = float(setting.get("model.depth", 1))
            row["params.n_params"] = str(n_params(setting) if n_params else 1000 * depth)
            row[f"metrics.{AUC}"] = 10 * depth + 5 * (setting.get("train.optimizer") == "adam") + pair
            for e in names.ENDPOINTS:
                row[f"metrics.{names.endpoint_metric(e, 'train', 'acc')}"] = 100.0
                row[f"metrics.{names.endpoint_metric(e, 'test', 'acc')}"] = 90.0 - depth
            rows.append(row)
    return pd.DataFrame(rows)


def test_axes_with_one_value_are_skipped() -> None:
    df = _matrix({"model.depth": [2], "train.optimizer": ["sgd", "adam"], "data.name": ["moons"]})
    plan = figure_axes(df)
    assert set(plan) == {X_SETTING, "path"}, "one depth and one size: nothing against depth or parameters"
    assert plan["path"] == plan[X_SETTING] == FigureAxes(None, None, ("train.optimizer",)), "one dataset: one panel"
    assert set(figure_axes(_matrix({"train.optimizer": ["sgd"]}))) == {"path"}, "one setting: only along paths"


def test_settings_side_by_side_when_no_size_axis_varies() -> None:
    df = _matrix({"train.optimizer": ["sgd", "adam"], "data.name": ["moons", "xor"]}, pairs=3)
    fig = metric_by_setting_figure(df, AUC, panel="data.name", colour=("train.optimizer",))
    assert [ax.get_title() for ax in fig.axes] == ["name = moons", "name = xor"]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["adam\n(n=3)", "sgd\n(n=3)"]
    dots, bar = ax.get_lines()[0], ax.get_lines()[1]
    np.testing.assert_allclose(np.asarray(dots.get_ydata(), float), [15.0, 16.0, 17.0])  # adam, pairs 0-2
    np.testing.assert_allclose(np.asarray(bar.get_ydata(), float), [16.0, 16.0])


def test_depth_study_panels_per_dataset_and_x_axes() -> None:
    df = _matrix({"model.depth": [8, 26, 38], "data.name": ["cifar10", "cifar100"]})
    plan = figure_axes(df)
    assert plan[X_DEPTH] == FigureAxes("model.depth", "data.name", ())
    assert plan[X_PARAMS] == FigureAxes(names.PARAM_N_PARAMS, "data.name", ())
    assert plan["path"] == FigureAxes(None, "data.name", ("model.depth",))


def test_categorical_axes_colour_and_size_axes_go_to_the_parameter_count() -> None:
    df = _matrix(
        {
            "model.width": [16, 64],
            "model.depth": [1, 2],
            "model.activation": ["relu", "tanh"],
            "train.optimizer": ["sgd", "adam"],
            "train.lr": [0.05],
        },
        n_params=lambda s: s["model.width"] * 10 * s["model.depth"],
    )
    df.loc[df["params.train.optimizer"] == "sgd", "params.train.momentum"] = "0.9"  # SGD-only: not an axis
    plan = figure_axes(df)
    assert X_DEPTH not in plan, "depth and width both vary: the parameter count is the x axis"
    assert plan[X_PARAMS] == FigureAxes(names.PARAM_N_PARAMS, None, ("model.activation", "train.optimizer"))
    assert plan["path"].colour == ("model.activation", "train.optimizer", "model.width", "model.depth")
    labels = colour_labels(df, ("train.optimizer", "model.width"))
    assert set(labels) == {"sgd, width=16", "sgd, width=64", "adam, width=16", "adam, width=64"}
    assert set(colour_labels(df, ())) == {"all"}


def test_lines_never_average_optimizers_and_n_counts_seed_pairs() -> None:
    df = _matrix({"model.depth": [8, 26], "train.optimizer": ["sgd", "adam"]}, pairs=3)
    fig = metric_vs_figure(df, AUC, x=X_DEPTH, colour=("train.optimizer",))
    ax = fig.axes[0]
    lines = {bars.get_label(): bars.lines[0] for bars in ax.containers}
    assert set(lines) == {"sgd (n=3)", "adam (n=3)"}
    np.testing.assert_allclose(
        np.asarray(lines["sgd (n=3)"].get_ydata(), float), [81.0, 261.0]
    )  # mean of pairs 0, 1, 2: +1
    np.testing.assert_allclose(np.asarray(lines["adam (n=3)"].get_ydata(), float), [86.0, 266.0])
    assert ax.get_xscale() == "linear" and "depth" in ax.get_xlabel()
    assert ax.get_ylabel() == "barrier acc_auc (bezier, test) [pp x t]"
    sizes = metric_vs_figure(df, AUC, x=names.PARAM_N_PARAMS, colour=("train.optimizer",)).axes[0]
    assert sizes.get_xscale() == "log" and "parameters" in sizes.get_xlabel()


def test_one_panel_per_dataset() -> None:
    df = _matrix({"model.depth": [8, 26], "data.name": ["cifar100", "cifar10"]}, pairs=1)
    fig = metric_vs_figure(df, AUC, x=X_DEPTH, panel="data.name")
    assert [ax.get_title() for ax in fig.axes] == ["name = cifar10", "name = cifar100"]
    assert [len(ax.containers) for ax in fig.axes] == [1, 1]
    assert "(n=1)" in fig.axes[0].get_legend().get_texts()[0].get_text()


def test_path_series_one_colour_per_setting_aligned_dashed() -> None:
    df = _matrix({"train.optimizer": ["sgd", "adam"]}, pairs=2)
    t = np.linspace(0, 1, 5)
    acc = names.split_column("test", "acc")

    def load(run_id: str, path: str) -> pd.DataFrame | None:
        if path not in ("linear", names.aligned("linear"), "bezier"):
            return None
        drop = 20.0 if run_id.startswith("sgd") else 10.0
        return pd.DataFrame({"t": t, acc: 90 - drop * np.sin(np.pi * t) / (2 if "aligned" in path else 1)})

    fig = path_series_figure(df, acc, load, colour=("train.optimizer",))
    assert [ax.get_title() for ax in fig.axes] == ["linear", "bezier"], "polychain has no series: no panel"
    linear = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(linear) == {"sgd (n=2)", "sgd aligned (n=2)", "adam (n=2)", "adam aligned (n=2)"}
    assert linear["sgd aligned (n=2)"].get_linestyle() == "--"
    assert linear["sgd (n=2)"].get_color() == linear["sgd aligned (n=2)"].get_color()
    assert min(linear["sgd (n=2)"].get_ydata()) == pytest.approx(70.0)
    assert fig.axes[0].get_ylabel() == "test_acc [%]"
    with pytest.raises(ValueError, match="plot hessian_lambda_max along linear, bezier, polychain: expected runs"):
        path_series_figure(df, names.probe_column(names.HESSIAN, "lambda_max"), load)


def test_png_and_generalisation_gap(tmp_path: Path) -> None:
    df = _matrix({"model.depth": [8, 26]})
    out = save_figure(metric_vs_figure(df, AUC, x=X_DEPTH), tmp_path / "auc.png")
    assert out == tmp_path / "auc.png" and out.read_bytes()[:8] == PNG and out.stat().st_size > 5_000
    gap = gen_gap_figure(df, x=X_DEPTH)
    assert gap.axes[0].get_ylabel() == "endpoint generalisation gap, train - test accuracy [pp]"
    line = gap.axes[0].containers[0].lines[0]
    np.testing.assert_allclose(np.asarray(line.get_ydata(), float), [18.0, 36.0])  # 100 - (90 - depth)


def test_missing_data_is_an_error() -> None:
    df = _matrix({"model.depth": [8, 26]})
    aux = names.barrier_metric("bezier", "test", "acc_aux")
    with pytest.raises(KeyError, match=f"column '{aux}': expected a run field, param, tag or metric of the runs"):
        metric_vs_figure(df, aux)
    with pytest.raises(KeyError, match="column 'width'"):
        metric_vs_figure(df, AUC, x="width")
    empty = df.assign(**{f"metrics.{AUC}": float("nan")})
    with pytest.raises(ValueError, match=f"plot {AUC} vs depth: expected runs with finite values of both, got none"):
        metric_vs_figure(empty, AUC, x=X_DEPTH)
    with pytest.raises(
        KeyError, match="generalisation gap: expected metrics endpoint/<endpoint>/train_acc and /test_acc for a, b"
    ):
        gen_gap_figure(df.drop(columns=[c for c in df.columns if c.endswith("_acc")]))


@pytest.mark.integration
def test_study_figures_logged_to_parent(study: dict[str, Any], tmp_path: Any) -> None:
    paths = study_figures(study["name"], tmp_path, store=study["store"])
    made = {p.name for p in paths}
    assert {
        "acc_auc_vs_depth.png",
        "acc_auc_vs_params.png",
        "path_test_acc.png",
        "path_lambda_max.png",
        "gen_gap_vs_params.png",
    } <= made
    for p in paths:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 5_000
    listed = {i.path: i.file_size for i in study["store"].client().list_artifacts(study["parent"], "figures")}
    assert set(listed) == {f"figures/{p.name}" for p in paths} and all(size > 5_000 for size in listed.values())
