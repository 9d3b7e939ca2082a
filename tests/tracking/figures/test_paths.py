"""Per-run connectivity figures from tiny synthetic inputs: paths along t, the plane through A, C, B; bad
inputs refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tracking.figures.paths as paths_module
from lgeom.table import Table
from tracking.figures.paths import plot_paths, plot_plane

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
    out = plot_paths(
        {"line": _table(2.0), "bezier": _table(0.1), "partial": {"t": [0.0, 1.0], "test_acc": [90.0, 91.0]}},
        tmp_path / "paths.png",
        title="pair 0",
    )
    assert out == tmp_path / "paths.png" and out.read_bytes()[:8] == PNG and out.stat().st_size > 5_000


def test_paths_need_tables_with_t(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tables: expected at least one path table, got none"):
        plot_paths({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="table 'line': expected a column 't', got none"):
        plot_paths({"line": {"test_acc": [1.0]}}, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def _plane() -> dict[str, np.ndarray]:
    xs, ys = np.linspace(-0.2, 1.2, 6), np.linspace(-0.2, 1.0, 4)
    xx, yy = np.meshgrid(xs, ys)
    acc = 90 - 30 * np.abs(yy - 0.8 * np.sin(np.pi * np.clip(xx, 0, 1)))
    return {
        "xs": xs,
        "ys": ys,
        "test_acc": acc,
        "train_acc": acc + 5,
        "a": np.array([0.0, 0.0]),
        "b": np.array([1.0, 0.0]),
        "c": np.array([0.5, 0.8]),
        "curve_xy": np.stack([np.linspace(0, 1, 7), 0.8 * np.sin(np.pi * np.linspace(0, 1, 7))], 1),
    }


@pytest.mark.parametrize("split", ["test", "train"])
def test_plane_figure_is_written(tmp_path: Path, split: str) -> None:
    out = plot_plane(_plane(), tmp_path / f"plane_{split}.png", split=split, levels=5)
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 5_000


def test_a_flat_plane_without_a_curve_is_drawn_too(tmp_path: Path) -> None:
    plane = _plane()
    plane["test_acc"] = np.full_like(plane["test_acc"], 50.0)
    del plane["curve_xy"]
    assert plot_plane(plane, tmp_path / "flat.png").read_bytes()[:8] == PNG


def test_bad_planes_are_refused(tmp_path: Path) -> None:
    plane = _plane()
    del plane["c"]
    with pytest.raises(ValueError, match="plane: expected arrays xs, ys, test_acc, a, b, c, got none for 'c'"):
        plot_plane(plane, tmp_path / "x.png")
    plane = _plane()
    plane["test_acc"] = plane["test_acc"].T
    with pytest.raises(ValueError, match=r"plane test_acc: expected shape \(4, 6\), got \(6, 4\)"):
        plot_plane(plane, tmp_path / "x.png")


def test_the_colour_bar_states_the_samples_of_a_capped_plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list = []
    real = paths_module.save_figure
    monkeypatch.setattr(paths_module, "save_figure", lambda fig, path: drawn.append(fig) or real(fig, path))
    plane = {**_plane(), "test_samples": np.asarray(2000), "train_samples": np.asarray(1500)}
    plot_plane(plane, tmp_path / "capped.png")
    plot_plane(plane, tmp_path / "capped_train.png", split="train")
    plot_plane(_plane(), tmp_path / "uncapped.png")
    labels = [fig.axes[1].get_ylabel() for fig in drawn]
    assert labels == ["test error (%) on 2,000 samples", "train error (%) on 1,500 samples", "test error (%)"]
