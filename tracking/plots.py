"""Study-level figures from logged runs (matplotlib, Agg backend), saved as PNG and logged to the study's
parent run under ``figures/``.

* :func:`plot_metric_vs` — a metric against depth or parameter count, one line per dataset.
* :func:`plot_path_series` — a column along the path per model (test accuracy, ``hessian_lambda_max``).
* :func:`plot_gen_gap` — the endpoints' generalisation gap (train - test accuracy) against parameter count.
* :func:`study_figures` — all of them for a study, logged to its parent run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lgeom import names
from tracking.figures import save_figure
from tracking.query import natural_key, path_series, resolve_column, runs
from tracking.runs import attach_run
from tracking.store import Store, resolve_store

_X_ALIASES = {"depth": ("model.depth", "model.blocks"), names.PARAM_N_PARAMS: (names.PARAM_N_PARAMS,)}
# A column derived here for plotting (mean endpoint gap), not a logged metric.
_GEN_GAP_ACC = "gen_gap_acc"


def _pyplot():  # noqa: ANN202 - matplotlib's module
    # pyplot is imported on first use only: it picks a backend and costs a second at import.
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _resolve_x(df: pd.DataFrame, x: str) -> str:
    for name in _X_ALIASES.get(x, (x,)):
        try:
            return resolve_column(df, name)
        except KeyError:
            continue
    return resolve_column(df, x)  # raises with the candidates


def _save(fig: object, out: str | os.PathLike[str]) -> Path:
    path = save_figure(fig, out)  # type: ignore[arg-type]
    _pyplot().close(fig)
    return path


def plot_metric_vs(
    df: pd.DataFrame,
    metric: str,
    out: str | os.PathLike[str],
    *,
    x: str = "n_params",
    group: str = "dataset",
    log_x: bool | None = None,
) -> Path:
    """``metric`` (mean ± std over runs) against ``x`` (``depth``, ``n_params`` or any column), one line per
    ``group`` value; writes a PNG to ``out`` and returns its path.

    Raises:
        KeyError: ``metric``, ``x`` or ``group`` not found in the runs.
        ValueError: no run has a finite value for both.
    """
    plt = _pyplot()
    xc, yc, gc = _resolve_x(df, x), resolve_column(df, metric), resolve_column(df, group)
    work = pd.DataFrame(
        {
            "x": pd.to_numeric(df[xc], errors="coerce"),
            "y": pd.to_numeric(df[yc], errors="coerce"),
            "g": df[gc].fillna("-"),
        }
    )
    work = work[np.isfinite(work["x"]) & np.isfinite(work["y"])]
    if work.empty:
        raise ValueError(f"plot {metric} vs {x}: expected runs with finite values of both, got none")
    fig, ax = plt.subplots(figsize=(6, 4))
    for g, sub in sorted(work.groupby("g"), key=lambda kv: natural_key(kv[0])):
        agg = sub.groupby("x")["y"].agg(["mean", "std"]).sort_index()
        ax.errorbar(agg.index, agg["mean"], yerr=agg["std"].fillna(0), marker="o", capsize=3, label=str(g))
    if log_x if log_x is not None else (x == "n_params" and work["x"].max() / max(work["x"].min(), 1) > 20):
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {x}")
    ax.grid(alpha=0.3)
    ax.legend(title=group)
    return _save(fig, out)


def plot_path_series(
    df: pd.DataFrame,
    column: str,
    out: str | os.PathLike[str],
    *,
    paths: Sequence[str] = (names.LINE, "bezier"),
    group: str = "model",
    store: Store | None = None,
) -> Path:
    """``column`` along each path (one panel per path) per ``group`` (mean over runs, band = ± std), e.g.
    ``test_acc`` or ``hessian_lambda_max``; points where the column is NaN are skipped.

    Raises:
        ValueError: no run has that column along any of ``paths``.
    """
    plt = _pyplot()
    store = store or resolve_store()
    gc = resolve_column(df, group)
    fig, axes = plt.subplots(1, len(paths), figsize=(5 * len(paths), 4), squeeze=False)
    drawn = 0
    for ax, path in zip(axes[0], paths):
        for g, sub in sorted(df.groupby(df[gc].fillna("-")), key=lambda kv: natural_key(kv[0])):
            series = []
            for rid in sub["run_id"]:
                try:
                    s = path_series(rid, path, store=store)
                except KeyError:
                    continue
                if column in s.columns:
                    series.append(s[["t", column]].dropna())
            if not series:
                continue
            grid = series[0]["t"].to_numpy()
            values = np.array([np.interp(grid, s["t"].to_numpy(), s[column].to_numpy()) for s in series])
            mean = values.mean(axis=0)
            ax.plot(grid, mean, marker=".", label=f"{g} (n={len(series)})")
            if len(series) > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
            drawn += 1
        ax.set_title(path)
        ax.set_xlabel("t")
        ax.set_ylabel(column)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title=group, fontsize=8)
    if not drawn:
        plt.close(fig)
        raise ValueError(f"plot {column} along {', '.join(paths)}: expected runs with that series, got none")
    return _save(fig, out)


def plot_gen_gap(
    df: pd.DataFrame,
    out: str | os.PathLike[str],
    *,
    x: str = "n_params",
    group: str = "dataset",
    endpoints: Sequence[str] = names.ENDPOINTS,
) -> Path:
    """Generalisation gap of the endpoints, mean over ``endpoints`` of
    ``endpoint/<e>/train_acc - endpoint/<e>/test_acc``
    (percentage points), against ``x`` per ``group``.

    Raises:
        KeyError: the runs have no endpoint accuracies.
    """
    gaps = []
    for e in endpoints:
        tr, te = (f"metrics.{names.endpoint_metric(e, split, 'acc')}" for split in ("train", "test"))
        if tr in df.columns and te in df.columns:
            gaps.append(pd.to_numeric(df[tr], errors="coerce") - pd.to_numeric(df[te], errors="coerce"))
    if not gaps:
        raise KeyError(
            "generalisation gap: expected metrics endpoint/<endpoint>/train_acc and /test_acc "
            f"for {', '.join(endpoints)}, got none"
        )
    work = df.copy()
    work[f"metrics.{_GEN_GAP_ACC}"] = pd.concat(gaps, axis=1).mean(axis=1)
    return plot_metric_vs(work, _GEN_GAP_ACC, out, x=x, group=group)


def study_figures(
    study: str,
    out_dir: str | os.PathLike[str],
    *,
    store: Store | None = None,
    parent_run_id: str | None = None,
    log: bool = True,
) -> list[Path]:
    """Every study figure the logged runs allow (figures lacking data are skipped), saved under ``out_dir``
    and, with ``log``, uploaded (and verified) to ``figures/`` of the parent run: ``parent_run_id`` or the
    newest run of the study with stage ``study``.

    Returns:
        the PNG paths written.
    """
    store = store or resolve_store()
    df = runs(study, store=store, children_only=True)
    out = Path(out_dir)
    made: list[Path] = []
    auc = names.barrier_metric("bezier", "test", "acc_auc")
    barrier = names.barrier_metric(names.LINE, "test", "loss_barrier")
    jobs = [
        ("acc_auc_vs_depth", lambda p: plot_metric_vs(df, auc, p, x="depth")),
        ("acc_auc_vs_params", lambda p: plot_metric_vs(df, auc, p, x=names.PARAM_N_PARAMS)),
        ("loss_barrier_vs_params", lambda p: plot_metric_vs(df, barrier, p, x=names.PARAM_N_PARAMS)),
        ("path_test_acc", lambda p: plot_path_series(df, names.split_column("test", "acc"), p, store=store)),
        (
            "path_lambda_max",
            lambda p: plot_path_series(df, names.probe_column(names.HESSIAN, "lambda_max"), p, store=store),
        ),
        ("gen_gap_vs_params", lambda p: plot_gen_gap(df, p)),
    ]
    for name, make in jobs:
        try:
            made.append(make(out / Path(names.figure_artifact(name)).name))
        except (KeyError, ValueError):
            continue
    if log and made:
        if parent_run_id is None:
            parents = runs(study, store=store, stage=names.STAGE_STUDY, status=None)
            parent_run_id = None if parents.empty else str(parents.iloc[0]["run_id"])
        if parent_run_id is not None:
            run = attach_run(store, parent_run_id)
            for p in made:
                run.log_artifact(p, names.FIGURES_DIR)
            run.verify()
    return made
