"""Under ``mlflow run`` (``$MLFLOW_RUN_ID``) the entry point's own run is the step's run: adopted when it is in
the step's experiment, linked to the step's run when it is not (real embedded store).
"""

from __future__ import annotations

from typing import Any

import pytest

from lgeom import names
from tracking import runs as runs_module
from tracking.runs import ensure_experiment, tracked_run


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
