"""Headless Chromium for the scenario tests that look at pages as a person would (Debian's ``chromium``; the
tests skip without it), and the folder where their screenshots are kept as artifacts of the test run.

Screenshots go to ``$LGEOM_TEST_ARTIFACTS`` (default ``test-artifacts/`` at the repository root, ignored by
git) so that CI can keep them with the run's results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS_ENV = "LGEOM_TEST_ARTIFACTS"
REPO = Path(__file__).resolve().parents[2]

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium; .ci/run installs it)"
)


def artifacts_dir() -> Path:
    """The folder kept as the test run's artifacts (``$LGEOM_TEST_ARTIFACTS``, default ``<repo>/test-artifacts``),
    created if missing.
    """
    folder = Path(os.environ.get(ARTIFACTS_ENV) or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium(*args: str, window: str = "1400,1000", profile: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with no network services and 15 s of virtual time for the page's scripts to fetch and
    render (virtual time: a page that settles sooner returns sooner). The browser profile is ``profile`` (pass the
    same folder to calls on one page so the second finds the page's scripts cached) or a throwaway one.
    """
    with tempfile.TemporaryDirectory(prefix="lgeom-chromium-") as scratch:
        profile = profile or Path(scratch)
        return subprocess.run(
            [
                str(CHROMIUM),
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--window-size={window}",
                "--virtual-time-budget=15000",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )


def render(
    url: str,
    name: str,
    *,
    window: str = "1400,1000",
    ready: Callable[[str], bool] | None = None,
    attempts: int = 3,
) -> tuple[str, Path]:
    """Open ``url`` once per attempt and take both its DOM (after the scripts ran) and a PNG screenshot, kept in
    :func:`artifacts_dir` as ``name``; the attempts stop at the first DOM for which ``ready`` holds (say, charts
    drawn: a page's lazily drawn parts depend on real time, which virtual time does not control). The browser
    profile is shared between attempts, so later ones find the page's scripts cached.

    Returns:
        ``(dom, png)`` of the last attempt.
    """
    shot = artifacts_dir() / name
    with tempfile.TemporaryDirectory(prefix="lgeom-chromium-") as profile:
        for _ in range(attempts):
            shot.unlink(missing_ok=True)
            proc = chromium(f"--screenshot={shot}", "--dump-dom", url, window=window, profile=Path(profile))
            assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
            if ready is None or ready(proc.stdout):
                break
    return proc.stdout, shot


def assert_rendered(png: Path, *, width: int, height: int) -> None:
    """A rendered page, not a blank one: at least ``width`` x ``height`` pixels, more than 10 kB, many distinct
    colours, and a good share of non-white pixels with spread-out values.
    """
    import matplotlib.image

    assert png.stat().st_size > 10_000, f"{png} is {png.stat().st_size} bytes: a blank page?"
    img = matplotlib.image.imread(png)
    assert img.shape[0] >= height and img.shape[1] >= width, f"{png}: {img.shape[1]}x{img.shape[0]} pixels"
    rgb = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50, f"{png}: fewer than 50 colours"
    assert (rgb.min(axis=1) < 200).mean() > 0.01, f"{png}: almost only white"
    assert float(rgb.astype(np.float64).var()) > 100.0, f"{png}: nearly uniform pixels"
