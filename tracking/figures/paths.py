"""Figures of mode-connectivity results: loss and accuracy along paths, and the plane through A, C, B drawn
as in Garipov et al. 2018, Fig. 1 (log-spaced loss contours, true geometry, A, B, C and the curve marked).

Only matplotlib (object API with the Agg canvas, so no global backend is changed) and NumPy are used;
inputs are plain mappings of arrays, e.g. ``lgeom.table.Table`` objects or ``PlaneResult.to_arrays()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lgeom import names
from tracking.figures import LOSS_UNIT, PERCENT, T_LABEL, data_label, log_contours, new_figure

SPLIT_STYLES = dict(zip(names.SPLITS, ("--", "-")))


def _column(table: Any, name: str) -> np.ndarray | None:
    try:
        return np.asarray(table[name], dtype=np.float64)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def paths_figure(
    tables: Mapping[str, Any], *, title: str | None = None, samples: Mapping[str, int] | None = None
) -> Figure:
    """Loss (left) and accuracy (right) along every path on one figure; train dashed, test solid.

    Args:
        tables: path name -> table with column ``t`` and any of ``train_loss``, ``test_loss``,
            ``train_acc``, ``test_acc`` (accuracy in percent).
        title: figure title.
        samples: split -> samples each point was evaluated on (named in the axis labels).

    Returns:
        The figure.

    Raises:
        ValueError: no tables, or a table without a ``t`` column.
    """
    if not tables:
        raise ValueError("tables: expected at least one path table, got none")
    fig = new_figure(figsize=(11, 4.2))
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
    counts = _split_counts(samples)
    ax_loss.set(xlabel=T_LABEL, ylabel=data_label("loss", f"{LOSS_UNIT}{counts}"), title="loss along the path")
    ax_acc.set(xlabel=T_LABEL, ylabel=data_label("accuracy", f"{PERCENT}{counts}"), title="accuracy along the path")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7, loc="best", title="path (split): train dashed, test solid", title_fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


#: Plane coordinates are Euclidean distances in weight space (the basis is orthonormal).
PLANE_UNIT = "weight-space distance"
#: The quantities :func:`plane_figure` draws: name -> (grid column stem, unit).
PLANE_QUANTITIES = {"loss": LOSS_UNIT, "error": PERCENT}


def _split_counts(samples: Mapping[str, int] | None) -> str:
    if not samples:
        return ""
    return "; " + ", ".join(f"{split} {int(n):,}" for split, n in samples.items()) + " samples"


def _plane_grid(plane: Mapping[str, Any], split: str, quantity: str) -> np.ndarray | None:
    if quantity == "loss":
        key = names.split_column(split, "loss")
        return np.asarray(plane[key], float) if key in plane else None
    key = names.split_column(split, "acc")
    return 100.0 - np.asarray(plane[key], float) if key in plane else None


def angle_deg(a: Any, c: Any, b: Any) -> float:
    """The angle at ``c`` between ``a - c`` and ``b - c`` in degrees (2-D or n-D points)."""
    u, w = np.asarray(a, float) - np.asarray(c, float), np.asarray(b, float) - np.asarray(c, float)
    cos = float(u @ w) / float(np.linalg.norm(u) * np.linalg.norm(w))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def plane_figure(
    plane: Mapping[str, Any],
    *,
    title: str | None = None,
    splits: Sequence[str] = names.SPLITS,
    quantity: str = "loss",
    levels: int = 20,
    samples: Mapping[str, int] | None = None,
    curve_name: str = "curve",
) -> Figure:
    """The loss (or error) on the plane through A, C, B, one panel per split, as in Garipov et al. 2018,
    Fig. 1: filled contours at log-spaced levels (the low-loss valley gets as many levels as the walls), equal
    aspect (both axes are Euclidean distances in weight space, so the angle ACB drawn is the true one), the
    endpoints A and B and the control point C marked and labelled, the segment A-B dashed and the curve's
    projection drawn through the plane.

    Args:
        plane: arrays ``xs`` (nx), ``ys`` (ny), ``<split>_loss`` / ``<split>_acc`` (ny, nx), ``a``, ``b``, ``c``
            (2-vectors) and optionally ``curve_xy`` (n, 2) and ``<split>_samples`` (the samples each grid point
            was evaluated on), as in ``PlaneResult.to_arrays()``.
        title: figure title.
        splits: the splits to draw, each in its own panel (those the plane has).
        quantity: ``loss`` (mean cross-entropy) or ``error`` (100 - accuracy, percent).
        levels: number of contour levels.
        samples: split -> samples each grid point was evaluated on (named on the colour bars; default: the
            plane's ``<split>_samples`` arrays where it has them).
        curve_name: the curve's name in the legend (``bezier`` ...).

    Returns:
        The figure; A, B and C are the lines with ``gid`` ``"A"``, ``"B"``, ``"C"`` on each panel.

    Raises:
        ValueError: an unknown quantity, a required array missing, no grid for any of ``splits``, or a grid whose
            shape does not match ``xs`` and ``ys``.
    """
    if quantity not in PLANE_QUANTITIES:
        raise ValueError(f"quantity: expected one of {', '.join(PLANE_QUANTITIES)}, got {quantity!r}")
    need = ["xs", "ys", "a", "b", "c"]
    missing = [k for k in need if k not in plane]
    if missing:
        raise ValueError(f"plane: expected arrays {', '.join(need)}, got none for {missing[0]!r}")
    xs, ys = np.asarray(plane["xs"], float), np.asarray(plane["ys"], float)
    grids = {s: g for s in splits if (g := _plane_grid(plane, s, quantity)) is not None}
    if not grids:
        stem = "loss" if quantity == "loss" else "acc"
        wanted = ", ".join(names.split_column(s, stem) for s in splits)
        raise ValueError(f"plane: expected a grid {wanted}, got none")
    for split, grid in grids.items():
        if grid.shape != (ys.size, xs.size):
            key = names.split_column(split, "loss" if quantity == "loss" else "acc")
            raise ValueError(f"plane {key}: expected shape {(ys.size, xs.size)}, got {grid.shape}")
    pts = {k: np.asarray(plane[k], float) for k in ("a", "b", "c")}
    acb = angle_deg(pts["a"], pts["c"], pts["b"])
    # true geometry makes a plane far wider than tall when C is near the line A-B: stack such panels
    ratio = float(np.ptp(xs) / max(np.ptp(ys), 1e-300))
    wide = ratio > 1.3
    width = 9.0 if wide else 6.4 * len(grids)
    height = len(grids) * (width / ratio + 1.8) if wide else 5.4
    fig = new_figure(figsize=(width, min(height, 12.0)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(grids), 1) if wide else fig.subplots(1, len(grids)))
    counts = dict(samples) if samples is not None else {}
    for split in grids:
        key = names.split_column(split, names.SAMPLES)
        if samples is None and key in plane:
            counts[split] = int(np.asarray(plane[key]))
    for ax, (split, grid) in zip(axes, grids.items()):
        label = data_label(quantity, PLANE_QUANTITIES[quantity], split=split, samples=counts.get(split))
        log_contours(ax, xs, ys, grid, label=label, levels=levels)
        ax.plot(*np.stack([pts["a"], pts["b"]], 1), "--", color="white", lw=1, alpha=0.8, label="segment A-B")
        curve = plane.get("curve_xy")
        if curve is not None and np.asarray(curve).size:
            cxy = np.asarray(curve, float)
            ax.plot(cxy[:, 0], cxy[:, 1], "-", color="white", lw=2, label=f"{curve_name} (projected onto the plane)")
        for key, marker, color, what in (
            ("a", "o", "red", "endpoints A, B"),
            ("b", "o", "red", None),
            ("c", "s", "orange", "control point C"),
        ):
            x, y = pts[key]
            ax.plot([x], [y], marker, color=color, ms=9, mec="k", gid=key.upper(), label=what)
            ax.annotate(key.upper(), (x, y), textcoords="offset points", xytext=(7, 7), color="white", weight="bold")
        ax.set_aspect("equal", adjustable="box")
        ax.set(
            xlabel=f"u: direction A -> B ({PLANE_UNIT})",
            ylabel=f"v: towards C ({PLANE_UNIT})",
            title=f"{split} {quantity} on the plane through A, C, B; angle ACB = {acb:.1f}°",
        )
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=8, facecolor="0.8")
    if title:
        fig.suptitle(title)
    return fig
