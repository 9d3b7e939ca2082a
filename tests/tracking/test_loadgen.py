"""The load generator on the embedded sqlite store (no server): every request timed, everything read
back, and a missing artifact reported by ``verify``.
"""

from __future__ import annotations

import os
from pathlib import Path

from tracking.loadgen import MODEL_ARTIFACT, LoadResult, run_load, verify


def test_percentile_nearest_rank() -> None:
    r = LoadResult(experiment_id="0", latencies=[float(x) for x in range(1, 101)], wall=10.0)
    assert r.percentile(50) == 50.0 and r.percentile(99) == 99.0 and r.percentile(100) == 100.0
    assert r.requests_per_s == 10.0
    assert LoadResult(experiment_id="0").percentile(99) != LoadResult(experiment_id="0").percentile(99)  # nan


def test_small_load_on_embedded_sqlite(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_load(uri, "load", trials=3, metrics=4, artifact_location=(tmp_path / "art").as_uri(), timeout=120)
    assert result.errors == [] and len(result.run_ids) == 3
    assert len(result.latencies) == 3 * (1 + 3 + 4 + 2 + 1)
    assert verify(uri, result, trials=3, metrics=4) == []
    # a lost artifact is found
    lost = next((tmp_path / "art").rglob(Path(MODEL_ARTIFACT).name))
    os.remove(lost)
    problems = verify(uri, result, trials=3, metrics=4)
    assert len(problems) == 1 and MODEL_ARTIFACT in problems[0]
