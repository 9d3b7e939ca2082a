"""The training-sharpness figure (:mod:`tracking.figures.training`) from small synthetic histories."""

from __future__ import annotations

import math
from pathlib import Path

from lgeom.table import Table
from tracking.figures import save_figure
from tracking.figures.training import has_sharpness, sharpness_figure

PNG = b"\x89PNG\r\n\x1a\n"
NAN = math.nan
SGD = Table({"epoch": [1, 2, 3], "lambda_max": [NAN, 4.0, 9.0], "two_over_lr": [NAN, 20.0, 20.0]})
ADAM = Table({"epoch": [1, 2, 3], "lambda_max": [1.0, 2.0, 3.0], "two_over_lr": [NAN, NAN, NAN]})


def test_sharpness_figure_is_written_only_with_tracked_values(tmp_path: Path) -> None:
    off = Table({"epoch": [1, 2], "train_loss": [1.0, 0.5]})
    assert has_sharpness(SGD) and has_sharpness(ADAM) and not has_sharpness(off)
    assert not has_sharpness({"lambda_max": [NAN, NAN]})
    out = save_figure(sharpness_figure({"a": SGD, "b": ADAM}, title="cell", samples=256), tmp_path / "sharpness.png")
    assert out == tmp_path / "sharpness.png" and out.read_bytes()[:8] == PNG


def test_axes_and_legend_say_what_is_drawn() -> None:
    ax = sharpness_figure({"a": SGD, "b": ADAM}, samples=256).axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "epoch"
    assert ax.get_ylabel() == "train top Hessian eigenvalue of the loss (nats/param²; log scale; 256 samples)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["a: lambda_max (Lanczos)", "a: 2 / lr (GD stability edge)", "b: lambda_max (Lanczos)"]
    measured = next(line for line in ax.lines if line.get_label() == "a: lambda_max (Lanczos)")
    assert list(measured.get_xdata()) == [2.0, 3.0], "epochs without a measurement are not drawn"


def test_a_negative_eigenvalue_keeps_a_linear_axis() -> None:
    hist = Table({"epoch": [1, 2], "lambda_max": [-0.5, 2.0], "two_over_lr": [NAN, NAN]})
    ax = sharpness_figure({"a": hist}).axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylabel() == "train top Hessian eigenvalue of the loss (nats/param²)"
