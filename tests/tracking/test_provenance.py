"""Provenance (:mod:`tracking.provenance`): git tags of a working tree, dataset inputs and experiment notes on
a real embedded store.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from lgeom import names
from tracking.provenance import git_tags, log_dataset, set_experiment_note
from tracking.runs import ensure_experiment, tracked_run


def _git(cwd: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args]
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_tags_name_the_commit_and_whether_the_tree_is_dirty(tmp_path: Path) -> None:
    assert git_tags(tmp_path) == {}, "not a repository: no tags"
    for name, dirty in (("clean", False), ("dirty", True)):
        repo = tmp_path / name
        repo.mkdir()
        _git(repo, "init", "-q")
        (repo / "f.txt").write_text("a\n")
        _git(repo, "add", "f.txt")
        _git(repo, "commit", "-q", "-m", "one")
        if dirty:
            (repo / "f.txt").write_text("b\n")
        tags = git_tags(repo)
        assert tags[names.TAG_GIT_COMMIT] == _git(repo, "rev-parse", "HEAD").strip()
        assert tags[names.TAG_GIT_DIRTY] == ("true" if dirty else "false")


def test_dataset_input_and_experiment_note(embedded_store: Any, unique_study: str) -> None:
    exp_id = ensure_experiment(embedded_store, unique_study)
    set_experiment_note(embedded_store, exp_id, "what this experiment is")
    client = embedded_store.client()
    assert client.get_experiment(exp_id).tags[names.TAG_NOTE] == "what this experiment is"
    with tracked_run(embedded_store, experiment_id=exp_id) as run:
        log_dataset(run, name="moons", digest="0123abcd", source={"name": "moons"}, profile={"train": 400})
    inputs = client.get_run(run.run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("moons", "0123abcd")]
    assert {(t.key, t.value) for t in inputs[0].tags} == {("mlflow.data.context", "training")}


def test_trials_logging_one_dataset_at_once_all_get_it(embedded_store: Any, unique_study: str) -> None:
    """Concurrent trials of one study log the same dataset: MLflow's look-up-then-insert races (a unique-key
    violation for all but one, seen in CI with two Ray trials); every run must still get its dataset input.
    """
    exp_id = ensure_experiment(embedded_store, unique_study)
    client = embedded_store.client()
    failures: list[BaseException] = []
    run_ids: list[str] = []

    def trial(barrier: threading.Barrier, digest: str) -> None:
        with tracked_run(embedded_store, experiment_id=exp_id) as run:
            run_ids.append(run.run_id)
            barrier.wait()
            try:
                log_dataset(run, name="moons", digest=digest, source={"name": "moons"}, profile={"train": 4})
            except BaseException as err:  # noqa: BLE001 - collected and asserted below
                failures.append(err)

    for k in range(4):
        barrier = threading.Barrier(6)
        threads = [threading.Thread(target=trial, args=(barrier, f"digest{k}")) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not failures, failures[0]
    for run_id in run_ids:
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert [i.dataset.name for i in inputs] == ["moons"]
