"""What a study checks before it starts anything, and two studies of the same name at once.

* An unwritable ``output_dir`` or ``--report-dir`` and a per-trial CPU request larger than the machine are
  refused in seconds with exit status 2 and a clear message, before Ray starts and before any MLflow run
  exists (they used to surface after Ray started, or after the whole study trained).
* A second ``lgeom study`` of the same study refuses at once, naming the running one (pid, host, start
  time); every cell ends FINISHED exactly once. A lock left by a killed study is taken over.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipelines.cli import main as cli_main

LGEOM = [sys.executable, "-m", "pipelines.cli"]
ONE_CELL = 'study.matrix={"model.width": [16]}'


def _runs(cwd: Path, study: str = "quick-tiny") -> list[Any]:
    from mlflow import MlflowClient

    if not (cwd / "mlflow.db").exists():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name(study)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def _study_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str, float]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    t0 = time.monotonic()
    rc = cli_main(["study", "--preset", "quick-tiny", "--no-progress", ONE_CELL, *args])
    out = capsys.readouterr()
    return rc, out.out, out.err, time.monotonic() - t0


@pytest.mark.parametrize("case", ["output_dir", "report_dir"])
def test_unwritable_folders_are_refused_before_anything_starts(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A path through a regular file cannot be created by anyone, root included.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad = blocker / "sub"
    args = [f"output_dir={bad}"] if case == "output_dir" else ["--report-dir", str(bad)]
    rc, out, err, took = _study_in_process(tmp_path, monkeypatch, capsys, *args)
    assert rc == 2, out[-2000:] + err[-2000:]
    what = "output_dir" if case == "output_dir" else "--report-dir"
    assert (
        f"lgeom study: error: {what}: expected a writable folder, got {bad}" in err and "is a file, not a folder" in err
    ), err
    assert "Traceback" not in err and "Ray:" not in out, "Ray must not start"
    assert _runs(tmp_path) == [], "no MLflow run may be created"
    assert took < 60


def test_more_cpus_than_the_machine_are_refused_before_ray_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err, took = _study_in_process(tmp_path, monkeypatch, capsys, "--cpu", "99")
    assert rc == 2
    assert f"study.cpu: expected at most {os.cpu_count()} CPUs per trial" in err and "got 99" in err, err
    assert "Traceback" not in err and "Ray:" not in out, "Ray must not start"
    assert _runs(tmp_path) == []
    assert took < 60


def test_a_lock_of_a_dead_study_is_taken_over_and_a_live_one_refuses(tmp_path: Path) -> None:
    from pipelines.guards import LOCK_NAME, StudyLock, StudyLockedError

    folder = tmp_path / "outputs" / "s"
    folder.mkdir(parents=True)
    # A record left by a process that is gone (the flock itself died with it).
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "h", "started_at": 0.0, "study": "s"}))
    with StudyLock(folder, "s") as lock:
        assert lock.previous and lock.previous["pid"] == 999999
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    # A live holder in another process: refused at once, naming it.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
            "from pipelines.guards import StudyLock\n"
            f"l = StudyLock({str(folder)!r}, 's').acquire(); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(
            StudyLockedError,
            match=rf"expected no other study running in {folder}, got one \(pid {holder.pid} on host .*, started 20",
        ):
            StudyLock(folder, "s").acquire()
        assert time.monotonic() - t0 < 5
    finally:
        holder.kill()
        holder.wait()
    with StudyLock(folder, "s") as lock:  # the holder was killed: its lock is free again
        assert lock.previous and lock.previous["pid"] == holder.pid


def test_a_running_study_in_the_same_store_refuses_another(embedded_store: Any, unique_study: str) -> None:
    # The same study name against the same store from another output folder: its RUNNING parent run in a
    # live process on this host is found and named.
    from pipelines.guards import StudyLockedError, check_no_running_study
    from tracking.runs import ensure_experiment

    root = str(Path(__file__).resolve().parents[2])
    script = (
        f"import sys, time; sys.path.insert(0, {root!r})\n"
        "from tracking.store import resolve_store\n"
        "from tracking.runs import start_run, run_tags\n"
        f"p = start_run(resolve_store(), experiment={unique_study!r}, "
        f"tags=run_tags(study={unique_study!r}, stage='study'))\n"
        "print(p.run_id, flush=True); time.sleep(120)\n"
    )
    from tracking.runs import run_tags, start_run

    exp = ensure_experiment(embedded_store, unique_study)
    ours = start_run(embedded_store, experiment_id=exp, tags=run_tags(study=unique_study, stage="study"))
    time.sleep(0.01)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        with pytest.raises(StudyLockedError, match=rf"pid {proc.pid} on host .*parent run {run_id}"):
            check_no_running_study(embedded_store, exp, unique_study)
        # Two studies that passed the first check together: the one that started later refuses, not ours.
        check_no_running_study(embedded_store, exp, unique_study, own_run=embedded_store.client().get_run(ours.run_id))
    finally:
        proc.kill()
        proc.wait()
    check_no_running_study(embedded_store, exp, unique_study)  # its process is gone: no refusal


@pytest.mark.integration
@pytest.mark.slow
def test_two_studies_at_once_one_refuses_and_each_cell_finishes_once(tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    args = LGEOM + ["study", "--preset", "quick-tiny", "--no-progress", ONE_CELL]
    procs = [
        subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=400) for p in procs]
    codes = sorted(p.returncode for p in procs)
    detail = "\n".join(f"rc={p.returncode}\n{o[-1500:]}\n{e[-1500:]}" for p, (o, e) in zip(procs, outs))
    assert codes == [0, 1], detail
    refused = next(e for p, (_, e) in zip(procs, outs) if p.returncode == 1)
    winner = next(p for p in procs if p.returncode == 0)
    assert "lgeom study: refused: study quick-tiny: expected no other study running in" in refused, detail
    assert f"pid {winner.pid} on host" in refused and "Traceback" not in refused, detail
    runs = _runs(tmp_path)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    trials = [r for r in runs if r.data.tags.get("lgeom.stage") == "trial"]
    assert [r.info.status for r in trials] == ["FINISHED"], [
        (r.data.tags.get("lgeom.cell"), r.info.status) for r in trials
    ]
    assert len([r for r in runs if r.data.tags.get("lgeom.stage") == "study"]) == 1, (
        "the refused study must not create a run"
    )


@pytest.mark.parametrize("step", ["train", "connect", "probe"])
def test_steps_refuse_an_unwritable_output_dir_up_front(
    step: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc = cli_main([step, "--preset", "quick-tiny", "--no-progress", "--no-tracking", f"output_dir={blocker / 'out'}"])
    err = capsys.readouterr().err
    assert (
        rc == 2 and f"output_dir: expected a writable folder, got {blocker / 'out'}" in err and "Traceback" not in err
    ), err


def test_local_resource_limits() -> None:
    from pipelines.guards import check_local_resources

    check_local_resources(2, 0, cpus=2, gpus=0)
    check_local_resources(1, 1, cpus=2, gpus=0)  # no GPU at all: trials run on CPUs (a notice, not an error)
    check_local_resources(1, 0.5, cpus=2, gpus=1)
    with pytest.raises(ValueError, match="study.cpu: expected at most 2 CPUs per trial .*got 2.5"):
        check_local_resources(2.5, 0, cpus=2, gpus=0)
    with pytest.raises(ValueError, match="study.gpu: expected at most 1 GPUs per trial .*got 2"):
        check_local_resources(1, 2, cpus=2, gpus=1)
