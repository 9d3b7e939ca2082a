"""Curvature-probe figures from tiny synthetic inputs: each can be written as a PNG; the figures themselves show
the split, unit and sample count on their axes, explain the density's markers, draw the sharpness samples on a
log axis beside the worst case, and draw slices and the PCA plane with equal aspect and log-spaced levels; bad
inputs are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.contour import QuadContourSet
from matplotlib.figure import Figure

from tracking.figures import save_figure
from tracking.figures.probes import (
    eigenvalues_along_path_figure,
    pca_plane_figure,
    sharpness_samples_figure,
    slice_1d_figure,
    slice_2d_figure,
    spectral_density_figure,
    surface_3d_figure,
    topk_figure,
)

PNG = b"\x89PNG\r\n\x1a\n"
RNG = np.random.default_rng(0)
AL, BE = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
BOWL = 1e-3 + AL[:, None] ** 2 + 2 * BE[None, :] ** 2  # (len(AL), len(BE))
GRID = np.linspace(-1, 10, 50)
DENSITY = np.exp(-((GRID - 2) ** 2))
DENSITY[:5] = 0.0  # zeros on a log scale are floored, not dropped
N = 1000
TRAIN_LOSS = "train loss (cross-entropy, nats; 1,000 samples)"

FIGURES: dict[str, Callable[[], Figure]] = {
    "topk": lambda: topk_figure([9.5, 4.0, 1.2], title="top-3", samples=N),
    "density_log": lambda: spectral_density_figure(GRID, DENSITY, eigenvalues=[9.5, 4.0], samples=N),
    "density_linear": lambda: spectral_density_figure(GRID, DENSITY, log=False),
    "sharpness": lambda: sharpness_samples_figure(RNG.exponential(0.01, 64), eps=1e-3, worst=0.05, samples=N),
    "slice_1d": lambda: slice_1d_figure(AL, AL**2, acc=100 - 10 * AL**2, samples=N),
    "slice_2d": lambda: slice_2d_figure(AL, BE, BOWL, levels=6, samples=N),
    "surface_3d": lambda: surface_3d_figure(AL, BE, BOWL, samples=N),
    "pca_plane": lambda: pca_plane_figure(
        AL,
        BE,
        BOWL,
        RNG.normal(size=(6, 2)) * 0.5,
        explained=[0.7, 0.2],
        snapshot_loss=np.linspace(1, 0.1, 6),
        projected_loss=np.linspace(1.1, 0.2, 6),
        samples=N,
    ),
    "eigs_along_path": lambda: eigenvalues_along_path_figure(
        np.linspace(0, 1, 5), {"lambda_1": [3, 5, 8, 5, 3], "lambda_2": [1, 2, 2, 2, 1]}, samples=N
    ),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_each_figure_is_written(tmp_path: Path, name: str) -> None:
    out = save_figure(FIGURES[name](), tmp_path / "figs" / f"{name}.png")
    assert out == tmp_path / "figs" / f"{name}.png" and out.read_bytes()[:8] == PNG and out.stat().st_size > 3_000


def _legend(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _filled(ax: Axes) -> QuadContourSet:
    return next(c for c in ax.collections if isinstance(c, QuadContourSet) and c.filled)


def _colour_bar_label(fig: Figure, ax: Axes) -> str:
    bar = next(other for other in fig.axes if other is not ax and other.get_label() == "<colorbar>")
    return bar.get_ylabel() or bar.get_xlabel()


def test_eigenvalue_axes_name_the_train_split_and_sample_count() -> None:
    for fig in (
        topk_figure([9.5, 4.0, 1.2], samples=N),
        eigenvalues_along_path_figure([0.0, 0.5, 1.0], {"hessian_top1": [3.0, 5.0, 3.0]}, samples=N),
    ):
        ylabel = fig.axes[0].get_ylabel()
        assert ylabel.startswith("train Hessian eigenvalue") and "nats/param²" in ylabel and "1,000 samples" in ylabel


def test_the_density_legend_explains_curve_lines_and_ticks() -> None:
    nodes = np.array([[0.1, 2.0, 9.5, np.nan], [0.0, 1.9, 4.0, 9.4]])
    fig = spectral_density_figure(GRID, DENSITY, eigenvalues=[9.5, 4.0, 1.2], ritz_values=nodes, sigma=0.05, samples=N)
    ax = fig.axes[0]
    assert _legend(ax) == [
        "SLQ density (Gaussian-smoothed, sigma = 0.05)",
        "top-3 eigenvalues (Lanczos)",
        "Ritz values of the SLQ runs (7)",
    ]
    lanczos = [line for line in ax.lines if line.get_color() == "C3"]
    assert sorted(float(line.get_xdata()[0]) for line in lanczos) == [1.2, 4.0, 9.5]
    ticks = next(line for line in ax.lines if line.get_label().startswith("Ritz values"))
    assert sorted(ticks.get_xdata()) == sorted(nodes[np.isfinite(nodes)])
    assert ax.get_yscale() == "log" and "1,000 samples" in ax.get_xlabel()


@pytest.mark.parametrize(("shift", "scale"), [(0.0, "log"), (-0.004, "symlog")])
def test_sharpness_samples_are_a_strip_on_a_log_axis_beside_the_worst_case(shift: float, scale: str) -> None:
    increases = np.random.default_rng(1).exponential(0.005, 40) + shift
    worst = 0.8  # two orders of magnitude above the samples: a linear histogram would squash them into one bar
    fig = sharpness_samples_figure(increases, eps=1e-3, worst=worst, samples=N)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_xscale() == scale
    dots = next(c for c in ax.collections if isinstance(c, PathCollection))
    np.testing.assert_allclose(np.sort(dots.get_offsets()[:, 0]), np.sort(increases))
    lo, hi = ax.get_xlim()
    assert lo <= increases.min() and hi >= worst
    # the samples spread over the axis instead of sitting in one pixel column next to the worst case
    px = ax.transData.transform(np.c_[increases, np.zeros_like(increases)])[:, 0]
    assert np.ptp(px) > 0.2 * ax.bbox.width
    assert _legend(ax) == [
        "quartiles and median (whiskers: range)",
        "random perturbations (n = 40)",
        f"mean, eps_avg = {increases.mean():.3g}",
        "worst case (gradient ascent), eps_worst = 0.8",
    ]
    assert "train loss increase" in ax.get_xlabel() and "1,000 samples" in ax.get_xlabel()
    assert ax.get_ylabel() == "40 random directions\n(jittered)"


@pytest.mark.parametrize("kind", ["slice_2d", "pca_plane"])
def test_planes_have_equal_aspect_and_log_spaced_levels(kind: str) -> None:
    coords = np.array([[-0.8, 0.9], [-0.5, 0.4], [0.0, 0.0]])
    fig = (
        slice_2d_figure(AL, BE, BOWL, levels=9, samples=N)
        if kind == "slice_2d"
        else pca_plane_figure(AL, BE, BOWL, coords, explained=[0.7, 0.2], levels=9, samples=N)
    )
    ax = fig.axes[0]
    assert ax.get_aspect() == 1.0
    levels = _filled(ax).levels
    ratios = levels[1:] / levels[:-1]
    assert len(levels) == 10 and levels[0] == pytest.approx(BOWL.min())
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)
    assert _colour_bar_label(fig, ax) == f"{TRAIN_LOSS}\nlog-spaced levels"
    if kind == "pca_plane":
        assert ax.get_xlabel() == "PC1 (70.0 % of variance; weight-space distance)"
        assert ax.get_ylabel() == "PC2 (20.0 % of variance; weight-space distance)"
        assert _legend(ax) == ["trajectory (snapshots projected)", "final point"]


def test_slice_and_surface_axes_name_split_unit_and_count() -> None:
    one = slice_1d_figure(AL, AL**2, acc=100 - AL**2, samples=N)
    assert one.axes[0].get_ylabel() == TRAIN_LOSS
    assert one.axes[1].get_ylabel() == "train accuracy (%; 1,000 samples)"
    assert "filter-normalised" in one.axes[0].get_xlabel()
    assert surface_3d_figure(AL, BE, BOWL, samples=N).axes[0].get_zlabel() == TRAIN_LOSS
    right = pca_plane_figure(AL, BE, BOWL, np.zeros((3, 2)), snapshot_loss=[1.0, 0.5, 0.2], samples=N).axes[1]
    assert right.get_ylabel() == "train loss (cross-entropy, nats; log scale; 1,000 samples)"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: topk_figure([]), r"eigenvalues: expected a non-empty 1-D array, got shape \(0,\)"),
        (lambda: topk_figure([[1.0]]), r"eigenvalues: expected a non-empty 1-D array, got shape \(1, 1\)"),
        (
            lambda: spectral_density_figure([0, 1, 2], [1, 1]),
            r"density: expected 3 values \(one per grid point\), got 2",
        ),
        (lambda: sharpness_samples_figure([]), "increases: expected a non-empty 1-D array"),
        (lambda: slice_1d_figure([0, 1], [1, 2, 3]), r"loss: expected 2 values \(one per alpha\), got 3"),
        (lambda: slice_1d_figure([0, 1], [1, 2], acc=[1.0]), r"acc: expected 2 values \(one per alpha\), got 1"),
        (lambda: slice_2d_figure(AL, BE, BOWL.T), r"loss: expected shape \(5, 4\) \(xs by ys\), got \(4, 5\)"),
        (lambda: surface_3d_figure(AL, BE, BOWL[:, 0]), "loss: expected a non-empty 2-D array"),
        (
            lambda: pca_plane_figure(AL, BE, BOWL, np.zeros((3, 3))),
            r"coords: expected an \(n, 2\) array, got shape \(3, 3\)",
        ),
        (
            lambda: pca_plane_figure(AL, BE, BOWL, np.zeros((3, 2)), snapshot_loss=[1.0]),
            r"snapshot_loss: expected 3 values \(one per snapshot\), got 1",
        ),
        (
            lambda: eigenvalues_along_path_figure([0, 1], {}),
            "columns: expected at least one eigenvalue column, got none",
        ),
        (
            lambda: eigenvalues_along_path_figure([0, 1], {"lambda_1": [1]}),
            r"lambda_1: expected 2 values \(one per t\), got 1",
        ),
    ],
)
def test_bad_inputs_are_refused(make: Callable[[], Figure], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()
