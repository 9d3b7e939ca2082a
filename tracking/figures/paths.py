"""Figures of mode-connectivity results: loss and accuracy along paths, and the plane through A, C, B.

Only matplotlib (object API with the Agg canvas, so no global backend is changed) and NumPy are used;
inputs are plain mappings of arrays, e.g. ``lgeom.table.Table`` objects or ``PlaneResult.to_arrays()``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lgeom import names
from tracking.figures import save_figure

SPLIT_STYLES = dict(zip(names.SPLITS, ("--", "-")))


def _column(table: Any, name: str) -> np.ndarray | None:
    try:
        return np.asarray(table[name], dtype=np.float64)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def plot_paths(tables: Mapping[str, Any], path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Loss (left) and accuracy (right) along every path on one figure; train dashed, test solid.

    Args:
        tables: path name -> table with column ``t`` and any of ``train_loss``, ``test_loss``,
            ``train_acc``, ``test_acc`` (accuracy in percent).
        path: PNG file to write.
        title: figure title.

    Returns:
        The written file.

    Raises:
        ValueError: no tables, or a table without a ``t`` column.
    """
    if not tables:
        raise ValueError("tables: expected at least one path table, got none")
    fig = Figure(figsize=(11, 4.2))
    ax_loss, ax_acc = fig.subplots(1, 2)
    colors = [f"C{i}" for i in range(10)]
    for i, (name, table) in enumerate(tables.items()):
        t = _column(table, "t")
        if t is None:
            raise ValueError(f"table {name!r}: expected a column 't', got none")
        color = colors[i % len(colors)]
        for split, style in SPLIT_STYLES.items():
            loss, acc = (
                _column(table, names.split_column(split, "loss")),
                _column(table, names.split_column(split, "acc")),
            )
            if loss is not None:
                ax_loss.plot(t, loss, style, color=color, label=f"{name} ({split})")
            if acc is not None:
                ax_acc.plot(t, acc, style, color=color, label=f"{name} ({split})")
    ax_loss.set(xlabel="t", ylabel="cross-entropy loss", title="loss along the path")
    ax_acc.set(xlabel="t", ylabel="accuracy (%)", title="accuracy along the path")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_plane(
    plane: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    split: str = "test",
    levels: int = 20,
) -> Path:
    """Contour plot of the error (100 - accuracy, percent) on the plane through A, C, B, with A, B, C and
    the curve's projection drawn on it. The axes are scaled independently (the grid spans each axis's own
    extent), so a curve close to the line still fills the picture.

    Args:
        plane: arrays ``xs`` (nx), ``ys`` (ny), ``<split>_acc`` (ny, nx), ``a``, ``b``, ``c`` (2-vectors)
            and optionally ``curve_xy`` (n, 2) and ``<split>_samples`` (the samples each grid point was
            evaluated on, stated in the colour bar's label), as in ``PlaneResult.to_arrays()``.
        path: PNG file to write.
        title: axes title.
        split: which accuracy grid to draw (``test`` or ``train``).
        levels: number of contour levels.

    Returns:
        The written file.

    Raises:
        ValueError: a required array is missing or the grid's shape does not match ``xs`` and ``ys``.
    """
    acc_grid = names.split_column(split, "acc")
    need = ["xs", "ys", acc_grid, "a", "b", "c"]
    missing = [k for k in need if k not in plane]
    if missing:
        raise ValueError(f"plane: expected arrays {', '.join(need)}, got none for {missing[0]!r}")
    xs, ys = np.asarray(plane["xs"], float), np.asarray(plane["ys"], float)
    error = 100.0 - np.asarray(plane[acc_grid], float)
    if error.shape != (ys.size, xs.size):
        raise ValueError(f"plane {acc_grid}: expected shape {(ys.size, xs.size)}, got {error.shape}")
    fig = Figure(figsize=(6.2, 5))
    ax = fig.subplots()
    lo, hi = float(np.nanmin(error)), float(np.nanmax(error))
    bounds = np.linspace(lo, hi if hi > lo else lo + 1e-6, levels + 1)
    filled = ax.contourf(xs, ys, error, levels=bounds, cmap="viridis")
    ax.contour(xs, ys, error, levels=bounds, colors="k", linewidths=0.3, alpha=0.4)
    samples = plane.get(names.split_column(split, names.SAMPLES))
    on = f" on {int(np.asarray(samples)):,} samples" if samples is not None else ""
    fig.colorbar(filled, ax=ax, label=f"{split} error (%){on}")
    curve = plane.get("curve_xy")
    if curve is not None and np.asarray(curve).size:
        cxy = np.asarray(curve, float)
        ax.plot(cxy[:, 0], cxy[:, 1], "-", color="white", linewidth=2, label="curve")
    for key, marker in (("a", "o"), ("b", "o"), ("c", "s")):
        x, y = np.asarray(plane[key], float)
        ax.plot([x], [y], marker, color="red" if key != "c" else "orange", markersize=8, markeredgecolor="k")
        ax.annotate(key.upper(), (x, y), textcoords="offset points", xytext=(6, 6), color="white", fontweight="bold")
    ax.set(xlabel="u (A -> B)", ylabel="v (towards C)", title=title or f"{split} error on the plane through A, C, B")
    return save_figure(fig, path)
