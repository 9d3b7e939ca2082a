"""Per-run connectivity figures from tiny synthetic inputs: paths along t, and the plane through A, C, B drawn
with true geometry (the angle ACB on screen is the logged one), log-spaced levels and labelled axes; bad inputs
refused.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.contour import QuadContourSet
from matplotlib.figure import Figure

from lgeom.path import triangle
from lgeom.surfaces.three_point_plane import plane_basis
from lgeom.table import Table
from tracking.figures import save_figure
from tracking.figures.paths import paths_figure, plane_figure

PNG = b"\x89PNG\r\n\x1a\n"


def _table(drop: float) -> Table:
    t = np.linspace(0, 1, 5)
    bump = np.sin(np.pi * t)
    return Table(
        {
            "t": t,
            "train_loss": 0.1 + drop * bump,
            "test_loss": 0.2 + drop * bump,
            "train_acc": 99 - 10 * drop * bump,
            "test_acc": 90 - 10 * drop * bump,
        }
    )


def test_paths_figure_is_written(tmp_path: Path) -> None:
    figure = paths_figure(
        {"line": _table(2.0), "bezier": _table(0.1), "partial": {"t": [0.0, 1.0], "test_acc": [90.0, 91.0]}},
        title="pair 0",
        samples={"train": 1000, "test": 500},
    )
    out = save_figure(figure, tmp_path / "paths.png")
    assert out == tmp_path / "paths.png" and out.read_bytes()[:8] == PNG and out.stat().st_size > 5_000


def test_path_axes_state_units_splits_and_sample_counts() -> None:
    fig = paths_figure({"line": _table(2.0)}, samples={"train": 10_000, "test": 2_000})
    loss, acc = fig.axes
    assert loss.get_ylabel() == "loss (cross-entropy, nats; train 10,000, test 2,000 samples)"
    assert acc.get_ylabel() == "accuracy (%; train 10,000, test 2,000 samples)"
    assert loss.get_xlabel().startswith("t (position along the path")
    assert [t.get_text() for t in acc.get_legend().get_texts()] == ["line (train)", "line (test)"]


def test_paths_need_tables_with_t() -> None:
    with pytest.raises(ValueError, match="tables: expected at least one path table, got none"):
        paths_figure({})
    with pytest.raises(ValueError, match="table 'line': expected a column 't', got none"):
        paths_figure({"line": {"test_acc": [1.0]}})


def _plane(a: np.ndarray, b: np.ndarray, c: np.ndarray, *, n: int = 21, margin: float = 0.2) -> dict[str, np.ndarray]:
    """A plane dict as ``PlaneResult.to_arrays()`` lays it out (grid over the points' box widened by ``margin``)
    with a loss valley along the quadratic Bezier curve through A, C, B and a 1e-3 floor.
    """
    pts = np.stack([a, b, c])
    lo, hi = pts.min(0), pts.max(0)
    xs = np.linspace(lo[0] - margin * (hi - lo)[0], hi[0] + margin * (hi - lo)[0], n)
    ys = np.linspace(lo[1] - margin * (hi - lo)[1], hi[1] + margin * (hi - lo)[1], n)
    t = np.linspace(0, 1, 61)[:, None]
    curve = (1 - t) ** 2 * a + 2 * t * (1 - t) * c + t**2 * b
    gx, gy = np.meshgrid(xs, ys)  # (ny, nx)
    dist = np.min(np.hypot(gx[..., None] - curve[:, 0], gy[..., None] - curve[:, 1]), axis=-1)
    loss = 1e-3 + dist**2
    return {
        "xs": xs,
        "ys": ys,
        "train_loss": loss,
        "test_loss": 1.5 * loss + 0.05,
        "train_acc": 100 - 50 * np.tanh(loss),
        "test_acc": 95 - 50 * np.tanh(loss),
        "a": a,
        "b": b,
        "c": c,
        "curve_xy": curve,
    }


def _contour_axes(fig: Figure) -> list[Axes]:
    return [ax for ax in fig.axes if any(isinstance(c, QuadContourSet) for c in ax.collections)]


def _screen_angle_acb(ax: Axes) -> float:
    """The angle at C as drawn: from the display (pixel) positions of the A, B, C markers, plain NumPy."""
    at = {line.get_gid(): ax.transData.transform(line.get_xydata()[0]) for line in ax.lines if line.get_gid()}
    u, w = at["A"] - at["C"], at["B"] - at["C"]
    return math.degrees(math.acos(float(u @ w) / float(np.linalg.norm(u) * np.linalg.norm(w))))


def test_the_angle_acb_drawn_is_the_logged_angle() -> None:
    # A, C, B in a 40-parameter space with a wide obtuse triangle (|AB| = 10, C 1.6 off the line): on axes
    # whose units differed the 144-degree angle would be drawn far sharper.
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(40, 2, generator=g, dtype=torch.float64))
    a_vec = torch.randn(40, generator=g, dtype=torch.float64)
    points = {
        "a": a_vec,
        "b": a_vec + 10.0 * q[:, 0],
        "c": a_vec + 5.0 * q[:, 0] + 1.6 * q[:, 1] + 0.3 * q[:, 0],
    }
    params = {k: {"w": v.reshape(8, 5), "b": v[:3].clone()} for k, v in points.items()}
    logged = triangle(params["a"], params["c"], params["b"]).angle_acb_deg
    assert logged > 140
    basis = plane_basis(params["a"], params["c"], params["b"])
    xy = {k: np.asarray(v, dtype=np.float64) for k, v in basis.coords.items()}
    fig = plane_figure(_plane(xy["a"], xy["b"], xy["c"]), samples={"train": 1000, "test": 500})
    fig.canvas.draw()
    axes = _contour_axes(fig)
    assert len(axes) == 2
    for ax in axes:
        assert ax.get_aspect() == 1.0
        assert _screen_angle_acb(ax) == pytest.approx(logged, abs=0.5)
        assert f"angle ACB = {logged:.1f}°" in ax.get_title()
    # the check can fail: on a square box with the axes' units left free the same triangle looks sharper
    axes[0].set_aspect("auto")
    axes[0].set_box_aspect(1)
    fig.canvas.draw()
    assert abs(_screen_angle_acb(axes[0]) - logged) > 10


def test_the_plane_has_log_spaced_levels_labelled_axes_and_marked_points() -> None:
    plane = _plane(np.array([0.0, 0.0]), np.array([4.0, 0.0]), np.array([2.2, 3.0]))
    fig = plane_figure(plane, samples={"train": 10_000, "test": 2_000}, curve_name="bezier", levels=12)
    axes = _contour_axes(fig)
    for ax, grid in zip(axes, (plane["train_loss"], plane["test_loss"])):
        filled = next(c for c in ax.collections if isinstance(c, QuadContourSet) and c.filled)
        ratios = filled.levels[1:] / filled.levels[:-1]
        assert len(filled.levels) == 13
        np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)
        assert ratios[0] > 1.05 and filled.levels[0] == pytest.approx(grid.min())
        assert "weight-space distance" in ax.get_xlabel() and "weight-space distance" in ax.get_ylabel()
        texts = {t.get_text() for t in ax.texts}
        assert {"A", "B", "C"} <= texts
        curve = next(line for line in ax.lines if line.get_label() == "bezier (projected onto the plane)")
        np.testing.assert_allclose(curve.get_xydata(), plane["curve_xy"])
    bars = [ax.get_ylabel() or ax.get_xlabel() for ax in fig.axes if ax not in axes]
    assert bars == [
        "train loss (cross-entropy, nats; 10,000 samples)\nlog-spaced levels",
        "test loss (cross-entropy, nats; 2,000 samples)\nlog-spaced levels",
    ]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["segment A-B", "bezier (projected onto the plane)", "endpoints A, B", "control point C"]


@pytest.mark.parametrize("quantity", ["loss", "error"])
def test_plane_figure_is_written(tmp_path: Path, quantity: str) -> None:
    plane = _plane(np.array([0.0, 0.0]), np.array([4.0, 0.0]), np.array([2.0, 1.0]))
    out = save_figure(plane_figure(plane, quantity=quantity, levels=5), tmp_path / f"plane_{quantity}.png")
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 5_000


def test_one_split_a_zero_error_and_no_curve_are_drawn_too() -> None:
    plane = _plane(np.array([0.0, 0.0]), np.array([4.0, 0.0]), np.array([2.0, 1.0]))
    plane["test_acc"] = np.full_like(plane["test_acc"], 100.0)
    del plane["curve_xy"]
    fig = plane_figure(plane, splits=("test",), quantity="error")
    (ax,) = _contour_axes(fig)
    assert ax.get_title().startswith("test error on the plane")


def test_bad_planes_are_refused() -> None:
    good = _plane(np.array([0.0, 0.0]), np.array([4.0, 0.0]), np.array([2.0, 1.0]))
    plane = dict(good)
    del plane["c"]
    with pytest.raises(ValueError, match="plane: expected arrays xs, ys, a, b, c, got none for 'c'"):
        plane_figure(plane)
    plane = dict(good)
    plane["test_loss"] = plane["test_loss"][:, :5]
    with pytest.raises(ValueError, match=r"plane test_loss: expected shape \(21, 21\), got \(21, 5\)"):
        plane_figure(plane)
    plane = {k: v for k, v in good.items() if not k.endswith("_loss")}
    with pytest.raises(ValueError, match="plane: expected a grid train_loss, test_loss, got none"):
        plane_figure(plane)
    with pytest.raises(ValueError, match="quantity: expected one of loss, error, got 'acc'"):
        plane_figure(good, quantity="acc")


def test_the_colour_bars_state_the_samples_a_capped_plane_holds() -> None:
    plane = _plane(np.array([0.0, 0.0]), np.array([4.0, 0.0]), np.array([2.0, 1.0]))
    capped = {**plane, "train_samples": np.asarray(2000), "test_samples": np.asarray(1500)}  # PlaneResult.to_arrays()

    def bars(fig: Figure) -> list[str]:
        axes = _contour_axes(fig)
        return [ax.get_ylabel() or ax.get_xlabel() for ax in fig.axes if ax not in axes]

    assert bars(plane_figure(capped)) == [
        "train loss (cross-entropy, nats; 2,000 samples)\nlog-spaced levels",
        "test loss (cross-entropy, nats; 1,500 samples)\nlog-spaced levels",
    ]
    assert bars(plane_figure(capped, samples={"train": 7, "test": 9}))[0].startswith(
        "train loss (cross-entropy, nats; 7 "
    )
    assert bars(plane_figure(plane))[0] == "train loss (cross-entropy, nats)\nlog-spaced levels"
