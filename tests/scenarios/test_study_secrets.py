"""Credentials never reach a file a study writes, nor its terminal.

A one-cell quick-tiny study runs against the local stack (MLflow server with proxied S3 artifacts) with
a password inside the tracking URI (``http://user:PW@127.0.0.1:port``) and S3 / MLflow credentials in its
environment. Afterwards every file it wrote is searched for the secret values: its output and report
folders, the server's store folder (database, S3 data, logs), Ray's session folders (worker logs,
``runtime_env_agent.log``) and its captured stdout / stderr. None may hold them.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LGEOM = [sys.executable, "-m", "pipelines.cli"]


def _ray_sessions() -> set[Path]:
    from pipelines.ray_runtime import _short_temp_dir

    return {p.resolve() for p in Path(_short_temp_dir()).glob("session_2*") if p.is_dir()}


def _files_holding(roots: list[Path], needles: dict[str, bytes]) -> list[str]:
    found = []
    for root in roots:
        for f in [root] if root.is_file() else root.rglob("*"):
            if not f.is_file() or f.is_symlink():
                continue
            try:
                data = f.read_bytes()
            except OSError:
                continue
            found += [f"{name} in {f}" for name, value in needles.items() if value in data]
    return found


def test_a_study_writes_no_credential_anywhere(local_stack: Any, tmp_path: Path, unique_study: str) -> None:
    password = "pw-" + secrets.token_hex(12)
    s3_secret = "s3-" + secrets.token_hex(16)
    mlflow_password = "mp-" + secrets.token_hex(12)
    uri = local_stack.tracking_uri.replace("http://", f"http://lgeomuser:{password}@")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "RAY_ADDRESS"))}
    env.update(
        {
            "MLFLOW_TRACKING_URI": uri,
            "AWS_ACCESS_KEY_ID": "lgeom-test-key",
            "AWS_SECRET_ACCESS_KEY": s3_secret,
            "MLFLOW_TRACKING_USERNAME": "lgeomuser",
            "MLFLOW_TRACKING_PASSWORD": mlflow_password,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    before = _ray_sessions()
    started = time.time()
    proc = subprocess.run(
        LGEOM
        + [
            "study",
            "--preset",
            "quick-tiny",
            "--no-progress",
            f"name={unique_study}",
            'study.matrix={"model.width": [16]}',
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=420,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:] + proc.stderr[-3000:]).decode(errors="replace")

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=local_stack.tracking_uri)
    exp = client.get_experiment_by_name(unique_study)
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags.get("lgeom.stage") for r in runs) == ["study", "trial"] and all(
        r.info.status == "FINISHED" for r in runs
    )

    needles = {
        "URI password": password.encode(),
        "AWS_SECRET_ACCESS_KEY": s3_secret.encode(),
        "MLFLOW_TRACKING_PASSWORD": mlflow_password.encode(),
    }
    (tmp_path / "captured-stdout.txt").write_bytes(proc.stdout)
    (tmp_path / "captured-stderr.txt").write_bytes(proc.stderr)
    sessions = [s for s in _ray_sessions() - before if s.stat().st_mtime >= started - 5]
    assert sessions, "the study's Ray session folder was not found"
    roots = [tmp_path, Path(local_stack.state_dir), *sessions]
    leaks = _files_holding(roots, needles)
    assert not leaks, "\n".join(leaks)
    # Params, tags and artifacts as the server returns them.
    for run in runs:
        text = repr(run.data.params) + repr(run.data.tags)
        assert not [n for n, v in needles.items() if v.decode() in text], run.info.run_id
    # The masked URI is what the user sees.
    assert b"http://***@127.0.0.1:" in proc.stdout and b"lgeomuser:" not in proc.stdout + proc.stderr


def test_local_trials_inherit_credentials_that_no_runtime_env_carries(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Direct S3 access from trials needs AWS_* in the workers: the local Ray's workers inherit them from the
    # driver's environment, while Ray's runtime environment (logged in plain text) never holds them.
    from ray import tune

    from pipelines.ray_runtime import (
        hidden_credentials,
        ray_session,
        worker_runtime_env,
    )

    def report_env(config: dict[str, Any]) -> None:  # nested: Ray pickles it by value
        import os as worker_os

        from ray import tune as worker_tune

        worker_tune.report({"seen": worker_os.environ.get(config["name"], "")})

    secret = "aws-" + secrets.token_hex(12)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "mp-" + secrets.token_hex(8))
    assert worker_runtime_env()["env_vars"] and not {"AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD"} & set(
        worker_runtime_env()["env_vars"]
    )
    with ray_session(None, num_cpus=1):
        tuner = tune.Tuner(
            report_env,
            param_space={"name": "AWS_SECRET_ACCESS_KEY"},
            run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0),
        )
        with hidden_credentials() as hidden:
            assert "AWS_SECRET_ACCESS_KEY" in hidden and "AWS_SECRET_ACCESS_KEY" not in os.environ
            grid = tuner.fit()
        assert os.environ["AWS_SECRET_ACCESS_KEY"] == secret
    assert grid[0].metrics["seen"] == secret
