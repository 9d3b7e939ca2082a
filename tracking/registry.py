"""The Model Registry: a study's endpoints as registered models, named by cell and role, with the study as
a version tag and an alias.

``lgeom study --register`` calls :func:`register_endpoints` for every FINISHED cell of the study, those
finished in that invocation and those reused from earlier ones: registered model
:func:`lgeom.names.model_name` (``mlp2x16-moons-sgd-a``), a version from the run's LoggedModel
(``models:/<id>``), version tags ``lgeom.study`` / ``lgeom.cell``, and alias = the study (so
``models:/mlp2x16-moons-sgd-a@quick`` loads the endpoint of study ``quick``). Registering is idempotent: a
LoggedModel that already has a version of its registered model keeps that version (its study tag and
alias are set again), so registering a reused cell or rerunning ``--register`` adds no versions.
"""

from __future__ import annotations

import re
from typing import Any

from lgeom import names
from tracking.log import model_uris
from tracking.runs import quote_search_value
from tracking.store import Store, with_retries

_ALIAS_FORBIDDEN = re.compile(r"[^A-Za-z0-9_-]")


def study_alias(study: str) -> str:
    """The registry alias of ``study``: characters MLflow refuses in aliases become ``_``; an alias that
    would read as a version (``v3``) or MLflow's reserved ``latest`` gets the prefix ``study_``.
    """
    alias = _ALIAS_FORBIDDEN.sub("_", study)
    return f"study_{alias}" if re.fullmatch(r"(?i)v\d+|latest", alias) else alias


def register_endpoints(store: Store, run_id: str, *, study: str, cell: str) -> dict[str, str]:
    """Register every model logged for ``run_id`` (endpoints ``a``, ``b`` ...) and return
    ``{registered model name: version}``; the alias :func:`study_alias` moves to these versions. A model
    registered before (same registered model, run and LoggedModel) reuses its version instead of adding one.

    Raises:
        mlflow.exceptions.MlflowException: the registry refuses (after retries of transient errors).
    """
    from mlflow.exceptions import MlflowException

    client = store.client()
    out: dict[str, str] = {}
    for role, uri in sorted(model_uris(store, run_id).items()):
        name = names.model_name(cell, role)
        try:
            with_retries(
                lambda n=name: client.create_registered_model(
                    n, tags={names.TAG_CELL: cell}, description=f"Endpoint {role} of cell `{cell}`"
                ),
                what=f"registering model {name}",
            )
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = _existing_version(client, name, run_id, uri)
        if version is None:
            version = with_retries(
                lambda n=name, u=uri: client.create_model_version(
                    n, u, run_id=run_id, tags={names.TAG_STUDY: study, names.TAG_CELL: cell}
                ),
                what=f"adding a version of {name}",
            )
        else:
            for key, value in ((names.TAG_STUDY, study), (names.TAG_CELL, cell)):
                with_retries(
                    lambda n=name, v=version.version, k=key, x=value: client.set_model_version_tag(n, v, k, x),
                    what=f"tagging version {version.version} of {name}",
                )
        with_retries(
            lambda n=name, v=version.version: client.set_registered_model_alias(n, study_alias(study), v),
            what=f"aliasing {name}",
        )
        out[name] = str(version.version)
    return out


def _existing_version(client: Any, name: str, run_id: str, uri: str) -> Any:
    """The version of registered model ``name`` made from LoggedModel ``uri`` (``models:/<id>``) of ``run_id``,
    or ``None``; the oldest one if several were made (by registering before this was idempotent).
    """
    model_id = uri.split("/", 1)[1].lstrip("/")
    found = with_retries(
        lambda: client.search_model_versions(
            f"name = {quote_search_value(name)} and run_id = {quote_search_value(run_id)}"
        ),
        what=f"looking up versions of {name}",
    )
    same = [v for v in found if v.model_id == model_id or v.source == uri]
    return min(same, key=lambda v: int(v.version)) if same else None


__all__ = ["register_endpoints", "study_alias"]
