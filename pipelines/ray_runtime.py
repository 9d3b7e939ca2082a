"""Connecting to Ray: a local Ray by default, an existing cluster with ``--address`` / ``RAY_ADDRESS``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Environment passed to Ray workers: lgeom never needs the dashboard, usage stats or the trial chdir.
_WORKER_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def resolve_address(address: str | None) -> str | None:
    """The cluster to join: ``address`` if given, else ``$RAY_ADDRESS``, else ``None`` (start a local Ray).

    ``"local"`` forces a new local Ray even when ``RAY_ADDRESS`` is set.
    """
    if address == "local":
        return None
    return address or os.environ.get("RAY_ADDRESS") or None


def _short_temp_dir() -> str:
    # Ray puts unix sockets under its temp dir; their paths must stay under ~107 characters.
    base = Path(tempfile.gettempdir()) / f"lgeom-ray-{os.getuid()}"
    base.mkdir(parents=True, exist_ok=True)
    return str(base)


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> Iterator[dict[str, Any]]:
    """Initialise Ray (joining ``address`` or starting a local instance) and shut it down afterwards.

    A local instance runs with token authentication off unless ``RAY_AUTH_MODE`` is set (it is a
    single-user process tree on this machine); a cluster keeps whatever its nodes were started with.

    Yields:
        ``{"address": <resolved address or "local">, "resources": ray.cluster_resources()}``.

    Raises:
        ConnectionError: the cluster at ``address`` cannot be reached (message names the address).
    """
    import ray

    resolved = resolve_address(address)
    for k, v in _WORKER_ENV.items():
        os.environ.setdefault(k, v)
    runtime_env = {"env_vars": {k: os.environ[k] for k in _WORKER_ENV}}
    if ray.is_initialized():
        yield {"address": resolved or "local", "resources": ray.cluster_resources()}
        return
    if resolved is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            num_gpus=num_gpus,
            include_dashboard=False,
            _temp_dir=_short_temp_dir(),
            runtime_env=runtime_env,
            logging_level="WARNING",
        )
    else:
        try:
            ray.init(address=resolved, runtime_env=runtime_env, logging_level="WARNING")
        except (ConnectionError, RuntimeError, TimeoutError) as err:
            raise ConnectionError(
                f"ray address: expected a reachable Ray cluster (ray start --head / ray up), got {resolved!r}: {err}"
            ) from err
    try:
        resources = ray.cluster_resources()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        print(f"Ray: {resolved or 'local'} ({len(nodes)} node(s), {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs)", flush=True)
        yield {"address": resolved or "local", "resources": resources, "nodes": len(nodes)}
    finally:
        ray.shutdown()
