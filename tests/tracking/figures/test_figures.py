"""``save_figure``: a PNG written atomically (folders made, no temporary file left), any figure canvas."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from tracking.figures import save_figure

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
