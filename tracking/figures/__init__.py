"""Per-run figures (matplotlib's object API on the Agg canvas; no global backend is changed): ``paths`` for
connectivity results, ``probes`` for curvature probes. Each function takes plain arrays / lgeom results and a
file path, writes a PNG with :func:`save_figure` and returns the path.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lgeom.safe_io import write_atomically


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically (temp file + rename, folders created); returns the path."""
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    # keep_suffix: matplotlib picks the format by the suffix
    return write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight"), keep_suffix=True)
