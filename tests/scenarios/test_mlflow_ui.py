"""A person's view: headless Chromium screenshots MLflow's compare-runs page for two logged runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tracking.runs import run_tags, tracked_run

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium; .ci/run installs it)"
)
def test_compare_runs_page_screenshot(server_store: Any, unique_study: str, tmp_path: Path) -> None:
    ids = []
    with tracked_run(
        server_store, experiment=unique_study, run_name="study", tags=run_tags(study=unique_study, stage="study")
    ) as parent:
        for lr, auc in ((0.05, 0.4), (0.1, 1.3)):
            with tracked_run(
                server_store,
                experiment_id=parent.experiment_id,
                run_name=f"mlp2x16/moons/sgd/lr={lr}",
                parent_run_id=parent.run_id,
                params={"train.lr": lr},
                tags=run_tags(study=unique_study, stage="trial", cell=f"mlp2x16/moons/sgd/lr={lr}"),
            ) as run:
                run.log_metrics({"barrier/bezier/test/acc_auc": auc, "barrier/linear/test/loss": 2 * auc})
                ids.append(run.run_id)
    query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([parent.experiment_id])})
    url = f"{server_store.tracking_uri}/#/compare-runs?{query}"
    shot = tmp_path / "compare-runs.png"
    proc = _chromium(f"--screenshot={shot}", url)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    import matplotlib.image

    img = matplotlib.image.imread(shot)
    assert img.shape[0] >= 900 and img.shape[1] >= 1300
    # A rendered page, not a blank one: many distinct colours and a good share of non-white pixels.
    rgb = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50
    assert (rgb.min(axis=1) < 200).mean() > 0.01

    # What the page shows, not only that it shows something: the rendered DOM names both runs and a metric.
    dom = _chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name in ("mlp2x16/moons/sgd/lr=0.05", "mlp2x16/moons/sgd/lr=0.1", "barrier/bezier/test/acc_auc"):
        assert name in dom.stdout, (
            f"{name!r} not in the rendered compare-runs page ({len(dom.stdout)} characters of DOM)"
        )


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with a throwaway profile, no network services, 15 s of virtual time for the page's
    scripts to fetch and render the runs.
    """
    with tempfile.TemporaryDirectory(prefix="lgeom-chromium-") as profile:
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
                "--window-size=1400,1000",
                "--virtual-time-budget=15000",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
