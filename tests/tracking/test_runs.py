"""``tracking.runs``: experiments per study, the run life cycle (FINISHED only after verified uploads,
FAILED with the error recorded), reuse by config hash, closing runs of dead processes. MLflow is the real
embedded store (sqlite in a temp folder), never a mock.
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
from tracking.log import UploadVerificationError
from tracking.processes import process_start_ticks
from tracking.runs import (
    attach_run,
    end_run,
    ensure_experiment,
    find_finished_run,
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
