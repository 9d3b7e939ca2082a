"""Per-run figures (matplotlib's object API on the Agg canvas; no global backend is changed): ``paths`` for
connectivity results, ``probes`` for curvature probes, ``training`` for quantities tracked while training.

Each figure is built by a ``<name>_figure(...) -> Figure`` function (what tests inspect) and written as a PNG
with :func:`save_figure`, e.g. ``save_figure(plane_figure(arrays), bundle.figure_path("plane_bezier"))``. The
helpers here keep the figures alike: :func:`data_label` states the quantity, its unit, the split and the sample
count on an axis, and :func:`log_levels` gives contour levels that show a loss valley.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.contour import QuadContourSet
from matplotlib.figure import Figure

from lgeom import names
from lgeom.safe_io import write_atomically

#: Losses are mean cross-entropy in nats; accuracies and errors in percent.
LOSS_UNIT = f"cross-entropy, {names.NATS}"
PERCENT = names.PERCENT
#: Hessian eigenvalues: second derivatives of the loss in nats per squared parameter unit.
CURVATURE_UNIT = names.CURV
#: The path parameter's axis label.
T_LABEL = "t (position along the path: A at 0, B at 1)"


def new_figure(**kwargs: Any) -> Figure:
    """A :class:`~matplotlib.figure.Figure` with its own Agg canvas (drawable without pyplot)."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically (temp file + rename, folders created); returns the path."""
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    # keep_suffix: matplotlib picks the format by the suffix
    return write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight"), keep_suffix=True)


def data_label(quantity: str, unit: str | None = None, *, split: str | None = None, samples: int | None = None) -> str:
    """An axis label naming the quantity, its unit, the data split and how many samples it was measured on.

    >>> data_label("loss", LOSS_UNIT, split="train", samples=10_000)
    'train loss (cross-entropy, nats; 10,000 samples)'
    >>> data_label("accuracy", PERCENT, split="test")
    'test accuracy (%)'
    """
    details = [d for d in (unit, None if samples is None else f"{int(samples):,} samples") if d]
    head = f"{split} {quantity}" if split else quantity
    return f"{head} ({'; '.join(details)})" if details else head


def log_levels(values: Any, n: int = 20, *, quantile: float = 0.95, floor: float = 1e-6) -> np.ndarray:
    """``n + 1`` geometrically spaced contour levels from the smallest value to the ``quantile`` of ``values``,
    so that a low valley gets as many levels as the high walls around it (values above the top level are drawn
    in the top colour: use ``extend="max"``).

    The bottom level is the smallest finite value, but at least ``floor`` times the top level (a loss of exactly
    0, or an error of 0 %, has no logarithm). A constant grid gets levels just around its value.

    Returns:
        Increasing levels whose consecutive ratios are all equal.

    Raises:
        ValueError: no finite value, a negative one, or ``n`` < 1.

        >>> levels = log_levels([0.01, 0.1, 1.0, 10.0], n=3, quantile=1.0)
        >>> [round(float(v), 6) for v in levels]
        [0.01, 0.1, 1.0, 10.0]
    """
    if n < 1:
        raise ValueError(f"n: expected at least 1 contour level, got {n}")
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("values: expected at least one finite value to place contour levels, got none")
    if v.min() < 0:
        raise ValueError(f"values: expected values >= 0 for log-spaced levels, got {v.min():.4g}")
    top = float(np.quantile(v, quantile))
    bottom = float(v.min())
    top = top if top > 0 else max(float(v.max()), 1.0)
    bottom = max(bottom, floor * top)
    if top <= bottom * (1 + 1e-9):
        bottom, top = bottom / 1.01, bottom * 1.01
    return np.geomspace(bottom, top, n + 1)


def log_contours(
    ax: Axes,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    *,
    label: str,
    levels: int = 20,
    colorbar_location: str | None = None,
) -> QuadContourSet:
    """Filled contours of ``z`` (shape ``(len(y), len(x))``) at :func:`log_levels`, with a log colour scale,
    thin contour lines and a colour bar labelled ``label`` and said to be log-spaced.

    Values below the bottom level take the bottom colour and values above the top one the top colour, so no
    part of the grid is left blank. ``colorbar_location``: ``right`` or ``bottom``; by default ``bottom`` when the
    grid is much wider than tall (as an equal-aspect plane often is), else ``right``.

    Returns:
        The filled contour set (its ``levels`` are the log-spaced levels).
    """
    lv = log_levels(z, levels)
    filled = ax.contourf(
        x, y, np.clip(z, lv[0], None), levels=lv, norm=LogNorm(lv[0], lv[-1]), cmap="viridis", extend="max"
    )
    ax.contour(x, y, z, levels=lv, colors="k", linewidths=0.3, alpha=0.4)
    if colorbar_location is None:
        wide = np.ptp(x) > 1.3 * np.ptp(y)
        colorbar_location = "bottom" if wide else "right"
    bar = ax.figure.colorbar(filled, ax=ax, location=colorbar_location, label=f"{label}\nlog-spaced levels")
    bar.minorticks_off()
    ticks = lv[:: max(1, len(lv) // 5)]
    bar.set_ticks(ticks, labels=[f"{v:.3g}" for v in ticks])
    return filled
