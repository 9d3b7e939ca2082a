"""Curvature-probe figures from tiny synthetic inputs (each writes a PNG), and the inputs each refuses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tracking.figures.probes import (
    plot_eigenvalues_along_path,
    plot_pca_plane,
    plot_sharpness_histogram,
    plot_slice_1d,
    plot_slice_2d,
    plot_spectral_density,
    plot_surface_3d,
    plot_topk,
)

PNG = b"\x89PNG\r\n\x1a\n"
RNG = np.random.default_rng(0)
AL, BE = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
BOWL = AL[:, None] ** 2 + 2 * BE[None, :] ** 2  # (len(AL), len(BE))
GRID = np.linspace(-1, 10, 50)
DENSITY = np.exp(-((GRID - 2) ** 2))
DENSITY[:5] = 0.0  # zeros on a log scale are floored, not dropped

FIGURES: dict[str, Callable[[Path], Path]] = {
    "topk": lambda p: plot_topk([9.5, 4.0, 1.2], p, title="top-3"),
    "density_log": lambda p: plot_spectral_density(GRID, DENSITY, p, eigenvalues=[9.5, 4.0]),
    "density_linear": lambda p: plot_spectral_density(GRID, DENSITY, p, log=False),
    "sharpness": lambda p: plot_sharpness_histogram(RNG.exponential(0.01, 64), p, eps=1e-3, worst=0.05),
    "slice_1d": lambda p: plot_slice_1d(AL, AL**2, p, acc=100 - 10 * AL**2),
    "slice_2d": lambda p: plot_slice_2d(AL, BE, BOWL, p, levels=6),
    "surface_3d": lambda p: plot_surface_3d(AL, BE, BOWL, p),
    "pca_plane": lambda p: plot_pca_plane(
        AL,
        BE,
        BOWL,
        RNG.normal(size=(6, 2)) * 0.5,
        p,
        explained=[0.7, 0.2],
        snapshot_loss=np.linspace(1, 0.1, 6),
        projected_loss=np.linspace(1.1, 0.2, 6),
    ),
    "eigs_along_path": lambda p: plot_eigenvalues_along_path(
        np.linspace(0, 1, 5), {"lambda_1": [3, 5, 8, 5, 3], "lambda_2": [1, 2, 2, 2, 1]}, p
    ),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_each_figure_is_written(tmp_path: Path, name: str) -> None:
    out = FIGURES[name](tmp_path / "figs" / f"{name}.png")
    assert out == tmp_path / "figs" / f"{name}.png" and out.read_bytes()[:8] == PNG and out.stat().st_size > 3_000


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: plot_topk([], p), r"eigenvalues: expected a non-empty 1-D array, got shape \(0,\)"),
        (lambda p: plot_topk([[1.0]], p), r"eigenvalues: expected a non-empty 1-D array, got shape \(1, 1\)"),
        (
            lambda p: plot_spectral_density([0, 1, 2], [1, 1], p),
            r"density: expected 3 values \(one per grid point\), got 2",
        ),
        (lambda p: plot_sharpness_histogram([], p), "increases: expected a non-empty 1-D array"),
        (lambda p: plot_slice_1d([0, 1], [1, 2, 3], p), r"loss: expected 2 values \(one per alpha\), got 3"),
        (lambda p: plot_slice_2d(AL, BE, BOWL.T, p), r"loss: expected shape \(5, 4\) \(xs by ys\), got \(4, 5\)"),
        (lambda p: plot_surface_3d(AL, BE, BOWL[:, 0], p), "loss: expected a non-empty 2-D array"),
        (
            lambda p: plot_pca_plane(AL, BE, BOWL, np.zeros((3, 3)), p),
            r"coords: expected an \(n, 2\) array, got shape \(3, 3\)",
        ),
        (
            lambda p: plot_eigenvalues_along_path([0, 1], {}, p),
            "columns: expected at least one eigenvalue column, got none",
        ),
        (
            lambda p: plot_eigenvalues_along_path([0, 1], {"lambda_1": [1]}, p),
            r"lambda_1: expected 2 values \(one per t\), got 1",
        ),
    ],
)
def test_bad_inputs_are_refused_and_nothing_is_written(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make(tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
