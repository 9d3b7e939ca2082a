"""Outages: S3 stopped while logging, S3 back within the retry window, an artifact lost after upload,
an unreachable server, and orphaned runs of a killed invocation. A run is never FINISHED with missing
artifacts and never left half-made.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tracking.local_stack import free_ports, start_s3, stop_s3
from tracking.log import UploadVerificationError
from tracking.runs import mark_orphaned_runs, run_tags, start_run, tracked_run
from tracking.store import (
    RetryPolicy,
    StoreUnavailableError,
    check_health,
    resolve_store,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_restored(local_stack: Any) -> Any:
    """Whatever a test does to SeaweedFS, it runs again afterwards for the rest of the session."""
    yield local_stack
    from tracking.processes import process_alive

    if not process_alive(local_stack.pids["seaweedfs"], local_stack.proc_starts.get("seaweedfs") or None):
        start_s3(local_stack)


def _files(tmp_path: Path, n: int = 3) -> list[Path]:
    out = []
    for i in range(n):
        p = tmp_path / f"part{i}.json"
        p.write_text(f'{{"i": {i:d}}}')
        out.append(p)
    return out


def test_s3_down_during_logging_ends_failed(
    server_store: Any, s3_restored: Any, unique_study: str, tmp_path: Path
) -> None:
    files = _files(tmp_path)
    quick = RetryPolicy(attempts=2, initial_delay=0.5, deadline=10)
    with pytest.raises(Exception) as info:
        with tracked_run(server_store, experiment=unique_study, retry=quick) as run:
            run.log_artifact(files[0], "results")
            stop_s3(s3_restored)
            for f in files[1:]:
                run.log_artifact(f, "results")
    got = server_store.client().get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert "lgeom.error" in got.data.tags and got.data.tags["lgeom.error"].startswith(type(info.value).__name__)
    assert "FAILED" in got.data.tags["mlflow.note.content"]


def test_s3_back_within_retry_window_finishes(
    server_store: Any, s3_restored: Any, unique_study: str, tmp_path: Path
) -> None:
    files = _files(tmp_path)
    patient = RetryPolicy(attempts=8, initial_delay=1.0, max_delay=4.0, deadline=60)
    with tracked_run(server_store, experiment=unique_study, retry=patient) as run:
        stop_s3(s3_restored)
        restarter = threading.Timer(2.0, start_s3, args=(s3_restored,))
        restarter.start()
        try:
            for f in files:
                run.log_artifact(f, "results")
        finally:
            restarter.join()
    client = server_store.client()
    assert client.get_run(run.run_id).info.status == "FINISHED"
    listed = {i.path: i.file_size for i in client.list_artifacts(run.run_id, "results")}
    assert listed == {f"results/{f.name}": f.stat().st_size for f in files}
    s3 = s3_restored.s3_client()
    keys = {
        o["Key"]
        for o in s3.list_objects_v2(Bucket=s3_restored.bucket, Prefix=f"artifacts/{run.experiment_id}/{run.run_id}/")[
            "Contents"
        ]
    }
    assert len(keys) == len(files)


def test_artifact_lost_after_upload_is_never_finished(
    server_store: Any, local_stack: Any, unique_study: str, tmp_path: Path
) -> None:
    files = _files(tmp_path)
    with pytest.raises(UploadVerificationError, match="results/part1.json missing"):
        with tracked_run(server_store, experiment=unique_study) as run:
            for f in files:
                run.log_artifact(f, "results")
            key = f"artifacts/{run.experiment_id}/{run.run_id}/artifacts/results/part1.json"
            local_stack.s3_client().delete_object(Bucket=local_stack.bucket, Key=key)
    got = server_store.client().get_run(run.run_id)
    assert got.info.status == "FAILED" and "UploadVerificationError" in got.data.tags["lgeom.error"]


def test_unreachable_server_fails_fast_and_creates_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_ports(1)[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    store = resolve_store()
    start = time.monotonic()
    with pytest.raises(
        StoreUnavailableError, match=rf"MLflow server: no answer from http://127.0.0.1:{port}/health .*lgeom up"
    ):
        with tracked_run(store, experiment="never-created"):
            pytest.fail("the body must not run")
    assert time.monotonic() - start < 30


def test_unreachable_s3_in_direct_mode_fails_before_any_run(
    embedded_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_ports(1)[0]
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    client = embedded_store.client()
    exp = client.create_experiment("direct-s3", artifact_location="s3://missing-bucket/artifacts")
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=rf"S3 http://127.0.0.1:{port}: expected bucket 'missing-bucket'"):
        start_run(embedded_store, experiment_id=exp, health_timeout=5)
    assert time.monotonic() - start < 15
    assert client.search_runs([exp]) == []
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(StoreUnavailableError, match="expected AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        check_health(embedded_store, artifact_uri="s3://missing-bucket/artifacts", timeout=5)


def test_orphaned_runs_of_a_killed_invocation(server_store: Any, unique_study: str) -> None:
    # A child process starts a study run and a trial run, then dies without ending them.
    root = str(Path(__file__).resolve().parents[2])
    script = (
        f"import os, sys; sys.path.insert(0, {root!r})\n"
        "from tracking.store import resolve_store\n"
        "from tracking.runs import start_run, run_tags\n"
        "s = resolve_store()\n"
        f"p = start_run(s, experiment={unique_study!r}, tags=run_tags(study={unique_study!r}, stage='study'))\n"
        "c = start_run(s, experiment_id=p.experiment_id, parent_run_id=p.run_id, "
        f"tags=run_tags(study={unique_study!r}, stage='trial', cell='x'))\n"
        "print(p.run_id, c.run_id, flush=True)\n"
        "os._exit(9)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    parent_id, child_id = out.stdout.split()
    alive = start_run(server_store, experiment=unique_study, tags=run_tags(study=unique_study, stage="study"))
    client = server_store.client()
    assert client.get_run(child_id).info.status == "RUNNING"
    closed = mark_orphaned_runs(server_store, alive.experiment_id, status="KILLED")
    assert sorted(closed) == sorted([parent_id, child_id])
    assert (
        client.get_run(child_id).info.status == "KILLED"
        and "no longer exists" in client.get_run(child_id).data.tags["lgeom.error"]
    )
    assert client.get_run(alive.run_id).info.status == "RUNNING"  # our own process is alive
    assert mark_orphaned_runs(server_store, alive.experiment_id, parent_run_id=alive.run_id) == [alive.run_id]
    assert client.get_run(alive.run_id).info.status == "FAILED"


def test_interrupt_ends_the_run_failed_with_the_error(server_store: Any, unique_study: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        with tracked_run(server_store, experiment=unique_study) as run:
            run.log_metrics({"endpoint/a/test_acc": 50.0})
            raise KeyboardInterrupt
    got = server_store.client().get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.tags["lgeom.error"].startswith("KeyboardInterrupt")


# --- a study through a stack restart ------------------------------------------------------------------


def _lgeom(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_taken_recorded_port_is_a_clear_error(tmp_path: Path) -> None:
    import json
    import socket

    from tracking.local_stack import PORTS_FILE, StackError, start_stack

    state = tmp_path / ".lgeom"
    state.mkdir()
    ports = dict(
        zip(
            [
                "weed.master.port",
                "weed.master.port.grpc",
                "weed.volume.port",
                "weed.volume.port.grpc",
                "weed.filer.port",
                "weed.filer.port.grpc",
                "weed.s3.port",
                "weed.s3.port.grpc",
                "weed.admin.port",
                "weed.admin.port.grpc",
                "mlflow",
            ],
            free_ports(11),
        )
    )
    (state / PORTS_FILE).write_text(json.dumps({"ports": ports}))
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", ports["mlflow"]))
    squatter.listen()
    try:
        with pytest.raises(
            StackError,
            match=rf"expected its recorded ports to be free .*got {ports['mlflow']} \(mlflow\) taken .*--new-ports",
        ):
            start_stack(state, startup_timeout=5)
    finally:
        squatter.close()
    assert not (state / "stack.json").exists()


@pytest.mark.slow
def test_a_study_rides_out_an_s3_kill_and_a_stack_restart(tmp_path: Path) -> None:
    """SeaweedFS is killed (by pid) while a study's cell computes; the trial waits for the store, saying so,
    while the stack is restarted with 'lgeom down; lgeom up', which comes back on the same ports and data.
    The study (or, had it given up, its rerun) ends with the cell FINISHED exactly once, its artifacts
    present, and no run left RUNNING.
    """
    import json
    import os
    import signal

    from mlflow import MlflowClient

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_ADDRESS"))}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"})
    state = tmp_path / ".lgeom"
    up = _lgeom(["up", "--state-dir", str(state)], tmp_path, env)
    assert up.returncode == 0, up.stderr
    first = json.loads((state / "stack.json").read_text())
    study_env = {**env, "MLFLOW_TRACKING_URI": first["tracking_uri"]}
    args = ["study", "--preset", "quick-tiny", "--no-progress", 'study.matrix={"model.width": [16]}']
    log_path = tmp_path / "study.log"
    try:
        with open(log_path, "w") as log:
            study = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", *args],
                cwd=tmp_path,
                env=study_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not list((tmp_path / "outputs").rglob("stages.json")):
                assert study.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.3)
            os.kill(first["pids"]["seaweedfs"], signal.SIGKILL)  # mid-study: the cell has trained, not logged
            while time.monotonic() < deadline and "retrying in" not in log_path.read_text():
                assert study.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.5)
            assert "retrying in" in log_path.read_text(), "the study must say it is waiting for the store"
            down = _lgeom(["down", "--state-dir", str(state)], tmp_path, env)
            assert down.returncode == 0, down.stderr
            up = _lgeom(["up", "--state-dir", str(state)], tmp_path, env)
            assert up.returncode == 0, up.stderr
            again = json.loads((state / "stack.json").read_text())
            assert again["tracking_uri"] == first["tracking_uri"] and again["ports"] == first["ports"], (
                "a restart keeps its ports"
            )
            study.wait(timeout=400)
        finally:
            if study.poll() is None:
                os.killpg(study.pid, signal.SIGKILL)
        output = log_path.read_text()
        print(f"study exit status after the restart: {study.returncode}")
        if study.returncode != 0:  # gave up waiting: the rerun must finish the job cleanly
            rerun = _lgeom(args, tmp_path, study_env, timeout=400)
            assert rerun.returncode == 0, output[-3000:] + rerun.stdout[-2000:] + rerun.stderr[-2000:]
            output += rerun.stdout + rerun.stderr
        assert "Traceback" not in output, output[-4000:]
        retry_lines = [line for line in output.splitlines() if "retrying in" in line and "may be restarting" in line]
        assert retry_lines, output[-3000:]
        creds = [
            line.split("=", 1)[1]
            for line in (state / "credentials.env").read_text().splitlines()
            if line.startswith("AWS_")
        ]
        assert not [c for c in creds if c in output], "no credential may be printed"

        client = MlflowClient(tracking_uri=first["tracking_uri"])
        exp = client.get_experiment_by_name("quick-tiny")
        runs = client.search_runs([exp.experiment_id], max_results=100)
        assert not [r for r in runs if r.info.status == "RUNNING"], [
            (r.data.tags.get("lgeom.stage"), r.info.status) for r in runs
        ]
        finished = [r for r in runs if r.data.tags.get("lgeom.stage") == "trial" and r.info.status == "FINISHED"]
        assert [r.data.tags["lgeom.cell"] for r in finished] == ["mlp2x16/moons/sgd"]
        files = {
            f.path
            for d in ("curves", "spectra", "paths", "figures")
            for f in client.list_artifacts(finished[0].info.run_id, d)
        }
        assert {"curves/bezier.pt", "spectra/mid.json", "paths/linear.csv", "figures/paths.png"} <= files, files
        assert {"lgeom.model.a", "lgeom.model.b"} <= set(finished[0].data.tags)
    finally:
        _lgeom(["down", "--state-dir", str(state)], tmp_path, env)


def test_each_retry_is_announced_on_one_line_without_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    from tracking.store import with_retries

    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("Connection refused by http://lgeom:hunter2-secret@127.0.0.1:5999/api\nsecond line")
        return "ok"

    fast = RetryPolicy(attempts=4, initial_delay=0.01, max_delay=0.02)
    assert with_retries(flaky, what="uploading artifact x", policy=fast) == "ok"
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 2 and all(
        line.startswith("lgeom: uploading artifact x failed (ConnectionError: ") for line in lines
    ), err
    assert "retrying in 0 s (attempt 2 of 4)" in lines[0] and "(attempt 3 of 4)" in lines[1]
    assert "hunter2-secret" not in err and "http://***@127.0.0.1:5999" in err and "second line" not in err
