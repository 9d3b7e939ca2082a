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


def test_endpoints_are_registered_with_the_study_as_alias(embedded_store: Any, unique_study: str) -> None:
    cell = "mlp2x8/moons/sgd"
    with tracked_run(embedded_store, experiment=unique_study, run_name=cell) as run:
        for role in names.ENDPOINTS:
            log_model(run, role, torch.nn.Linear(4, 3), display_name=names.model_name(cell, role))
    versions = register_endpoints(embedded_store, run.run_id, study=unique_study, cell=cell)
    assert versions == {"mlp2x8-moons-sgd-a": "1", "mlp2x8-moons-sgd-b": "1"}
    client = embedded_store.client()
    got = client.get_model_version_by_alias("mlp2x8-moons-sgd-a", study_alias(unique_study))
    assert str(got.version) == "1" and got.run_id == run.run_id and got.tags[names.TAG_STUDY] == unique_study
    assert register_endpoints(embedded_store, run.run_id, study=unique_study, cell=cell)["mlp2x8-moons-sgd-b"] == "2"
    assert study_alias("v3") == "study_v3" and study_alias("quick.tiny") == "quick_tiny"
