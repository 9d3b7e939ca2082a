"""Concurrent tiny "trials" against a tracking store: load test and benchmark (``bench/tracking_load.py``).

Each trial, in a thread of its own, creates a run, logs params, ``metrics`` metric values (one request
each, with steps), a small text artifact and a small state-dict artifact (``model/state_dict.pt``), and
ends the run. Every request's latency is recorded; :func:`verify` then reads everything back and lists
what is missing. Requests are bounded (a fixed number per trial, no retries beyond MLflow's own), and
every URI is the caller's (loopback in tests and the benchmark).
"""

from __future__ import annotations

import io
import math
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_ARTIFACT = "model/state_dict.pt"
NOTE_ARTIFACT = "note.txt"


@dataclass
class LoadResult:
    """What a load run did.

    Attributes:
        experiment_id: the experiment the trials logged to.
        run_ids: one per finished trial.
        latencies: seconds per request, every request of every trial.
        wall: seconds from the first request to the last trial's end.
        errors: ``"trial N: <error>"`` per trial that failed.
    """

    experiment_id: str
    run_ids: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def requests_per_s(self) -> float:
        """Requests per second over the whole run."""
        return len(self.latencies) / self.wall if self.wall else 0.0

    @property
    def runs_per_s(self) -> float:
        """Finished trials per second."""
        return len(self.run_ids) / self.wall if self.wall else 0.0

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of request latency in seconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[rank]


def _state_dict_bytes(seed: int) -> bytes:
    import torch

    g = torch.Generator().manual_seed(seed)
    state = {"weight": torch.randn(8, 4, generator=g), "bias": torch.zeros(8)}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _trial(
    client: Any, exp_id: str, index: int, metrics: int, timed: Callable[..., Any], out: LoadResult, lock: threading.Lock
) -> None:
    run = timed(client.create_run, exp_id, run_name=f"load-{index}", tags={"lgeom.load.trial": str(index)})
    run_id = run.info.run_id
    for key, value in (("trial", index), ("metrics", metrics), ("kind", "load")):
        timed(client.log_param, run_id, key, value)
    for step in range(metrics):
        timed(client.log_metric, run_id, "loss", 1.0 / (step + 1 + index), step=step)
    with tempfile.TemporaryDirectory(prefix="lgeom-load-") as tmp:
        note = Path(tmp) / NOTE_ARTIFACT
        note.write_text(f"trial {index}\n")
        timed(client.log_artifact, run_id, str(note))
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        (model_dir / "state_dict.pt").write_bytes(_state_dict_bytes(index))
        timed(client.log_artifact, run_id, str(model_dir / "state_dict.pt"), "model")
    timed(client.set_terminated, run_id, "FINISHED")
    with lock:
        out.run_ids.append(run_id)


def run_load(
    tracking_uri: str,
    experiment: str,
    *,
    trials: int = 16,
    metrics: int = 50,
    artifact_location: str | None = None,
    timeout: float = 600.0,
) -> LoadResult:
    """Run ``trials`` concurrent trials (threads) against ``tracking_uri``, logging to experiment
    ``experiment`` (created; ``artifact_location`` for stores without a server). Credentials, if any, come
    from ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``.

    Raises:
        TimeoutError: the trials did not finish within ``timeout`` seconds.
    """
    from mlflow.tracking import MlflowClient

    setup = MlflowClient(tracking_uri=tracking_uri)
    exp_id = setup.create_experiment(experiment, artifact_location=artifact_location)
    out = LoadResult(experiment_id=exp_id)
    lock = threading.Lock()

    def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = time.perf_counter() - t0
            with lock:
                out.latencies.append(dt)

    def worker(i: int) -> None:
        try:
            _trial(MlflowClient(tracking_uri=tracking_uri), exp_id, i, metrics, timed, out, lock)
        except Exception as err:  # noqa: BLE001 - recorded and reported by the caller
            with lock:
                out.errors.append(f"trial {i}: {type(err).__name__}: {str(err)[:300]}")

    threads = [threading.Thread(target=worker, args=(i,), name=f"lgeom-load-{i}", daemon=True) for i in range(trials)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    out.wall = time.perf_counter() - start
    if any(t.is_alive() for t in threads):
        raise TimeoutError(
            f"load on {tracking_uri}: expected {trials} trials to finish within {timeout:.0f} s, got {len(out.run_ids)}"
        )
    return out


def verify(tracking_uri: str, result: LoadResult, *, trials: int, metrics: int) -> list[str]:
    """Everything the trials should have left, read back: one finished run per trial with its params,
    ``metrics`` steps of ``loss`` with the right values, the note and the state dict (which loads and
    matches). Returns the problems found (empty: nothing lost).
    """
    import torch
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    problems = list(result.errors)
    runs = client.search_runs([result.experiment_id], max_results=1000)
    by_trial = {r.data.tags.get("lgeom.load.trial"): r for r in runs}
    if len(runs) != trials:
        problems.append(f"runs: expected {trials}, got {len(runs)}")
    for i in range(trials):
        run = by_trial.get(str(i))
        if run is None:
            problems.append(f"trial {i}: expected a run, got none")
            continue
        if run.info.status != "FINISHED":
            problems.append(f"trial {i}: expected status FINISHED, got {run.info.status}")
        if run.data.params != {"trial": str(i), "metrics": str(metrics), "kind": "load"}:
            problems.append(f"trial {i}: expected 3 params, got {run.data.params}")
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss"))
        expected = [(s, 1.0 / (s + 1 + i)) for s in range(metrics)]
        if len(history) != metrics or any(abs(a[1] - b[1]) > 1e-9 or a[0] != b[0] for a, b in zip(history, expected)):
            problems.append(f"trial {i}: expected {metrics} steps of loss, got {len(history)}")
        with tempfile.TemporaryDirectory(prefix="lgeom-verify-") as tmp:
            try:
                note = Path(client.download_artifacts(run.info.run_id, NOTE_ARTIFACT, tmp)).read_text()
                if note != f"trial {i}\n":
                    problems.append(f"trial {i}: expected note 'trial {i}', got {note!r}")
                state = torch.load(client.download_artifacts(run.info.run_id, MODEL_ARTIFACT, tmp), weights_only=True)
                if not torch.equal(
                    state["weight"], torch.load(io.BytesIO(_state_dict_bytes(i)), weights_only=True)["weight"]
                ):
                    problems.append(f"trial {i}: expected the logged state dict, got different weights")
            except Exception as err:  # noqa: BLE001 - a missing artifact is a finding
                problems.append(
                    f"trial {i}: expected artifacts {NOTE_ARTIFACT} and {MODEL_ARTIFACT}, "
                    f"got {type(err).__name__}: {str(err)[:200]}"
                )
    return problems
