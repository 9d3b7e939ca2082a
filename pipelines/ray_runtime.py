"""Connecting to Ray: a local Ray by default, an existing cluster with ``--address`` / ``RAY_ADDRESS``.

Credentials never go into a Ray runtime environment: Ray writes a runtime environment's ``env_vars`` in
plain text to ``runtime_env_agent.log`` under its session folder. Workers of the local Ray inherit the
driver's environment (the raylet is started from it), so they see ``AWS_*`` / ``MLFLOW_TRACKING_*``
without Ray forwarding anything; on a cluster the workers take them from the environment of their own
node (what ``ray start`` ran with, e.g. set by the cluster's setup commands from a secret store). Ray
Tune copies ``AWS_*`` of the driver's environment into every trial's runtime environment by itself, so
:func:`hidden_credentials` takes every credential out of the driver's environment while trials are
started.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import tempfile
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from tracking.redact import find_secret, is_secret_name, register_secret

# Environment passed to Ray workers: lgeom never needs the dashboard, usage stats or the trial chdir.
_WORKER_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # MLflow prints "View run ... at: <tracking URI>" when a run ends, user:password included.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


#: Never shipped with plug-in packages: caches, environments, run stores and data.
SHIP_EXCLUDES = ["__pycache__", "*.pyc", ".git", ".venv", "venv", "mlruns", "mlflow.db", "data", "outputs"]


def worker_runtime_env(py_modules: Sequence[str | os.PathLike[str]] = ()) -> dict[str, Any]:
    """The runtime environment given to ``ray.init``: the fixed settings of ``_WORKER_ENV``, never a
    credential (a name marking one, or a value holding a secret known to this process, is left out), and
    ``py_modules``: the plug-in module files or package folders workers must import (uploaded by Ray; in a
    package folder :data:`SHIP_EXCLUDES` are left out). The working directory itself is never shipped.
    """
    env = {k: os.environ[k] for k in _WORKER_ENV if k in os.environ}
    out: dict[str, Any] = {
        "env_vars": {k: v for k, v in env.items() if not is_secret_name(k) and find_secret(v) is None}
    }
    if py_modules:
        out["py_modules"] = [str(Path(p)) for p in py_modules]
        out["excludes"] = list(SHIP_EXCLUDES)
    return out


@contextlib.contextmanager
def hidden_credentials() -> Iterator[list[str]]:
    """Take every credential-named variable (``AWS_SECRET_ACCESS_KEY``, ``AWS_ACCESS_KEY_ID``,
    ``MLFLOW_TRACKING_PASSWORD`` ...) out of this process's environment for the ``with`` block, and put
    them back afterwards. Wrap ``Tuner.fit()`` in it: Ray Tune copies the driver's ``AWS_*`` variables into
    each trial's runtime environment, which Ray logs in plain text. Their values stay registered as secrets
    (``tracking.redact``), so messages printed meanwhile are still masked.

    Yields:
        the names taken out.
    """
    taken = {k: v for k, v in os.environ.items() if is_secret_name(k)}
    for k, v in taken.items():
        register_secret(v)
        os.environ.pop(k, None)
    try:
        yield sorted(taken)
    finally:
        for k, v in taken.items():
            os.environ.setdefault(k, v)


def resolve_address(address: str | None) -> str | None:
    """The cluster to join: ``address`` if given, else ``$RAY_ADDRESS``, else ``None`` (start a local Ray).

    ``"local"`` forces a new local Ray even when ``RAY_ADDRESS`` is set.
    """
    if address == "local":
        return None
    return address or os.environ.get("RAY_ADDRESS") or None


def _host_of(address: str) -> str:
    """The host part of a Ray address (``host:port``, ``ray://host:port``, ``[v6]:port``)."""
    rest = address.split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP) is this machine's loopback interface."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def spans_hosts(address: str | None, node_ips: Sequence[str], local_ips: Collection[str] = ()) -> bool:
    """Whether trials on the Ray cluster at ``address`` (``None``: the local Ray the caller starts) may run
    on another machine than this driver: the address names another host, or a node's IP is neither
    loopback nor one of ``local_ips`` (this machine's addresses). ``"auto"`` names the cluster already
    running here; its nodes decide.
    """
    if address is None:
        return False

    def here(host: str) -> bool:
        return is_loopback(host) or host in local_ips

    if address != "auto" and not here(_host_of(address)):
        return True
    return not all(here(ip) for ip in node_ips)


def local_ips() -> set[str]:
    """This machine's addresses as Ray and the resolver see them (Ray may register a node started on
    loopback under the machine's outward address).
    """
    import socket

    found: set[str] = set()
    try:
        import ray.util

        found.add(ray.util.get_node_ip_address())
    except Exception:  # noqa: BLE001 - best effort; loopback is always local
        pass
    try:
        host = socket.gethostname()
        found.update(str(a[4][0]) for a in socket.getaddrinfo(host, None))
    except OSError:
        pass
    return found


def _short_temp_dir() -> str:
    # Ray puts unix sockets under its temp dir; their paths must stay under ~107 characters.
    base = Path(tempfile.gettempdir()) / f"lgeom-ray-{os.getuid()}"
    base.mkdir(parents=True, exist_ok=True)
    return str(base)


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    py_modules: Sequence[str | os.PathLike[str]] = (),
) -> Iterator[dict[str, Any]]:
    """Initialise Ray (joining ``address`` or starting a local instance) and shut it down afterwards;
    ``py_modules`` (plug-in module files or package folders) are shipped to every worker
    (:func:`worker_runtime_env`).

    A local instance runs with token authentication off unless ``RAY_AUTH_MODE`` is set (it is a
    single-user process tree on this machine); a cluster keeps whatever its nodes were started with.

    Yields:
        ``{"address": <resolved address or "local">, "external": <joined an existing cluster>,
        "resources": ray.cluster_resources(), "nodes": <alive nodes>, "node_ips": [their IPs],
        "local_ips": {this machine's addresses}}``.

    Raises:
        ConnectionError: the cluster at ``address`` cannot be reached (message names the address).
    """
    import ray

    resolved = resolve_address(address)
    for k, v in _WORKER_ENV.items():
        os.environ.setdefault(k, v)
    runtime_env = worker_runtime_env(py_modules)
    if ray.is_initialized():
        yield _describe(ray, resolved)
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
        info = _describe(ray, resolved)
        resources = info["resources"]
        print(
            f"Ray: {info['address']} ({info['nodes']} node(s), "
            f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs)",
            flush=True,
        )
        yield info
    finally:
        ray.shutdown()


def _describe(ray: Any, resolved: str | None) -> dict[str, Any]:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {
        "address": resolved or "local",
        "external": resolved is not None,
        "resources": ray.cluster_resources(),
        "nodes": len(nodes),
        "node_ips": [str(n.get("NodeManagerAddress", "")) for n in nodes],
        "local_ips": local_ips(),
    }
