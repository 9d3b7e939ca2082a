"""Orphaned runs on a cluster: trials that ran on other hosts are closed once their parent run is no longer
RUNNING, whatever host they ran on; children of a live parent are left alone. Real MLflow (embedded sqlite).
"""

from __future__ import annotations

from typing import Any

import pytest

from tracking.runs import end_run, mark_orphaned_runs, run_tags, start_run

pytestmark = pytest.mark.integration

# A worker node of a cluster: its process cannot be checked from here.
FOREIGN = {"lgeom.host": "gpu-worker-7.cluster.invalid", "lgeom.pid": "4242", "lgeom.proc_start": "0"}


def _trial(store: Any, parent: Any, study: str, cell: str) -> Any:
    return start_run(
        store,
        experiment_id=parent.experiment_id,
        parent_run_id=parent.run_id,
        run_name=cell,
        tags={**run_tags(study=study, stage="trial", cell=cell), **FOREIGN},
    )


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


def test_a_dead_local_parent_and_its_remote_children_are_closed_in_one_sweep(
    embedded_store: Any, unique_study: str
) -> None:
    # The driver ran here and was killed (kill -9): its pid is gone; its trials ran on another host.
    client = embedded_store.client()
    dead_pid = {"lgeom.pid": "999999999", "lgeom.proc_start": "1"}
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
