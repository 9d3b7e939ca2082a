"""The training-sharpness figure (:mod:`tracking.figures.training`) from small synthetic histories."""

from __future__ import annotations

import math
from pathlib import Path

from lgeom.table import Table
from tracking.figures.training import has_sharpness, plot_sharpness

PNG = b"\x89PNG\r\n\x1a\n"


def test_sharpness_figure_is_written_only_with_tracked_values(tmp_path: Path) -> None:
    nan = math.nan
    sgd = Table({"epoch": [1, 2, 3], "lambda_max": [nan, 4.0, 9.0], "two_over_lr": [nan, 20.0, 20.0]})
    adam = Table({"epoch": [1, 2, 3], "lambda_max": [1.0, 2.0, 3.0], "two_over_lr": [nan, nan, nan]})
    off = Table({"epoch": [1, 2], "train_loss": [1.0, 0.5]})
    assert has_sharpness(sgd) and has_sharpness(adam) and not has_sharpness(off)
    assert not has_sharpness({"lambda_max": [nan, nan]})
    out = plot_sharpness({"a": sgd, "b": adam}, tmp_path / "train_sharpness.png", title="cell")
    assert out == tmp_path / "train_sharpness.png" and out.read_bytes()[:8] == PNG
