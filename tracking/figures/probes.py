"""Figures of curvature and flatness probes: Hessian top-k and spectral density, eps-sharpness samples against
the worst case, 1-D slice, 2-D contour and 3-D surface, PCA plane with the trajectory (as in Li et al. 2018),
top-k eigenvalues along a path.

Probes measure the training loss on ``probe.samples`` training samples: pass that count as ``samples`` and the
axes say so. Slices and planes are drawn with equal aspect and log-spaced contour levels.

Only matplotlib (object API with the Agg canvas, so no global backend is changed) and NumPy are used. Every
``<name>_figure`` takes plain arrays and returns the figure; :func:`tracking.figures.save_figure` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tracking.figures import (
    CURVATURE_UNIT,
    LOSS_UNIT,
    PERCENT,
    T_LABEL,
    data_label,
    log_contours,
    new_figure,
)

__all__ = [
    "eigenvalues_along_path_figure",
    "pca_plane_figure",
    "sharpness_samples_figure",
    "slice_1d_figure",
    "slice_2d_figure",
    "spectral_density_figure",
    "surface_3d_figure",
    "topk_figure",
]

#: Probes measure the training loss (on ``probe.samples`` unaugmented training samples).
SPLIT = "train"


def _array(values: Any, what: str, ndim: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != ndim or arr.size == 0:
        raise ValueError(f"{what}: expected a non-empty {ndim}-D array, got shape {arr.shape}")
    return arr


def _one_per(values: Any, what: str, xs: np.ndarray, per: str) -> np.ndarray:
    """``values`` as a 1-D array with one value per entry of ``xs`` (``per`` names those entries).

    Raises:
        ValueError: ``values`` empty, not 1-D, or not as long as ``xs``.
    """
    arr = _array(values, what, 1)
    if arr.shape != xs.shape:
        raise ValueError(f"{what}: expected {xs.shape[0]} values (one per {per}), got {arr.shape[0]}")
    return arr


def _loss_label(samples: int | None) -> str:
    return data_label("loss", LOSS_UNIT, split=SPLIT, samples=samples)


def _eigen_label(symbol: str, samples: int | None) -> str:
    return data_label(f"Hessian eigenvalue {symbol} of the loss", CURVATURE_UNIT, split=SPLIT, samples=samples)


def topk_figure(eigenvalues: Sequence[float], *, title: str | None = None, samples: int | None = None) -> Figure:
    """Stem plot of the top-k Hessian eigenvalues (index 1 = largest), found by Lanczos.

    Raises:
        ValueError: no eigenvalues.
    """
    vals = _array(eigenvalues, "eigenvalues", 1)
    fig = new_figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    idx = np.arange(1, len(vals) + 1)
    ax.stem(idx, vals, basefmt="k-", label="Lanczos (Ritz) estimate")
    ax.set_xticks(idx)
    ax.set_xlabel("index i (1 = largest)")
    ax.set_ylabel(_eigen_label(r"$\lambda_i$", samples))
    ax.set_title(title or "Hessian top-k eigenvalues")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def spectral_density_figure(
    grid: Sequence[float],
    density: Sequence[float],
    *,
    eigenvalues: Sequence[float] | None = None,
    ritz_values: Any = None,
    sigma: float | None = None,
    log: bool = True,
    title: str | None = None,
    samples: int | None = None,
) -> Figure:
    """Hessian spectral density from stochastic Lanczos quadrature (log scale by default), with the top-k
    eigenvalues from Lanczos as vertical lines and the quadrature's Ritz values as ticks along the bottom, each
    named in the legend.

    Args:
        grid, density: the smoothed density on an eigenvalue grid.
        eigenvalues: top-k eigenvalues (vertical lines).
        ritz_values: SLQ nodes of every run, any shape (NaN padding ignored; ticks along the bottom).
        sigma: the Gaussian kernel width (in the curve's legend entry).
        log: log-scaled density axis.
        title: axes title.
        samples: training samples the Hessian was computed on.

    Raises:
        ValueError: grid and density of different shapes or empty.
    """
    x = _array(grid, "grid", 1)
    y = _one_per(density, "density", x, "grid point")
    fig = new_figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    smooth = "Gaussian-smoothed" + (f", sigma = {sigma:.3g}" if sigma is not None else "")
    curve = f"SLQ density ({smooth})"
    if log:
        floor = max(float(y[y > 0].min()) if np.any(y > 0) else 1e-12, float(y.max()) * 1e-8)
        ax.semilogy(x, np.maximum(y, floor), color="C0", label=curve)
    else:
        ax.plot(x, y, color="C0", label=curve)
    top = [] if eigenvalues is None else np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
    for i, v in enumerate(top):
        ax.axvline(
            float(v), color="C3", lw=0.9, alpha=0.7, label=f"top-{len(top)} eigenvalues (Lanczos)" if i == 0 else None
        )
    nodes = np.asarray([] if ritz_values is None else ritz_values, dtype=np.float64).reshape(-1)
    nodes = nodes[np.isfinite(nodes)]
    if nodes.size:
        ax.plot(
            nodes,
            np.zeros_like(nodes),
            "|",
            color="k",
            ms=10,
            alpha=0.5,
            transform=ax.get_xaxis_transform(),
            label=f"Ritz values of the SLQ runs ({nodes.size})",
        )
    ax.set_xlabel(_eigen_label(r"$\lambda$", samples))
    ax.set_ylabel("spectral density (per unit eigenvalue" + ("; log scale)" if log else ")"))
    ax.set_title(title or "Hessian spectral density (SLQ)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def _symlog_threshold(values: np.ndarray) -> float:
    """Linear range of a symlog axis: the power of ten at or below the 5 % quantile of the non-zero magnitudes
    (1e-12 at least), so that the ticks either side of 0 are -10^k and 10^k, one decade from 0.
    """
    mags = np.abs(values[values != 0])
    low = float(np.quantile(mags, 0.05)) if mags.size else 1e-12
    return float(10.0 ** np.floor(np.log10(max(low, 1e-12))))


def sharpness_samples_figure(
    increases: Sequence[float],
    *,
    eps: float | None = None,
    worst: float | None = None,
    title: str | None = None,
    samples: int | None = None,
    seed: int = 0,
) -> Figure:
    """Strip plot of the loss increases under random perturbations (one jittered dot each, with a box of their
    quartiles), their mean (eps_avg) and the worst case (eps_worst, gradient ascent) on a log x axis (symlog
    when some increases are <= 0), so the spread of the samples is visible beside a worst case that may be
    orders of magnitude larger.

    Args:
        increases: ``L(theta + delta_i) - L(theta)`` per random perturbation.
        eps: the perturbation radius (in the title).
        worst: the worst-case increase.
        title: axes title.
        samples: training samples the loss was measured on.
        seed: seeds the vertical jitter.

    Raises:
        ValueError: no samples.
    """
    inc = _array(increases, "increases", 1)
    fig = new_figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    jitter = np.random.default_rng(seed).uniform(-0.25, 0.25, inc.size)
    ax.boxplot(
        inc,
        orientation="horizontal",
        positions=[0],
        widths=0.7,
        whis=(0, 100),
        showfliers=False,
        manage_ticks=False,
        label="quartiles and median (whiskers: range)",
    )
    ax.scatter(inc, jitter, s=12, color="C0", alpha=0.6, zorder=3, label=f"random perturbations (n = {inc.size})")
    ax.axvline(float(inc.mean()), color="k", ls="--", label=f"mean, eps_avg = {inc.mean():.3g}")
    shown = [inc]
    if worst is not None and np.isfinite(worst):
        ax.axvline(float(worst), color="C3", lw=1.6, label=f"worst case (gradient ascent), eps_worst = {worst:.3g}")
        shown.append(np.asarray([worst], dtype=np.float64))
    values = np.concatenate(shown)
    if np.all(values > 0):
        ax.set_xscale("log")
        scale = "log scale"
    else:
        ax.set_xscale("symlog", linthresh=_symlog_threshold(values))
        scale = "symlog scale"
    ax.set_ylim(-0.5, 1.0)  # room above the strip for the legend
    ax.set_yticks([])
    ax.set_ylabel(f"{inc.size} random directions\n(jittered)")
    ax.set_xlabel(
        data_label(
            r"loss increase $L(\theta+\delta) - L(\theta)$", f"{LOSS_UNIT}; {scale}", split=SPLIT, samples=samples
        )
    )
    ax.set_title(title or ("eps-sharpness" + (f" (eps = {eps:g})" if eps is not None else "")))
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3, axis="x")
    return fig


def slice_1d_figure(
    alphas: Sequence[float],
    loss: Sequence[float],
    *,
    acc: Sequence[float] | None = None,
    title: str | None = None,
    samples: int | None = None,
) -> Figure:
    """Loss (and accuracy on a second axis) along a 1-D filter-normalised slice.

    Raises:
        ValueError: arrays of different lengths or empty.
    """
    a = _array(alphas, "alphas", 1)
    lo = _one_per(loss, "loss", a, "alpha")
    fig = new_figure(figsize=(6, 3.8))
    ax = fig.subplots()
    ax.plot(a, lo, "C0-", label="loss")
    ax.set_xlabel(r"$\alpha$ (step along a filter-normalised random direction)")
    ax.set_ylabel(_loss_label(samples), color="C0")
    if acc is not None:
        ax2 = ax.twinx()
        ax2.plot(a, _one_per(acc, "acc", a, "alpha"), "C1--", label="accuracy")
        ax2.set_ylabel(data_label("accuracy", PERCENT, split=SPLIT, samples=samples), color="C1")
    ax.set_title(title or "1-D loss slice")
    ax.grid(alpha=0.3)
    return fig


def _grid_check(xs: Any, ys: Any, z: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, zz = _array(xs, "xs", 1), _array(ys, "ys", 1), _array(z, "loss", 2)
    if zz.shape != (len(x), len(y)):
        raise ValueError(f"loss: expected shape ({len(x)}, {len(y)}) (xs by ys), got {zz.shape}")
    return x, y, zz


def slice_2d_figure(
    alphas: Sequence[float],
    betas: Sequence[float],
    loss: Any,
    *,
    title: str | None = None,
    levels: int = 20,
    samples: int | None = None,
) -> Figure:
    """Contour plot of a 2-D filter-normalised slice (``loss[i, j]`` at ``alphas[i]``, ``betas[j]``) at
    log-spaced levels, with equal aspect (both directions have the same filter-wise norm).

    Raises:
        ValueError: ``loss`` not of shape ``(len(alphas), len(betas))``.
    """
    x, y, z = _grid_check(alphas, betas, loss)
    fig = new_figure(figsize=(5.6, 4.8), layout="constrained")
    ax = fig.subplots()
    log_contours(ax, x, y, z.T, label=_loss_label(samples), levels=levels)
    ax.plot([0], [0], "r*", ms=12, mec="k", label="probed point")
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(r"$\alpha$ (filter-normalised direction 1)")
    ax.set_ylabel(r"$\beta$ (filter-normalised direction 2)")
    ax.set_title(title or "2-D loss slice")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def surface_3d_figure(
    alphas: Sequence[float],
    betas: Sequence[float],
    loss: Any,
    *,
    title: str | None = None,
    samples: int | None = None,
) -> Figure:
    """3-D surface of a 2-D slice.

    Raises:
        ValueError: ``loss`` not of shape ``(len(alphas), len(betas))``.
    """
    x, y, z = _grid_check(alphas, betas, loss)
    fig = new_figure(figsize=(6, 5))
    ax = fig.add_subplot(projection="3d")
    gx, gy = np.meshgrid(x, y, indexing="ij")
    ax.plot_surface(gx, gy, z, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel(r"$\alpha$ (filter-normalised)")
    ax.set_ylabel(r"$\beta$ (filter-normalised)")
    ax.set_zlabel(_loss_label(samples), fontsize=8)
    ax.set_title(title or "loss surface")
    return fig


def pca_plane_figure(
    xs: Sequence[float],
    ys: Sequence[float],
    loss: Any,
    coords: Any,
    *,
    explained: Sequence[float] | None = None,
    snapshot_loss: Sequence[float] | None = None,
    projected_loss: Sequence[float] | None = None,
    title: str | None = None,
    levels: int = 20,
    samples: int | None = None,
) -> Figure:
    """Loss contours on the PCA plane of a training trajectory (Li et al. 2018, Fig. 9) with the projected
    trajectory and its final point (left; log-spaced levels, equal aspect: both axes are Euclidean distances
    in weight space along orthonormal components), and, when given, the true loss at the snapshots beside the
    loss at their projections (right).

    Raises:
        ValueError: shapes that do not match.
    """
    x, y, z = _grid_check(xs, ys, loss)
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"coords: expected an (n, 2) array, got shape {c.shape}")
    right = snapshot_loss is not None
    fig = new_figure(figsize=(11 if right else 5.8, 4.8), layout="constrained")
    axes = fig.subplots(1, 2) if right else [fig.subplots()]
    ax = axes[0]
    log_contours(ax, x, y, z.T, label=_loss_label(samples), levels=levels)
    ax.plot(c[:, 0], c[:, 1], "w.-", ms=4, lw=1, label="trajectory (snapshots projected)")
    ax.plot(c[-1, 0], c[-1, 1], "r*", ms=12, mec="k", label="final point")
    ax.set_aspect("equal", adjustable="box")
    ev = list(explained) if explained is not None else None
    for axis, i in ((ax.set_xlabel, 0), (ax.set_ylabel, 1)):
        share = f"{100 * ev[i]:.1f} % of variance; " if ev else ""
        axis(f"PC{i + 1} ({share}weight-space distance)")
    ax.set_title(title or "PCA plane of the trajectory")
    ax.legend(fontsize=7, loc="best", framealpha=0.7)
    if right:
        ax2 = axes[1]
        steps = np.arange(len(c))
        ax2.plot(steps, _one_per(snapshot_loss, "snapshot_loss", steps, "snapshot"), "C0.-", label="loss at snapshot")
        if projected_loss is not None:
            proj = _one_per(projected_loss, "projected_loss", steps, "snapshot")
            ax2.plot(steps, proj, "C1.--", label="loss at its projection onto the plane")
        ax2.set_xlabel("snapshot index (training order)")
        ax2.set_ylabel(data_label("loss", f"{LOSS_UNIT}; log scale", split=SPLIT, samples=samples))
        ax2.set_yscale("log")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
    return fig


def eigenvalues_along_path_figure(
    t: Sequence[float],
    columns: Mapping[str, Sequence[float]],
    *,
    title: str | None = None,
    samples: int | None = None,
) -> Figure:
    """Top-k Hessian eigenvalues (one line per column, e.g. ``hessian_top1`` ...) against t.

    Raises:
        ValueError: no columns, or a column of the wrong length.
    """
    tt = _array(t, "t", 1)
    if not columns:
        raise ValueError("columns: expected at least one eigenvalue column, got none")
    fig = new_figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for i, (name, values) in enumerate(columns.items()):
        v = _one_per(values, name, tt, "t")
        ax.plot(tt, v, ".-", color=f"C{i % 10}", lw=1.6 if i == 0 else 0.9, label=name)
    ax.set_xlabel(T_LABEL)
    ax.set_ylabel(_eigen_label(r"$\lambda_i$", samples))
    ax.set_title(title or "Hessian top-k along the path")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return fig
