"""``lgeom study --register``: endpoints in the Model Registry named by cell and role, the study as alias
and version tag (real embedded store).
"""

from __future__ import annotations

from typing import Any

import torch

from lgeom import names
from tracking.log import log_model
from tracking.registry import register_endpoints, study_alias
from tracking.runs import tracked_run


def _run_with_endpoints(store: Any, study: str, cell: str, roles: tuple[str, ...] = names.ENDPOINTS) -> Any:
    """A finished run of ``cell`` in ``study`` with a small model logged for each endpoint role."""
    with tracked_run(store, experiment=study, run_name=cell) as run:
        for role in roles:
            log_model(run, role, torch.nn.Linear(4, 3), display_name=names.model_name(cell, role))
    return run


def test_endpoints_are_registered_with_the_study_as_alias(embedded_store: Any, unique_study: str) -> None:
    cell = "mlp2x8/moons/sgd"
    run = _run_with_endpoints(embedded_store, unique_study, cell)
    versions = register_endpoints(embedded_store, run.run_id, study=unique_study, cell=cell)
    assert versions == {"mlp2x8-moons-sgd-a": "1", "mlp2x8-moons-sgd-b": "1"}
    client = embedded_store.client()
    got = client.get_model_version_by_alias("mlp2x8-moons-sgd-a", study_alias(unique_study))
    assert str(got.version) == "1" and got.run_id == run.run_id and got.tags[names.TAG_STUDY] == unique_study
    assert study_alias("v3") == "study_v3" and study_alias("quick.tiny") == "quick_tiny"


def test_registering_the_same_run_again_adds_no_version(embedded_store: Any, unique_study: str) -> None:
    # A cell reused by a later study invocation is registered again: its versions are reused, the later
    # study's alias and tag point at them; another run of the cell gets a new version.
    cell = "mlp2x8/moons/adam"
    run = _run_with_endpoints(embedded_store, unique_study, cell)
    first = register_endpoints(embedded_store, run.run_id, study=unique_study, cell=cell)
    again = register_endpoints(embedded_store, run.run_id, study=unique_study, cell=cell)
    later = register_endpoints(embedded_store, run.run_id, study="later-study", cell=cell)
    assert first == again == later == {"mlp2x8-moons-adam-a": "1", "mlp2x8-moons-adam-b": "1"}
    client = embedded_store.client()
    for name in first:
        versions = client.search_model_versions(f"name = '{name}'")
        assert [str(v.version) for v in versions] == ["1"], name
        assert str(client.get_model_version_by_alias(name, study_alias(unique_study)).version) == "1"
        assert client.get_model_version_by_alias(name, "later-study").tags[names.TAG_STUDY] == "later-study"
    other = _run_with_endpoints(embedded_store, unique_study, cell, roles=("a",))
    assert register_endpoints(embedded_store, other.run_id, study=unique_study, cell=cell) == {
        "mlp2x8-moons-adam-a": "2"
    }
    assert str(client.get_model_version_by_alias("mlp2x8-moons-adam-a", study_alias(unique_study)).version) == "2"
