"""The shared figure helpers: ``save_figure`` (a PNG written atomically, folders made, no temporary file left),
axis labels naming unit, split and sample count, and log-spaced contour levels.
"""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

import tracking.figures
from tracking.figures import LOSS_UNIT, data_label, log_contours, log_levels, new_figure, save_figure

PNG = b"\x89PNG\r\n\x1a\n"


def test_a_figure_without_a_canvas_is_written_under_new_folders(tmp_path: Path) -> None:
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "a" / "b" / "f.png", dpi=50)
    assert out == tmp_path / "a" / "b" / "f.png" and out.read_bytes()[:8] == PNG
    assert [p.name for p in out.parent.iterdir()] == ["f.png"], "no temporary file is left behind"


def test_overwriting_replaces_the_file_whole(tmp_path: Path) -> None:
    small, large = Figure(figsize=(1, 1)), Figure(figsize=(4, 4))
    small.subplots()
    large.subplots().plot(range(10))
    out = tmp_path / "f.png"
    save_figure(large, out, dpi=50)
    before = out.stat().st_size
    save_figure(small, out, dpi=50)
    assert out.read_bytes()[:8] == PNG and out.stat().st_size < before


def test_the_docstring_examples_hold() -> None:
    assert doctest.testmod(tracking.figures).failed == 0


def test_labels_name_quantity_unit_split_and_count() -> None:
    assert data_label("loss", LOSS_UNIT, split="test", samples=2500) == "test loss (cross-entropy, nats; 2,500 samples)"
    assert data_label("loss", LOSS_UNIT) == "loss (cross-entropy, nats)"
    assert data_label("epoch") == "epoch"


def test_levels_are_geometric_from_the_minimum_to_the_quantile() -> None:
    rng = np.random.default_rng(3)
    values = np.exp(rng.uniform(np.log(0.02), np.log(40.0), size=(21, 21)))
    levels = log_levels(values, 12, quantile=0.9)
    assert len(levels) == 13
    ratios = levels[1:] / levels[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-12)
    assert levels[0] == pytest.approx(values.min(), rel=1e-12)
    assert levels[-1] == pytest.approx(np.quantile(values, 0.9), rel=1e-12)


def test_a_zero_loss_is_floored_and_a_constant_grid_still_gets_levels() -> None:
    levels = log_levels([0.0, 0.5, 2.0, np.nan], 4, quantile=1.0, floor=1e-3)
    assert levels[0] == pytest.approx(2e-3) and levels[-1] == pytest.approx(2.0)
    flat = log_levels(np.full((3, 3), 0.7), 5)
    assert flat[0] < 0.7 < flat[-1] and np.all(np.diff(flat) > 0)


@pytest.mark.parametrize(
    ("values", "n", "message"),
    [
        ([np.nan, np.inf], 5, "values: expected at least one finite value to place contour levels, got none"),
        ([-0.5, 1.0], 5, "values: expected values >= 0 for log-spaced levels, got -0.5"),
        ([1.0, 2.0], 0, "n: expected at least 1 contour level, got 0"),
    ],
)
def test_bad_level_inputs_are_refused(values: list[float], n: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        log_levels(values, n)


def test_contours_fill_every_cell_with_a_labelled_log_colour_bar() -> None:
    x, y = np.linspace(-1, 1, 9), np.linspace(-1, 1, 5)
    z = 1e-4 + x[None, :] ** 2 + y[:, None] ** 2
    fig = new_figure()
    ax = fig.subplots()
    filled = log_contours(ax, x, y, z, label="train loss (cross-entropy, nats; 10 samples)", levels=8)
    assert filled.norm.__class__.__name__ == "LogNorm"
    assert filled.levels[0] == pytest.approx(z.min()) and filled.extend == "max"
    bar = fig.axes[-1]
    label = bar.get_xlabel() or bar.get_ylabel()
    assert "train loss (cross-entropy, nats; 10 samples)" in label and "log-spaced levels" in label
