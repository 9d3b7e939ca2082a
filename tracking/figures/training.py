"""Figures of endpoint training: the top Hessian eigenvalue tracked during training against 2 / lr.

Inputs are the endpoints' per-epoch history tables (``lgeom.train.TrainResult.history``); only matplotlib's
object API (Agg canvas) and NumPy are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lgeom.train import TRACK_QUANTITIES
from tracking.figures import CURVATURE_UNIT, data_label, new_figure

LAMBDA_MAX, TWO_OVER_LR = TRACK_QUANTITIES


def _columns(table: Any) -> list[str]:
    # lgeom.table.Table lists its columns in .names; a mapping by its keys
    return list(table.names) if hasattr(table, "names") else list(table)


def has_sharpness(history: Any) -> bool:
    """Whether ``history`` holds tracked ``lambda_max`` values (``train.track_hessian_every`` was on)."""
    return LAMBDA_MAX in _columns(history) and bool(
        np.isfinite(np.asarray(history[LAMBDA_MAX], dtype=np.float64)).any()
    )


def sharpness_figure(histories: Mapping[str, Any], *, title: str | None = None, samples: int | None = None) -> Figure:
    """lambda_max of each endpoint against the epoch (markers where it was measured), with 2 / lr dashed
    where the optimiser has that threshold (SGD); log-scaled y axis when every value is positive.

    Args:
        histories: endpoint name -> history table with columns ``epoch``, ``lambda_max`` and ``two_over_lr``.
        title: figure title.
        samples: training samples the Hessian was computed on (``lgeom.train.TRACK_HESSIAN_SAMPLES`` or fewer).

    Returns:
        The figure.
    """
    fig = new_figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for i, (endpoint, hist) in enumerate(histories.items()):
        color = f"C{i}"
        epoch = np.asarray(hist["epoch"], dtype=np.float64)
        lam = np.asarray(hist[LAMBDA_MAX], dtype=np.float64)
        ok = np.isfinite(lam)
        ax.plot(epoch[ok], lam[ok], "o-", color=color, label=f"{endpoint}: {LAMBDA_MAX} (Lanczos)", markersize=3)
        if TWO_OVER_LR in _columns(hist):
            ref = np.asarray(hist[TWO_OVER_LR], dtype=np.float64)
            ok_ref = np.isfinite(ref)
            if ok_ref.any():
                ax.plot(epoch[ok_ref], ref[ok_ref], "--", color=color, label=f"{endpoint}: 2 / lr (GD stability edge)")
    values = [np.asarray(h[LAMBDA_MAX], dtype=np.float64) for h in histories.values()]
    finite = np.concatenate(values)[np.isfinite(np.concatenate(values))] if values else np.zeros(0)
    log = bool(finite.size) and bool(np.all(finite > 0))
    if log:
        ax.set_yscale("log")
    unit = CURVATURE_UNIT + ("; log scale" if log else "")
    ax.set_xlabel("epoch")
    ax.set_ylabel(data_label("top Hessian eigenvalue of the loss", unit, split="train", samples=samples))
    ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    return fig
