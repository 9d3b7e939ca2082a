"""Study-level figures from logged runs, drawn over the matrix axes that vary (matplotlib object API on the
Agg canvas), saved as PNG and logged to the study's parent run with ``mlflow.log_figure``.

* :func:`figure_axes` — which figures a study's runs allow: a metric against the parameter count when it
  varies, against depth when depth is the only size axis that varies; one panel per dataset; one colour per
  value of the other varying axes (optimizer, activation ...); axes with one value are left out.
* :func:`metric_vs_figure` — a metric (mean ± std over seed pairs) against ``x``.
* :func:`metric_by_setting_figure` — a metric per setting (seed pairs as dots) when no size axis varies.
* :func:`gen_gap_frame` / :func:`gen_gap_figure` — the endpoints' generalisation gap (train - test accuracy).
* :func:`path_series_figure` — a column along each path kind, one colour per setting, aligned paths dashed.
* :func:`study_figure_set` — every figure the runs allow, as ``{name: Figure}``.
* :func:`study_figures` — those figures saved under a folder and, optionally, logged to the parent run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from lgeom import names
from tracking.figures import T_LABEL, save_figure
from tracking.log import TrackedRun, log_figure
from tracking.query import (
    DATASET_AXIS,
    is_numeric_axis,
    natural_key,
    path_tables,
    resolve_column,
    runs,
    varying_axes,
)
from tracking.runs import attach_run
from tracking.store import Store, resolve_store

#: The x axes a study figure can have, and the params each reads (the first present one).
X_PARAMS = "params"
X_DEPTH = "depth"
#: A figure with one column of points per setting (no numeric x axis varies).
X_SETTING = "setting"
_X_COLUMNS = {X_PARAMS: (names.PARAM_N_PARAMS,), X_DEPTH: ("model.depth", "model.blocks")}
_X_LABELS = {X_PARAMS: "trainable parameters (count, log scale)", X_DEPTH: "depth (layers)"}
#: Model params that set the model's size: folded into the parameter count on the x axis.
_SIZE_SECTION = "model"
# A column derived here for plotting (mean endpoint gap), not a logged metric.
_GEN_GAP_ACC = "gen_gap_acc"
_GEN_GAP_LABEL = f"endpoint generalisation gap, train - test accuracy [{names.PP}]"
_ALIGNED_STYLE = "--"


@dataclass(frozen=True)
class FigureAxes:
    """How a study figure splits the runs.

    Attributes:
        x: the param on the x axis (``n_params``, ``model.depth``), ``None`` for figures along a path.
        panel: the param with one panel per value (``data.name``), ``None`` for a single panel.
        colour: the params whose values together name a line's colour (``train.optimizer``, ...).
    """

    x: str | None
    panel: str | None
    colour: tuple[str, ...]


def _numeric_values(df: pd.DataFrame, param: str) -> int:
    col = f"params.{param}"
    if col not in df.columns:
        return 0
    return int(pd.to_numeric(df[col], errors="coerce").dropna().nunique())


def figure_axes(df: pd.DataFrame) -> dict[str, FigureAxes]:
    """The figure layouts the runs of ``df`` (a :func:`tracking.query.runs` frame of trials) allow, keyed by
    x axis kind: :data:`X_PARAMS` when the parameter count takes several values (log-scale x), :data:`X_DEPTH`
    when ``model.depth`` varies and no other size param of the model does, :data:`X_SETTING` (one column of
    points per setting) when neither does but other axes vary, and ``"path"`` (along t) always.
    Each has one panel per dataset when ``data.name`` varies, and one colour per combination of the other
    varying axes, so no line averages over different optimizers, activations or learning rates; a line's
    points average over seed pairs only. Axes with one value are left out.
    """
    axes = varying_axes(df)
    panel = DATASET_AXIS if DATASET_AXIS in axes else None
    rest = [a for a in axes if a != panel]
    size = [a for a in rest if a.startswith(f"{_SIZE_SECTION}.") and is_numeric_axis(df[f"params.{a}"])]
    # categorical axes (optimizer, activation) name the colour first, numeric ones (lr) follow
    rest.sort(key=lambda a: is_numeric_axis(df[f"params.{a}"]))
    out: dict[str, FigureAxes] = {}
    if _numeric_values(df, names.PARAM_N_PARAMS) > 1:
        out[X_PARAMS] = FigureAxes(names.PARAM_N_PARAMS, panel, tuple(a for a in rest if a not in size))
    depth = next((c for c in _X_COLUMNS[X_DEPTH] if c in size), None)
    if depth is not None and size == [depth] and _numeric_values(df, depth) > 1:
        out[X_DEPTH] = FigureAxes(depth, panel, tuple(a for a in rest if a != depth))
    if not out and rest:
        out[X_SETTING] = FigureAxes(None, panel, tuple(rest))
    out["path"] = FigureAxes(None, panel, tuple(rest))
    return out


def colour_labels(df: pd.DataFrame, colour: Sequence[str]) -> pd.Series:
    """One label per run naming its values of the ``colour`` axes: categorical values as they are
    (``sgd``), numeric ones with the axis' last name part (``lr=0.05``), joined by ``, ``; ``all`` without
    axes.
    """
    if not colour:
        return pd.Series(["all"] * len(df), index=df.index)
    parts = []
    for axis in colour:
        values = df[f"params.{axis}"] if f"params.{axis}" in df.columns else pd.Series("-", index=df.index)
        short = axis.rsplit(".", 1)[-1]
        numeric = is_numeric_axis(values)
        parts.append(values.fillna("-").astype(str).map(lambda v, s=short, n=numeric: f"{s}={v}" if n else v))
    label = parts[0]
    for p in parts[1:]:
        label = label + ", " + p
    return label


def _panels(df: pd.DataFrame, panel: str | None) -> list[tuple[str, pd.DataFrame]]:
    if panel is None:
        return [("", df)]
    col = f"params.{panel}"
    keys = df[col].fillna("-").astype(str) if col in df.columns else pd.Series("-", index=df.index)
    return [(str(k), sub) for k, sub in sorted(df.groupby(keys), key=lambda kv: natural_key(kv[0]))]


def metric_label(metric: str) -> str:
    """An axis label for ``metric``: its quantity, the rest of its name and its unit (from
    :data:`lgeom.names.QUANTITY_INFO`), e.g. ``acc_auc (bezier, test) [pp x t]``.
    """
    parsed = names.split_metric_name(metric)
    if parsed is None:
        return metric
    family, middle, quantity = parsed
    try:
        unit = names.quantity_info(family, quantity)[0]
    except KeyError:
        return metric
    where = f" ({', '.join(middle)})" if middle else ""
    return f"{family} {quantity}{where} [{unit}]"


def _resolve_x(df: pd.DataFrame, x: str) -> str:
    for name in _X_COLUMNS.get(x, (x,)):
        try:
            return resolve_column(df, name)
        except KeyError:
            continue
    return resolve_column(df, x)  # raises with the candidates


def metric_vs_figure(
    df: pd.DataFrame,
    metric: str,
    *,
    x: str = names.PARAM_N_PARAMS,
    panel: str | None = None,
    colour: Sequence[str] = (),
    log_x: bool | None = None,
    ylabel: str | None = None,
) -> Figure:
    """``metric`` against ``x`` (``n_params``, ``depth``, ``model.depth`` or any column): one panel per
    ``panel`` value, one line per combination of the ``colour`` axes, each point the mean over the runs
    (seed pairs) of one setting with ± std bars when there are several; the legend gives n. Log-scale x for
    parameter counts (``log_x=None``), linear otherwise.

    Raises:
        KeyError: ``metric`` or ``x`` not found in the runs.
        ValueError: no run has a finite value for both.
    """
    xc, yc = _resolve_x(df, x), resolve_column(df, metric)
    work = df.assign(_x=pd.to_numeric(df[xc], errors="coerce"), _y=pd.to_numeric(df[yc], errors="coerce"))
    work = work[np.isfinite(work["_x"]) & np.isfinite(work["_y"])]
    if work.empty:
        raise ValueError(f"plot {metric} vs {x}: expected runs with finite values of both, got none")
    work = work.assign(_c=colour_labels(work, colour))
    params_x = x in (names.PARAM_N_PARAMS, X_PARAMS)
    panels = _panels(work, panel)
    fig = Figure(figsize=(5.2 * len(panels), 4.2))
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    labels = sorted(work["_c"].unique(), key=natural_key)
    colours = {c: f"C{i % 10}" for i, c in enumerate(labels)}
    for ax, (title, sub) in zip(axes, panels):
        for label, group in sorted(sub.groupby("_c"), key=lambda kv: natural_key(kv[0])):
            agg = group.groupby("_x")["_y"].agg(["mean", "std", "count"]).sort_index()
            n_lo, n_hi = int(agg["count"].min()), int(agg["count"].max())
            n_text = f"n={n_lo}" if n_lo == n_hi else f"n={n_lo}-{n_hi}"
            yerr = agg["std"].where(agg["count"] > 1) if n_hi > 1 else None
            ax.errorbar(
                agg.index,
                agg["mean"],
                yerr=None if yerr is None else yerr.fillna(0).to_numpy(),
                marker="o",
                capsize=3,
                color=colours[label],
                label=f"{label} ({n_text})",
            )
        if log_x if log_x is not None else params_x:
            ax.set_xscale("log")
            # one labelled tick per parameter count drawn; matplotlib's minor log labels collide
            ticks = sorted(set(sub["_x"]))
            ax.set_xticks(ticks, [f"{v:,.0f}" for v in ticks], rotation=30 if len(ticks) > 4 else 0)
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(_X_LABELS[X_PARAMS] if params_x else _X_LABELS.get(x, x.rsplit(".", 1)[-1]))
        ax.set_title(f"{panel.rsplit('.', 1)[-1]} = {title}" if panel else "")
        ax.grid(alpha=0.3)
        ax.legend(title=", ".join(a.rsplit(".", 1)[-1] for a in colour) or None, fontsize=8)
    axes[0].set_ylabel(ylabel or metric_label(metric))
    fig.suptitle(f"{metric}: mean ± std over seed pairs (n = seed pairs per point)", fontsize=10)
    return fig


def metric_by_setting_figure(
    df: pd.DataFrame, metric: str, *, panel: str | None = None, colour: Sequence[str] = ()
) -> Figure:
    """``metric`` per setting (the values of the ``colour`` axes, one column and colour each; one panel per
    ``panel`` value): every run (seed pair) a dot, the mean a bar; the tick label gives n.

    Raises:
        KeyError: ``metric`` not found in the runs.
        ValueError: no run has a finite value.
    """
    yc = resolve_column(df, metric)
    work = df.assign(_y=pd.to_numeric(df[yc], errors="coerce"))
    work = work[np.isfinite(work["_y"])]
    if work.empty:
        raise ValueError(f"plot {metric} by setting: expected runs with finite values, got none")
    work = work.assign(_c=colour_labels(work, colour))
    labels = sorted(work["_c"].unique(), key=natural_key)
    panels = _panels(work, panel)
    fig = Figure(figsize=(max(4.0, 1.2 * len(labels) + 1.5) * len(panels), 4.6))
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (title, sub) in zip(axes, panels):
        ticks = []
        for i, label in enumerate(labels):
            values = sub.loc[sub["_c"] == label, "_y"].to_numpy()
            ticks.append(label.replace(", ", "\n") + f"\n(n={len(values)})")  # one axis value per line
            if not len(values):
                continue
            spread = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
            ax.plot(i + spread, values, "o", color=f"C{i % 10}", alpha=0.7)
            ax.plot([i - 0.25, i + 0.25], [values.mean()] * 2, "-", color=f"C{i % 10}", linewidth=2)
        ax.set_xticks(range(len(labels)), ticks, fontsize=8)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_title(f"{panel.rsplit('.', 1)[-1]} = {title}" if panel else "")
        ax.set_xlabel(", ".join(a.rsplit(".", 1)[-1] for a in colour) or "setting")
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel(metric_label(metric))
    fig.suptitle(f"{metric}: each seed pair a dot, the bar their mean (n = seed pairs)", fontsize=10)
    return fig


def gen_gap_frame(df: pd.DataFrame, endpoints: Sequence[str] = names.ENDPOINTS) -> pd.DataFrame:
    """``df`` with column ``metrics.gen_gap_acc``: the mean over ``endpoints`` of the endpoint's train minus
    test accuracy (percentage points).

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
    return df.assign(**{f"metrics.{_GEN_GAP_ACC}": pd.concat(gaps, axis=1).mean(axis=1)})


def gen_gap_figure(df: pd.DataFrame, **kwargs: Any) -> Figure:
    """The endpoints' generalisation gap (:func:`gen_gap_frame`, percentage points) against ``x``; the
    arguments are :func:`metric_vs_figure`'s.

    Raises:
        KeyError: the runs have no endpoint accuracies.
    """
    return metric_vs_figure(gen_gap_frame(df), _GEN_GAP_ACC, ylabel=_GEN_GAP_LABEL, **kwargs)


SeriesLoader = Callable[[str, str], "pd.DataFrame | None"]


def series_loader(store: Store) -> SeriesLoader:
    """``load(run_id, path) -> path table or None`` reading :func:`tracking.query.path_tables`: each run's
    paths fetched together, once.
    """
    cache: dict[str, dict[str, pd.DataFrame]] = {}

    def load(run_id: str, path: str) -> pd.DataFrame | None:
        if run_id not in cache:
            cache[run_id] = path_tables(run_id, store=store)
        return cache[run_id].get(path)

    return load


def path_series_figure(
    df: pd.DataFrame,
    column: str,
    load: SeriesLoader,
    *,
    paths: Sequence[str] = names.PATHS,
    panel: str | None = None,
    colour: Sequence[str] = (),
) -> Figure:
    """``column`` (``test_acc``, ``hessian_lambda_max`` ...) along each path kind of ``paths`` (one panel
    column each; one panel row per ``panel`` value), one colour per ``colour`` setting: the mean over its
    runs (seed pairs), a ± std band when there are several; the aligned variant of a path dashed in the same
    colour. ``load(run_id, path)`` gives a run's path table or ``None``.

    Raises:
        ValueError: no run has that column along any of ``paths``.
    """
    work = df.assign(_c=colour_labels(df, colour))
    ids = [str(r) for r in work["run_id"]]
    kept = [
        p
        for p in paths
        if any((t := load(r, k)) is not None and column in t.columns for r in ids for k in (p, names.aligned(p)))
    ]
    if not kept:
        raise ValueError(f"plot {column} along {', '.join(paths)}: expected runs with that series, got none")
    paths = kept
    panels = _panels(work, panel)
    labels = sorted(work["_c"].unique(), key=natural_key)
    colours = {c: f"C{i % 10}" for i, c in enumerate(labels)}
    fig = Figure(figsize=(4.6 * len(paths) + 2.5, 3.8 * len(panels)), layout="constrained")
    grid = fig.subplots(len(panels), len(paths), squeeze=False, sharey=True)
    unit = names.QUANTITY_INFO[names.PATH].get(column, ("", ""))[0]
    for row, (title, sub) in zip(grid, panels):
        for ax, path in zip(row, paths):
            for label, group in sorted(sub.groupby("_c"), key=lambda kv: natural_key(kv[0])):
                for kind, style in ((path, "-"), (names.aligned(path), _ALIGNED_STYLE)):
                    tables = [load(str(rid), kind) for rid in group["run_id"]]
                    series = [t[["t", column]].dropna() for t in tables if t is not None and column in t.columns]
                    series = [s for s in series if len(s)]
                    if not series:
                        continue
                    ts = series[0]["t"].to_numpy()
                    values = np.array([np.interp(ts, s["t"].to_numpy(), s[column].to_numpy()) for s in series])
                    mean = values.mean(axis=0)
                    aligned = " aligned" if kind != path else ""
                    ax.plot(
                        ts,
                        mean,
                        style,
                        marker=".",  # the probed points: a column probed at a few t only is not a smooth curve
                        color=colours[label],
                        label=f"{label}{aligned} (n={len(series)})",
                    )
                    if len(series) > 1:
                        std = values.std(axis=0, ddof=1)
                        ax.fill_between(ts, mean - std, mean + std, color=colours[label], alpha=0.15)
            where = f", {panel.rsplit('.', 1)[-1]} = {title}" if panel else ""
            ax.set_title(f"{path}{where}")
            ax.set_xlabel(T_LABEL)
            ax.grid(alpha=0.3)
        row[0].set_ylabel(f"{column} [{unit}]" if unit else column)
    # one legend for all panels, right of the first row: with many settings it would hide the curves
    handles: dict[str, object] = {}
    for ax in grid.flat:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    grid[0][-1].legend(
        list(handles.values()),
        list(handles),
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        ncol=1 + len(handles) // 24,
        title=", ".join(a.rsplit(".", 1)[-1] for a in colour) or None,
    )
    fig.suptitle(f"{column} along the paths: mean ± std over seed pairs (n); dashed = B aligned onto A", fontsize=10)
    return fig


def study_figure_set(df: pd.DataFrame, store: Store | None = None) -> dict[str, Figure]:
    """Every study figure the trial runs of ``df`` allow (:func:`figure_axes` decides; figures lacking data are
    skipped), as ``{name: Figure}`` in a fixed order.
    """
    if df.empty:
        return {}
    plan = figure_axes(df)
    auc = names.barrier_metric("bezier", "test", "acc_auc")
    barrier = names.barrier_metric(names.LINE, "test", "loss_barrier")
    jobs: list[tuple[str, Callable[[], Figure]]] = []
    if X_PARAMS in plan:
        p = plan[X_PARAMS]
        kw = {"x": names.PARAM_N_PARAMS, "panel": p.panel, "colour": p.colour}
        jobs += [
            ("acc_auc_vs_params", lambda: metric_vs_figure(df, auc, **kw)),  # type: ignore[arg-type]
            ("loss_barrier_vs_params", lambda: metric_vs_figure(df, barrier, **kw)),  # type: ignore[arg-type]
            ("gen_gap_vs_params", lambda: gen_gap_figure(df, **kw)),
        ]
    if X_DEPTH in plan:
        d = plan[X_DEPTH]
        jobs.append(
            ("acc_auc_vs_depth", lambda: metric_vs_figure(df, auc, x=d.x or X_DEPTH, panel=d.panel, colour=d.colour))
        )
    if X_SETTING in plan:
        c = plan[X_SETTING]
        jobs += [
            (f"{stem}_by_setting", lambda m=metric: metric_by_setting_figure(df, m, panel=c.panel, colour=c.colour))
            for stem, metric in (("acc_auc", auc), ("loss_barrier", barrier))
        ]
    load = series_loader(store or resolve_store())
    along = plan["path"]
    for name, column in (
        ("path_test_acc", names.split_column("test", "acc")),
        ("path_lambda_max", names.probe_column(names.HESSIAN, "lambda_max")),
    ):
        jobs.append(
            (
                name,
                lambda c=column: path_series_figure(df, c, load, panel=along.panel, colour=along.colour),
            )
        )
    out: dict[str, Figure] = {}
    for name, make in jobs:
        try:
            out[name] = make()
        except (KeyError, ValueError):
            continue
    return out


def log_study_figures(run: TrackedRun, figures: Mapping[str, Figure]) -> list[str]:
    """Log each figure to ``figures/<name>.png`` of ``run`` with ``mlflow.log_figure``; returns the paths."""
    return [log_figure(run, fig, names.figure_artifact(name)) for name, fig in figures.items()]


def study_figures(
    study: str,
    out_dir: str | os.PathLike[str],
    *,
    store: Store | None = None,
    parent_run_id: str | None = None,
    log: bool = True,
) -> list[Path]:
    """Every study figure the logged runs allow (:func:`study_figure_set`), saved as PNG under ``out_dir``
    and, with ``log``, logged with ``mlflow.log_figure`` to ``figures/`` of the parent run:
    ``parent_run_id`` or the newest run of the study with stage ``study``.

    Returns:
        the PNG paths written.
    """
    store = store or resolve_store()
    df = runs(study, store=store, stage=names.STAGE_TRIAL, children_only=True)
    figures = study_figure_set(df, store)
    out = Path(out_dir)
    made = [save_figure(fig, out / Path(names.figure_artifact(name)).name) for name, fig in figures.items()]
    if log and figures:
        if parent_run_id is None:
            parents = runs(study, store=store, stage=names.STAGE_STUDY, status=None)
            parent_run_id = None if parents.empty else str(parents.iloc[0]["run_id"])
        if parent_run_id is not None:
            log_study_figures(attach_run(store, parent_run_id), figures)
    return made
