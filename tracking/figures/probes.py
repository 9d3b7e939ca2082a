"""Figures of curvature and flatness probes: Hessian top-k and spectral density, sharpness histogram, 1-D
slice, 2-D contour and 3-D surface, PCA plane with the trajectory, top-k eigenvalues along a path.

Only matplotlib (object API with the Agg canvas, so no global backend is changed) and NumPy are used. Every
function takes plain arrays and a file path, writes a PNG atomically and returns the path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tracking.figures import save_figure

__all__ = [
    "plot_eigenvalues_along_path",
    "plot_pca_plane",
    "plot_sharpness_histogram",
    "plot_slice_1d",
    "plot_slice_2d",
    "plot_spectral_density",
    "plot_surface_3d",
    "plot_topk",
]


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


def plot_topk(eigenvalues: Sequence[float], path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Stem plot of the top-k Hessian eigenvalues (index 1 = largest).

    Raises:
        ValueError: no eigenvalues.
    """
    vals = _array(eigenvalues, "eigenvalues", 1)
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    idx = np.arange(1, len(vals) + 1)
    ax.stem(idx, vals, basefmt="k-")
    ax.set_xticks(idx)
    ax.set_xlabel("index i")
    ax.set_ylabel(r"$\lambda_i$")
    ax.set_title(title or "Hessian top-k eigenvalues")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_spectral_density(
    grid: Sequence[float],
    density: Sequence[float],
    path: str | os.PathLike[str],
    *,
    eigenvalues: Sequence[float] | None = None,
    log: bool = True,
    title: str | None = None,
) -> Path:
    """Hessian spectral density (log scale by default), with the top-k eigenvalues marked.

    Raises:
        ValueError: grid and density of different shapes or empty.
    """
    x = _array(grid, "grid", 1)
    y = _one_per(density, "density", x, "grid point")
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    if log:
        floor = max(float(y[y > 0].min()) if np.any(y > 0) else 1e-12, float(y.max()) * 1e-8)
        ax.semilogy(x, np.maximum(y, floor))
    else:
        ax.plot(x, y)
    for v in [] if eigenvalues is None else np.asarray(eigenvalues, dtype=np.float64).reshape(-1):
        ax.axvline(float(v), color="C3", lw=0.8, alpha=0.6)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(title or "Hessian spectral density (SLQ)")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_sharpness_histogram(
    increases: Sequence[float],
    path: str | os.PathLike[str],
    *,
    eps: float | None = None,
    worst: float | None = None,
    title: str | None = None,
) -> Path:
    """Histogram of loss increases under random perturbations, with the mean and the worst case marked.

    Raises:
        ValueError: no samples.
    """
    inc = _array(increases, "increases", 1)
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    ax.hist(inc, bins=max(5, min(30, len(inc))), color="C0", alpha=0.8)
    ax.axvline(float(inc.mean()), color="k", ls="--", label=f"mean {inc.mean():.4g}")
    if worst is not None and np.isfinite(worst):
        ax.axvline(float(worst), color="C3", label=f"worst case {worst:.4g}")
    ax.set_xlabel(r"$L(\theta+\delta) - L(\theta)$")
    ax.set_ylabel("count")
    ax.set_title(title or (f"eps-sharpness (eps = {eps:g})" if eps is not None else "eps-sharpness"))
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_slice_1d(
    alphas: Sequence[float],
    loss: Sequence[float],
    path: str | os.PathLike[str],
    *,
    acc: Sequence[float] | None = None,
    title: str | None = None,
) -> Path:
    """Loss (and accuracy on a second axis) along a 1-D slice.

    Raises:
        ValueError: arrays of different lengths or empty.
    """
    a = _array(alphas, "alphas", 1)
    lo = _one_per(loss, "loss", a, "alpha")
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    ax.plot(a, lo, "C0-", label="loss")
    ax.set_xlabel(r"$\alpha$ (filter-normalised direction)")
    ax.set_ylabel("loss", color="C0")
    if acc is not None:
        ax2 = ax.twinx()
        ax2.plot(a, _array(acc, "acc", 1), "C1--", label="accuracy")
        ax2.set_ylabel("accuracy (%)", color="C1")
    ax.set_title(title or "1-D loss slice")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _grid_check(xs: Any, ys: Any, z: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, zz = _array(xs, "xs", 1), _array(ys, "ys", 1), _array(z, "loss", 2)
    if zz.shape != (len(x), len(y)):
        raise ValueError(f"loss: expected shape ({len(x)}, {len(y)}) (xs by ys), got {zz.shape}")
    return x, y, zz


def plot_slice_2d(
    alphas: Sequence[float],
    betas: Sequence[float],
    loss: Any,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    levels: int = 25,
) -> Path:
    """Contour plot of a 2-D slice (``loss[i, j]`` at ``alphas[i]``, ``betas[j]``; log-spaced levels).

    Raises:
        ValueError: ``loss`` not of shape ``(len(alphas), len(betas))``.
    """
    x, y, z = _grid_check(alphas, betas, loss)
    fig = Figure(figsize=(5, 4.4))
    ax = fig.subplots()
    zl = np.log(np.maximum(z, 1e-12))
    cs = ax.contourf(x, y, zl.T, levels=levels, cmap="viridis")
    ax.contour(x, y, zl.T, levels=levels, colors="k", linewidths=0.3)
    fig.colorbar(cs, ax=ax, label="log loss")
    ax.plot([0], [0], "r*", ms=10)
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel(r"$\beta$")
    ax.set_title(title or "2-D loss slice")
    return save_figure(fig, path)


def plot_surface_3d(
    alphas: Sequence[float],
    betas: Sequence[float],
    loss: Any,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """3-D surface of a 2-D slice.

    Raises:
        ValueError: ``loss`` not of shape ``(len(alphas), len(betas))``.
    """
    x, y, z = _grid_check(alphas, betas, loss)
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot(projection="3d")
    gx, gy = np.meshgrid(x, y, indexing="ij")
    ax.plot_surface(gx, gy, z, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel(r"$\beta$")
    ax.set_zlabel("loss")
    ax.set_title(title or "loss surface")
    return save_figure(fig, path)


def plot_pca_plane(
    xs: Sequence[float],
    ys: Sequence[float],
    loss: Any,
    coords: Any,
    path: str | os.PathLike[str],
    *,
    explained: Sequence[float] | None = None,
    snapshot_loss: Sequence[float] | None = None,
    projected_loss: Sequence[float] | None = None,
    title: str | None = None,
) -> Path:
    """Loss contours on the PCA plane with the projected trajectory (left) and, when given, the true loss
    at the snapshots beside the loss at their projections (right).

    Raises:
        ValueError: shapes that do not match.
    """
    x, y, z = _grid_check(xs, ys, loss)
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"coords: expected an (n, 2) array, got shape {c.shape}")
    right = snapshot_loss is not None
    fig = Figure(figsize=(10.5 if right else 5.5, 4.4), layout="constrained")
    axes = fig.subplots(1, 2) if right else [fig.subplots()]
    ax = axes[0]
    zl = np.log(np.maximum(z, 1e-12))
    cs = ax.contourf(x, y, zl.T, levels=25, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log loss")
    ax.plot(c[:, 0], c[:, 1], "w.-", ms=4, lw=1)
    ax.plot(c[-1, 0], c[-1, 1], "r*", ms=10)
    ev = list(explained) if explained is not None else None
    ax.set_xlabel(f"PC1 ({100 * ev[0]:.1f} %)" if ev else "PC1")
    ax.set_ylabel(f"PC2 ({100 * ev[1]:.1f} %)" if ev else "PC2")
    ax.set_title(title or "PCA plane of the trajectory")
    if right:
        ax2 = axes[1]
        steps = np.arange(len(c))
        ax2.plot(steps, np.asarray(snapshot_loss, dtype=np.float64), "C0.-", label="loss at snapshot")
        if projected_loss is not None:
            ax2.plot(steps, np.asarray(projected_loss, dtype=np.float64), "C1.--", label="loss at projection")
        ax2.set_xlabel("snapshot")
        ax2.set_ylabel("loss")
        ax2.set_yscale("log")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_eigenvalues_along_path(
    t: Sequence[float],
    columns: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Top-k Hessian eigenvalues (one line per column, e.g. ``hessian_top1`` ...) against t.

    Raises:
        ValueError: no columns, or a column of the wrong length.
    """
    tt = _array(t, "t", 1)
    if not columns:
        raise ValueError("columns: expected at least one eigenvalue column, got none")
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    for i, (name, values) in enumerate(columns.items()):
        v = _one_per(values, name, tt, "t")
        ax.plot(tt, v, ".-", color=f"C{i % 10}", lw=1.6 if i == 0 else 0.9, label=name)
    ax.set_xlabel("t")
    ax.set_ylabel("eigenvalue")
    ax.set_title(title or "Hessian top-k along the path")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
