"""``tracking.runs``: experiments per study, the run life cycle (FINISHED only after verified uploads,
FAILED with the error recorded), reuse by config hash, closing runs of dead processes and orphaned trials on
other hosts, flattening params. MLflow is the real embedded store (sqlite in a temp folder), never a mock.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lgeom import names
from tracking import runs as runs_module
from tracking.log import UploadVerificationError
from tracking.processes import process_start_ticks
from tracking.runs import (
    attach_run,
    close_superseded_attempts,
    end_run,
    ensure_experiment,
    find_finished_run,
    flatten_params,
    mark_orphaned_runs,
    quote_search_value,
    run_tags,
    start_run,
    tracked_run,
)


def test_run_tags_hold_the_contract_tags_that_are_given() -> None:
    assert run_tags(study="quick", stage=names.STAGE_STUDY) == {names.TAG_STUDY: "quick", names.TAG_STAGE: "study"}
    assert run_tags(
        study="quick",
        stage="trial",
        cell="mlp/moons/sgd",
        config_hash="abc",
        parent_run_id="p1",
        extra={"lgeom.stages_skipped": 2},
    ) == {
        "lgeom.study": "quick",
        "lgeom.stage": "trial",
        "lgeom.cell": "mlp/moons/sgd",
        "lgeom.config_hash": "abc",
        "mlflow.parentRunId": "p1",
        "lgeom.stages_skipped": "2",
    }


def test_search_values_are_quoted_and_quotes_refused() -> None:
    assert quote_search_value("mlp/moons/sgd") == "'mlp/moons/sgd'"
    with pytest.raises(ValueError, match='search value: expected no single quote, got "it\'s"'):
        quote_search_value("it's")


def test_experiment_per_study_created_reused_and_restored(embedded_store: Any, unique_study: str) -> None:
    first = ensure_experiment(embedded_store, unique_study)
    assert ensure_experiment(embedded_store, unique_study) == first
    client = embedded_store.client()
    client.delete_experiment(first)
    assert ensure_experiment(embedded_store, unique_study) == first
    assert client.get_experiment(first).lifecycle_stage == "active"
    with pytest.raises(ValueError, match="experiment name: expected a non-empty study name, got ' '"):
        ensure_experiment(embedded_store, " ")


def test_a_run_names_exactly_one_experiment(embedded_store: Any) -> None:
    with pytest.raises(
        ValueError, match="run: expected exactly one of experiment .name. or experiment_id, got None and None"
    ):
        start_run(embedded_store)
    with pytest.raises(ValueError, match="got 'x' and '1'"):
        start_run(embedded_store, experiment="x", experiment_id="1")


def test_tracked_run_finishes_with_params_and_the_process_that_ran_it(embedded_store: Any, unique_study: str) -> None:
    with tracked_run(
        embedded_store,
        experiment=unique_study,
        run_name="cell",
        params={"train": {"lr": 0.05}},
        tags=run_tags(study=unique_study, stage="trial"),
    ) as run:
        pass
    got = embedded_store.client().get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "cell" and got.data.params == {"train.lr": "0.05"}
    tags = got.data.tags
    assert tags[names.TAG_HOST] == socket.gethostname() and tags[names.TAG_PID] == str(os.getpid())
    assert tags[names.TAG_PROC_START] == str(process_start_ticks(os.getpid()) or 0)


@pytest.mark.parametrize("error", [RuntimeError("NaN loss at epoch 3"), KeyboardInterrupt()])
def test_an_error_ends_the_run_failed_with_the_error_recorded(
    embedded_store: Any, unique_study: str, error: BaseException
) -> None:
    with pytest.raises(type(error)):
        with tracked_run(embedded_store, experiment=unique_study) as run:
            raise error
    got = embedded_store.client().get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags[names.TAG_ERROR] == f"{type(error).__name__}: {error}"
    assert got.data.tags[names.TAG_NOTE].startswith("**FAILED**")


def test_finished_only_after_uploads_are_confirmed(embedded_store: Any, unique_study: str, tmp_path: Path) -> None:
    local = tmp_path / "curve.txt"
    local.write_text("control points\n")
    run = start_run(embedded_store, experiment=unique_study)
    run.log_artifact(local, names.CURVES_DIR)
    next(p for p in (tmp_path / "mlruns").rglob("curve.txt")).unlink()
    with pytest.raises(UploadVerificationError, match="artifact curves/curve.txt missing"):
        end_run(run, "FINISHED")
    got = embedded_store.client().get_run(run.run_id)
    assert got.info.status == "FAILED" and "UploadVerificationError" in got.data.tags[names.TAG_ERROR]
    with pytest.raises(ValueError, match="run status: expected one of FINISHED, FAILED, KILLED, got 'DONE'"):
        end_run(run, "DONE")


def test_the_newest_finished_run_of_a_hash_stage_and_cell_is_found(embedded_store: Any, unique_study: str) -> None:
    def run(stage: str, cell: str, status: str) -> str:
        r = start_run(
            embedded_store,
            experiment=unique_study,
            tags=run_tags(study=unique_study, stage=stage, cell=cell, config_hash="h1"),
        )
        end_run(r, status, verify=False)
        return r.run_id

    exp_id = ensure_experiment(embedded_store, unique_study)
    assert find_finished_run(embedded_store, exp_id, "h1") is None
    old_trial = run("trial", "mlp/moons/sgd", "FINISHED")
    connect = run("connect", "mlp/moons/sgd", "FINISHED")
    run("trial", "mlp/moons/sgd", "FAILED")
    other_cell = run("trial", "mlp/moons/adam", "FINISHED")
    assert find_finished_run(embedded_store, exp_id, "h1", stage="trial", cell="mlp/moons/sgd").info.run_id == old_trial
    assert find_finished_run(embedded_store, exp_id, "h1", stage="connect").info.run_id == connect
    assert find_finished_run(embedded_store, exp_id, "h1").info.run_id == other_cell, "newest first"
    assert find_finished_run(embedded_store, exp_id, "h2") is None


def test_runs_of_a_dead_local_process_are_closed_live_ones_kept(embedded_store: Any, unique_study: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid now names no process (or another one, told apart by its start time)
    dead = start_run(embedded_store, experiment=unique_study)
    client = embedded_store.client()
    client.set_tag(dead.run_id, names.TAG_PID, str(child.pid))
    client.set_tag(dead.run_id, names.TAG_PROC_START, "1")
    alive = start_run(embedded_store, experiment_id=dead.experiment_id)

    assert mark_orphaned_runs(embedded_store, dead.experiment_id) == [dead.run_id]

    got = client.get_run(dead.run_id)
    assert got.info.status == "FAILED"
    assert (
        got.data.tags[names.TAG_ERROR]
        == f"orphaned: process {child.pid} on {socket.gethostname()} that ran it no longer exists"
    )
    assert client.get_run(alive.run_id).info.status == "RUNNING"
    with pytest.raises(ValueError, match="orphan status: expected FAILED or KILLED, got 'FINISHED'"):
        mark_orphaned_runs(embedded_store, dead.experiment_id, status="FINISHED")
    end_run(alive, "FINISHED")


def test_attached_run_keeps_its_status(embedded_store: Any, unique_study: str, tmp_path: Path) -> None:
    with tracked_run(embedded_store, experiment=unique_study) as run:
        pass
    again = attach_run(embedded_store, run.run_id)
    assert (again.run_id, again.experiment_id) == (run.run_id, run.experiment_id)
    figure = tmp_path / "loss.png"
    figure.write_bytes(b"\x89PNG fake")
    again.log_artifact(figure, names.FIGURES_DIR)
    again.verify()
    assert embedded_store.client().get_run(run.run_id).info.status == "FINISHED"


def test_flatten_params_dots_nested_keys_and_truncates_long_values() -> None:
    flat = flatten_params({"train": {"lr": 0.05, "seeds": (0, 1)}, "model": {"depth": None}, "long": "x" * 7000})
    assert flat["train.lr"] == "0.05" and flat["train.seeds"] == "[0,1]" and flat["model.depth"] == "None"
    assert len(flat["long"]) <= 6000 and flat["long"].endswith("[truncated]")


# A worker node of a cluster: its process cannot be checked from here.
FOREIGN = {"lgeom.sys.host": "gpu-worker-7.cluster.invalid", "lgeom.sys.pid": "4242", "lgeom.sys.proc_start": "0"}


def _trial(store: Any, parent: Any, study: str, cell: str) -> Any:
    return start_run(
        store,
        experiment_id=parent.experiment_id,
        parent_run_id=parent.run_id,
        run_name=cell,
        tags={**run_tags(study=study, stage="trial", cell=cell), **FOREIGN},
    )


@pytest.mark.integration
def test_children_of_ended_parents_are_closed_whatever_their_host(embedded_store: Any, unique_study: str) -> None:
    client = embedded_store.client()
    # The study invocation was killed: its parent run was already marked KILLED, its trials on worker nodes
    # still say RUNNING.
    killed = start_run(
        embedded_store, experiment=unique_study, tags={**run_tags(study=unique_study, stage="study"), **FOREIGN}
    )
    stranded = _trial(embedded_store, killed, unique_study, "mlp2x16/moons/sgd")
    end_run(killed, "KILLED")
    # A parent that FINISHED while one of its children never reported back.
    done = start_run(
        embedded_store, experiment_id=killed.experiment_id, tags=run_tags(study=unique_study, stage="study")
    )
    late = _trial(embedded_store, done, unique_study, "mlp2x16/moons/adam")
    done.client.set_terminated(done.run_id, "FINISHED")
    # A study running now (this process is alive) with a trial on a worker node: not an orphan.
    live = start_run(
        embedded_store, experiment_id=killed.experiment_id, tags=run_tags(study=unique_study, stage="study")
    )
    busy = _trial(embedded_store, live, unique_study, "mlp2x64/moons/sgd")

    closed = mark_orphaned_runs(embedded_store, killed.experiment_id, status="KILLED")

    assert sorted(closed) == sorted([stranded.run_id, late.run_id])
    for run_id, parent_id, parent_state in (
        (stranded.run_id, killed.run_id, "KILLED"),
        (late.run_id, done.run_id, "FINISHED"),
    ):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert (
            run.data.tags["lgeom.error"]
            == f"orphaned: its parent run {parent_id} is no longer RUNNING ({parent_state})"
        )
        assert "orphaned" in run.data.tags["mlflow.note.content"]
    assert client.get_run(busy.run_id).info.status == "RUNNING"
    assert client.get_run(live.run_id).info.status == "RUNNING"
    assert mark_orphaned_runs(embedded_store, killed.experiment_id) == [], "a second sweep finds nothing"
    end_run(busy, "FINISHED", verify=False)
    end_run(live, "FINISHED", verify=False)


@pytest.mark.integration
def test_a_dead_local_parent_and_its_remote_children_are_closed_in_one_sweep(
    embedded_store: Any, unique_study: str
) -> None:
    # The driver ran here and was killed (kill -9): its pid is gone; its trials ran on another host.
    client = embedded_store.client()
    dead_pid = {"lgeom.sys.pid": "999999999", "lgeom.sys.proc_start": "1"}
    parent = start_run(
        embedded_store, experiment=unique_study, tags={**run_tags(study=unique_study, stage="study"), **dead_pid}
    )
    child = _trial(embedded_store, parent, unique_study, "mlp2x16/moons/sgd")
    grandchild = start_run(embedded_store, experiment_id=parent.experiment_id, parent_run_id=child.run_id, tags=FOREIGN)

    closed = mark_orphaned_runs(embedded_store, parent.experiment_id, status="FAILED")

    assert closed[0] == parent.run_id and sorted(closed) == sorted([parent.run_id, child.run_id, grandchild.run_id])
    assert "no longer exists" in client.get_run(parent.run_id).data.tags["lgeom.error"]
    child_run = client.get_run(child.run_id)
    assert child_run.info.status == "FAILED"
    assert (
        child_run.data.tags["lgeom.error"]
        == f"orphaned: its parent run {parent.run_id} is no longer RUNNING (closed as an orphan)"
    )
    assert client.get_run(grandchild.run_id).info.status == "FAILED"


_ROOT = Path(__file__).resolve().parents[2]


def test_no_node_ip_outside_ray_and_ray_is_not_imported_for_it() -> None:
    """Tag ``lgeom.sys.node_ip`` is only recorded inside Ray (tests/scenarios/test_multihost.py checks its
    values on a real two-node cluster).
    """
    code = (
        "import sys\n"
        "from tracking.runs import ray_node_ip\n"
        "assert ray_node_ip() is None\n"
        "assert 'ray' not in sys.modules, 'looking for the node IP must not import ray'\n"
        "import ray\n"
        "assert not ray.is_initialized() and ray_node_ip() is None\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def _project_run(store: Any, experiment: str) -> str:
    client = store.client()
    return client.create_run(ensure_experiment(store, experiment)).info.run_id


def test_the_project_run_is_the_steps_run(
    embedded_store: Any, unique_study: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_module, "_adopted", set())
    project = _project_run(embedded_store, unique_study)
    monkeypatch.setenv("MLFLOW_RUN_ID", project)
    with tracked_run(
        embedded_store,
        experiment=unique_study,
        run_name="study now",
        tags={names.TAG_STAGE: names.STAGE_STUDY},
        params={"preset": "quick"},
        adopt_project_run=True,
    ) as run:
        assert run.run_id == project
        with tracked_run(
            embedded_store, experiment_id=run.experiment_id, run_name="cell", adopt_project_run=True
        ) as child:
            assert child.run_id != project  # adopted once per process
    got = embedded_store.client().get_run(project)
    assert got.info.status == "FINISHED" and got.info.run_name == "study now"
    assert got.data.params == {"preset": "quick"} and got.data.tags[names.TAG_STAGE] == names.STAGE_STUDY
    runs = embedded_store.client().search_runs([run.experiment_id])
    assert len(runs) == 2  # no stray run


def test_a_project_run_of_another_experiment_links_to_the_steps_run(
    embedded_store: Any, unique_study: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_module, "_adopted", set())
    project = _project_run(embedded_store, f"{unique_study}-elsewhere")
    monkeypatch.setenv("MLFLOW_RUN_ID", project)
    with tracked_run(embedded_store, experiment=unique_study, run_name="study now", adopt_project_run=True) as run:
        assert run.run_id != project
    tags = embedded_store.client().get_run(project).data.tags
    assert tags[names.TAG_LINKED_RUN] == run.run_id and unique_study in tags[names.TAG_NOTE]


def test_a_retried_cell_closes_its_lost_attempt_and_nothing_else(embedded_store: Any, unique_study: str) -> None:
    exp_id = ensure_experiment(embedded_store, unique_study)
    parent = start_run(embedded_store, experiment_id=exp_id, tags=run_tags(study=unique_study, stage="study"))
    other_parent = start_run(embedded_store, experiment_id=exp_id, tags=run_tags(study=unique_study, stage="study"))

    def child(cell: str, parent_id: str) -> str:
        tags = run_tags(study=unique_study, stage="trial", cell=cell)
        return start_run(embedded_store, experiment_id=exp_id, parent_run_id=parent_id, tags=tags).run_id

    lost = child("mlp/moons/sgd", parent.run_id)  # its worker died: never ended
    other_cell = child("mlp/moons/adam", parent.run_id)
    other_study = child("mlp/moons/sgd", other_parent.run_id)
    retry = child("mlp/moons/sgd", parent.run_id)
    closed = close_superseded_attempts(
        embedded_store, exp_id, parent_run_id=parent.run_id, cell="mlp/moons/sgd", current_run_id=retry
    )
    assert closed == [lost]
    client = embedded_store.client()
    lost_run = client.get_run(lost)
    assert lost_run.info.status == "FAILED"
    assert lost_run.data.tags[names.TAG_ERROR] == f"lost attempt: superseded by the retry in run {retry}"
    for rid in (retry, other_cell, other_study, parent.run_id):
        assert client.get_run(rid).info.status == "RUNNING", rid
