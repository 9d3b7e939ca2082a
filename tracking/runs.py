"""Run hierarchy: experiments per study, parent and child runs, the run life cycle, reuse and orphans.

The life cycle is one context manager::

    store = connect()                                     # tracking.store: embedded default or server
    with tracked_run(store, experiment="quick", run_name="study",
                     tags=run_tags(study="quick", stage="study")) as parent:
        with tracked_run(store, experiment_id=parent.experiment_id, run_name=cell.name,
                         parent_run_id=parent.run_id, params=flatten_params(cell.config.flat()),
                         tags=run_tags(study="quick", cell=cell.name, config_hash=h, stage="trial")) as run:
            log_bundle(run, bundle, model=module)        # tracking.bundle
    # each run ends FINISHED only after every upload it made was listed back with the same size;
    # any exception (KeyboardInterrupt included) ends it FAILED with the error in tag ``lgeom.error``
    # and the run's note.

A run started here records ``lgeom.sys.host`` / ``lgeom.sys.pid`` / ``lgeom.sys.proc_start`` so that
:func:`mark_orphaned_runs` can tell a run whose process died (a killed study) from one still running;
when started inside Ray, ``lgeom.sys.node_ip`` (the Ray node's IP: which node of a cluster ran a trial); and
the git commit (``mlflow.source.git.commit``) and ``lgeom.git_dirty`` of the current directory when it is
a git working tree.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lgeom.names import (
    TAG_CELL,
    TAG_CONFIG_HASH,
    TAG_ERROR,
    TAG_HOST,
    TAG_LINKED_RUN,
    TAG_NODE_IP,
    TAG_NOTE,
    TAG_PARENT,
    TAG_PID,
    TAG_PROC_START,
    TAG_STAGE,
    TAG_STUDY,
)
from tracking.log import (
    MAX_TAG_VALUE,
    Manifest,
    ModelRecord,
    TrackedRun,
    flatten_params,
)
from tracking.processes import process_alive, process_start_ticks
from tracking.provenance import git_tags
from tracking.redact import clean_mapping, redact
from tracking.store import (
    DEFAULT_RETRY,
    RetryPolicy,
    Store,
    check_artifact_store,
    check_health,
    with_retries,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

_RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


# --- names, tags, params ---------------------------------------------------------------------------------


def run_tags(
    *,
    study: str,
    stage: str,
    cell: str | None = None,
    config_hash: str | None = None,
    parent_run_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The lgeom tags of a run (DESIGN.md): ``lgeom.study``, ``lgeom.stage`` and, when given,
    ``lgeom.cell``, ``lgeom.config_hash``, ``mlflow.parentRunId``, plus ``extra``.
    """
    tags = {TAG_STUDY: study, TAG_STAGE: stage}
    if cell is not None:
        tags[TAG_CELL] = cell
    if config_hash is not None:
        tags[TAG_CONFIG_HASH] = config_hash
    if parent_run_id is not None:
        tags[TAG_PARENT] = parent_run_id
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "experiment"


def ensure_experiment(
    store: Store, name: str, *, client: MlflowClient | None = None, retry: RetryPolicy = DEFAULT_RETRY
) -> str:
    """The id of the experiment called ``name`` (the study), created (or restored if deleted) when needed.

    In embedded mode new experiments put their artifacts under the store's ``mlruns`` folder.

    Raises:
        ValueError: an empty name.
    """
    if not name or not name.strip():
        raise ValueError(f"experiment name: expected a non-empty study name, got {name!r}")
    from mlflow.exceptions import MlflowException

    client = client or store.client()
    exp = with_retries(
        lambda: client.get_experiment_by_name(name), what=f"looking up experiment {name!r}", policy=retry
    )
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            with_retries(
                lambda: client.restore_experiment(exp.experiment_id),
                what=f"restoring experiment {name!r}",
                policy=retry,
            )
        return str(exp.experiment_id)
    location = None
    if store.artifact_root:
        location = f"{store.artifact_root}/{_slug(name)}-{os.urandom(3).hex()}"
    try:
        return str(
            with_retries(
                lambda: client.create_experiment(name, artifact_location=location),
                what=f"creating experiment {name!r}",
                policy=retry,
            )
        )
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        exp = client.get_experiment_by_name(name)  # created concurrently by another trial
        if exp is None:
            raise
        return str(exp.experiment_id)


def _context_tags() -> dict[str, str]:
    try:
        from mlflow.tracking.context.registry import resolve_tags

        tags = {k: str(v) for k, v in resolve_tags().items()}
    except Exception:  # noqa: BLE001 - context tags are a convenience
        tags = {}
    tags.update(git_tags())
    pid = os.getpid()
    tags.update({TAG_HOST: socket.gethostname(), TAG_PID: str(pid), TAG_PROC_START: str(process_start_ticks(pid) or 0)})
    node_ip = ray_node_ip()
    if node_ip:
        tags[TAG_NODE_IP] = node_ip
    return tags


def ray_node_ip() -> str | None:
    """The IP of the Ray node this process runs on, when it is a Ray worker or a driver connected to Ray;
    ``None`` otherwise. Ray is never imported here: a process that has not imported it is not in Ray.
    """
    ray = sys.modules.get("ray")
    try:
        if ray is None or not ray.is_initialized():
            return None
        return str(ray.util.get_node_ip_address()) or None
    except Exception:  # noqa: BLE001 - the node IP is a convenience for telling nodes apart
        return None


# --- life cycle -------------------------------------------------------------------------------------------

#: Set by ``mlflow run`` in the entry point's environment: the project run made for this invocation.
PROJECT_RUN_ENV = "MLFLOW_RUN_ID"
_adopted: set[str] = set()


def project_run_id() -> str | None:
    """The run ``mlflow run`` made for this process (``$MLFLOW_RUN_ID``), ``None`` outside ``mlflow run``."""
    return os.environ.get(PROJECT_RUN_ENV) or None


def _adopt_project_run(
    store: Store, experiment_id: str, run_name: str | None, tags: Mapping[str, str], retry: RetryPolicy
) -> TrackedRun | None:
    """The ``mlflow run`` project run as this step's run when it is RUNNING in ``experiment_id`` and not
    adopted yet (once per process); ``None`` otherwise.
    """
    run_id = project_run_id()
    if run_id is None or run_id in _adopted:
        return None
    client = store.client()
    try:
        found = with_retries(
            lambda: client.get_run(run_id), what=f"reading the mlflow run project run {run_id}", policy=retry
        )
    except Exception:  # noqa: BLE001 - a project run of another store: make our own run
        return None
    if str(found.info.experiment_id) != str(experiment_id) or found.info.status != "RUNNING":
        return None
    _adopted.add(run_id)
    run = TrackedRun(store, client, run_id, str(experiment_id), retry)
    if run_name:
        with_retries(lambda: client.update_run(run_id, name=run_name), what="naming the project run", policy=retry)
    run.set_tags(tags)
    return run


def link_project_run(store: Store, run: TrackedRun, what: str, *, retry: RetryPolicy = DEFAULT_RETRY) -> None:
    """Under ``mlflow run``, when the project run could not be ``run`` itself (it lives in another
    experiment), say on the project run where the results went: tag ``lgeom.linked_run`` and its note.
    Does nothing outside ``mlflow run`` or when the project run is ``run``.
    """
    run_id = project_run_id()
    if run_id is None or run_id == run.run_id or run_id in _adopted:
        return
    client = store.client()
    exp = with_retries(lambda: client.get_experiment(run.experiment_id), what="reading an experiment", policy=retry)
    note = (
        f"{what}: its results are in run {run.run_id} of experiment `{exp.name}` (this `mlflow run` invocation "
        f"ran in another experiment; pass `--experiment-name {exp.name}` to `mlflow run` to make this run the "
        "step's run)"
    )
    try:
        with_retries(
            lambda: client.set_tag(run_id, TAG_LINKED_RUN, run.run_id), what="linking the project run", policy=retry
        )
        with_retries(lambda: client.set_tag(run_id, TAG_NOTE, note), what="describing the project run", policy=retry)
    except Exception as err:  # noqa: BLE001 - a courtesy link; never fail the step for it
        warnings.warn(
            f"could not link the mlflow run project run {run_id} ({redact(str(err))[:200]})",
            RuntimeWarning,
            stacklevel=2,
        )


def start_run(
    store: Store,
    *,
    experiment: str | None = None,
    experiment_id: str | None = None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    check: bool = True,
    retry: RetryPolicy = DEFAULT_RETRY,
    health_timeout: float = 15.0,
    adopt_project_run: bool = False,
) -> TrackedRun:
    """Create a RUNNING run (a child of ``parent_run_id`` when given) with ``tags`` and ``params``.

    With ``adopt_project_run``, under ``mlflow run`` (``$MLFLOW_RUN_ID``) the project run itself becomes
    this run when it is RUNNING in the same experiment (once per process), so the invocation leaves no
    second run; otherwise a new run is made.

    With ``check`` the store and the experiment's artifact store are checked first (``health_timeout``
    seconds in all, a few more if the experiment had to be created), so an unreachable server or S3 fails
    here, before any run exists. If anything fails after the run was created it is
    ended FAILED before the error propagates. Prefer :func:`tracked_run`, which also ends the run.

    Raises:
        ValueError: neither or both of ``experiment`` / ``experiment_id``.
        tracking.store.StoreUnavailableError: the store or its artifact store does not answer.
    """
    if (experiment is None) == (experiment_id is None):
        raise ValueError(
            f"run: expected exactly one of experiment (name) or experiment_id, got {experiment!r} and {experiment_id!r}"
        )
    deadline = time.monotonic() + health_timeout
    if check:
        check_health(store, timeout=health_timeout)
    client = store.client()
    if experiment_id is None:
        experiment_id = ensure_experiment(store, str(experiment), client=client, retry=retry)
    exp = with_retries(
        lambda: client.get_experiment(experiment_id), what=f"reading experiment {experiment_id}", policy=retry
    )
    if check:
        check_artifact_store(store, exp.artifact_location, deadline=max(deadline, time.monotonic() + 5.0))
    all_tags = {**_context_tags(), **{k: str(v) for k, v in (tags or {}).items()}}
    if parent_run_id:
        all_tags[TAG_PARENT] = parent_run_id
    all_tags = {k: v[:MAX_TAG_VALUE] for k, v in clean_mapping(all_tags).items()}
    adopted = _adopt_project_run(store, str(experiment_id), run_name, all_tags, retry) if adopt_project_run else None
    if adopted is not None:
        if params:
            try:
                adopted.log_params(params)
            except BaseException as err:
                end_run(adopted, "FAILED", error=err)
                raise
        return adopted
    mlflow_run = with_retries(
        lambda: client.create_run(experiment_id, tags=all_tags, run_name=run_name),
        what="creating a run",
        policy=retry,
    )
    run = TrackedRun(store, client, mlflow_run.info.run_id, str(experiment_id), retry)
    if params:
        try:
            run.log_params(params)
        except BaseException as err:
            end_run(run, "FAILED", error=err)
            raise
    return run


def attach_run(store: Store, run_id: str, *, retry: RetryPolicy = DEFAULT_RETRY) -> TrackedRun:
    """A :class:`TrackedRun` for an existing run (e.g. to add figures to a finished study run); its
    status is not changed. ``run.verify()`` checks the uploads made through it.
    """
    client = store.client()
    info = with_retries(lambda: client.get_run(run_id), what=f"reading run {run_id}", policy=retry).info
    return TrackedRun(store, client, run_id, str(info.experiment_id), retry)


def end_run(
    run: TrackedRun, status: str = "FINISHED", *, error: BaseException | None = None, verify: bool = True
) -> None:
    """End ``run``. ``FINISHED`` first verifies every upload (:func:`tracking.log.verify_uploads`); if that
    fails the run ends FAILED and the verification error is raised. Other statuses record ``error``
    (masked) in tag ``lgeom.error`` and the run's note; recording problems only warn, so they never hide
    the original error.

    Raises:
        ValueError: unknown status.
        tracking.log.UploadVerificationError: FINISHED requested but an upload is missing or truncated.
    """
    if status not in _RUN_STATUSES:
        raise ValueError(f"run status: expected one of {', '.join(_RUN_STATUSES)}, got {status!r}")
    if status == "FINISHED":
        if verify:
            try:
                run.verify()
            except BaseException as err:
                end_run(run, "FAILED", error=err)
                raise
        run.call("finishing the run", run.client.set_terminated, run.run_id, "FINISHED")
        return
    try:
        if error is not None:
            summary = redact(f"{type(error).__name__}: {error}")
            tb = redact("".join(traceback.format_exception(error))[-4000:])
            run.client.set_tag(run.run_id, TAG_ERROR, summary[:MAX_TAG_VALUE])
            run.client.set_tag(run.run_id, TAG_NOTE, f"**{status}**: {summary[:2000]}\n\n```\n{tb}\n```")
        for rec in run.manifest.models.values():
            _finalize_model_quietly(run, rec.model_id, "FAILED")
        run.client.set_terminated(run.run_id, status)
    except Exception as err:  # noqa: BLE001 - must not mask the error being recorded
        warnings.warn(
            f"could not mark run {run.run_id} {status} ({redact(str(err))[:300]}); "
            "tracking.runs.mark_orphaned_runs can close it later",
            RuntimeWarning,
            stacklevel=2,
        )


def _finalize_model_quietly(run: TrackedRun, model_id: str, status: str) -> None:
    try:
        if run.client.get_logged_model(model_id).status.to_int() == 1:  # PENDING
            run.client.finalize_logged_model(model_id, status)
    except Exception:  # noqa: BLE001
        pass


@contextmanager
def tracked_run(
    store: Store,
    *,
    experiment: str | None = None,
    experiment_id: str | None = None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    check: bool = True,
    verify: bool = True,
    retry: RetryPolicy = DEFAULT_RETRY,
    adopt_project_run: bool = False,
) -> Iterator[TrackedRun]:
    """Start a run (see :func:`start_run`), yield it, and end it: FINISHED after every upload is verified,
    FAILED with the error recorded on any exception (``KeyboardInterrupt`` included), which is re-raised.

    Raises:
        whatever :func:`start_run` raises; the body's exception; UploadVerificationError at the end.
    """
    run = start_run(
        store,
        experiment=experiment,
        experiment_id=experiment_id,
        run_name=run_name,
        parent_run_id=parent_run_id,
        tags=tags,
        params=params,
        check=check,
        retry=retry,
        adopt_project_run=adopt_project_run,
    )
    if adopt_project_run:
        link_project_run(store, run, f"`{run_name or run.run_id}`", retry=retry)
    try:
        yield run
    except BaseException as err:
        end_run(run, "FAILED", error=err)
        raise
    end_run(run, "FINISHED", verify=verify)


# --- reuse and orphans ------------------------------------------------------------------------------------


def search_all_runs(
    store: Store, experiment_ids: list[str], filter_string: str = "", *, order_by: list[str] | None = None
) -> list[Run]:
    """Every run matching ``filter_string`` (MLflow search syntax) in the experiments, all pages."""
    client = store.client()
    out: list[Run] = []
    token = None
    while True:
        page = with_retries(
            lambda: client.search_runs(
                experiment_ids, filter_string, max_results=1000, order_by=order_by, page_token=token
            ),
            what="searching runs",
        )
        out.extend(page)
        token = page.token
        if not token:
            return out


def quote_search_value(value: str) -> str:
    """``value`` quoted for an MLflow search filter (``tags.`x` = 'value'``).

    Raises:
        ValueError: ``value`` holds a single quote (MLflow's filter syntax has no escape for it).
    """
    if "'" in value:
        raise ValueError(f"search value: expected no single quote, got {value!r}")
    return f"'{value}'"


def find_finished_run(
    store: Store,
    experiment_id: str,
    config_hash: str,
    *,
    stage: str | None = None,
    cell: str | None = None,
) -> Run | None:
    """The most recent FINISHED run with tag ``lgeom.config_hash == config_hash`` in the experiment
    (optionally also of ``stage`` / ``cell``), or ``None``: the study reuses it instead of recomputing.
    """
    filters = [f"tags.`{TAG_CONFIG_HASH}` = {quote_search_value(config_hash)}", "attributes.status = 'FINISHED'"]
    if stage is not None:
        filters.append(f"tags.`{TAG_STAGE}` = {quote_search_value(stage)}")
    if cell is not None:
        filters.append(f"tags.`{TAG_CELL}` = {quote_search_value(cell)}")
    runs = search_all_runs(store, [experiment_id], " and ".join(filters), order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def mark_orphaned_runs(
    store: Store,
    experiment_id: str,
    *,
    status: str = "FAILED",
    parent_run_id: str | None = None,
    include_parent: bool = True,
    older_than_s: float | None = None,
) -> list[str]:
    """Close RUNNING runs left behind by a killed invocation; returns their ids.

    A RUNNING run is an orphan when ``parent_run_id`` is given and it is that run or one of its children
    (the caller knows that invocation is dead; ``include_parent=False`` spares the parent itself, for a
    study closing its own crashed trials before it ends), or when it was started on this host by a process that no
    longer exists (tags ``lgeom.sys.host`` / ``lgeom.sys.pid`` / ``lgeom.sys.proc_start``), or when ``older_than_s``
    is given and it started longer ago than that. Then, whatever host ran it, a RUNNING child run whose
    parent run (tag ``mlflow.parentRunId``) is no longer RUNNING (ended, closed as an orphan just now, or
    deleted) is an orphan too: that is how trials that ran on other nodes of a cluster are closed after
    their driver was killed. Each is ended with ``status`` (FAILED or KILLED), tag ``lgeom.error`` and the
    run's note saying why.

    Raises:
        ValueError: a status other than FAILED or KILLED.
    """
    if status not in ("FAILED", "KILLED"):
        raise ValueError(f"orphan status: expected FAILED or KILLED, got {status!r}")
    client = store.client()
    host = socket.gethostname()
    now_ms = time.time() * 1000
    closed: list[str] = []

    def close(rid: str, reason: str) -> None:
        _close_run(client, rid, status, f"orphaned: {reason}")
        closed.append(rid)

    running = search_all_runs(store, [experiment_id], "attributes.status = 'RUNNING'")
    for run in running:
        tags = run.data.tags
        rid = run.info.run_id
        reason = None
        if parent_run_id and ((include_parent and rid == parent_run_id) or tags.get(TAG_PARENT) == parent_run_id):
            reason = f"its study invocation (parent run {parent_run_id}) ended without closing it"
        elif tags.get(TAG_HOST) == host and tags.get(TAG_PID, "").isdigit():
            ticks = int(tags.get(TAG_PROC_START, "0") or 0) or None
            if not process_alive(int(tags[TAG_PID]), ticks):
                reason = f"process {tags[TAG_PID]} on {host} that ran it no longer exists"
        if reason is None and older_than_s is not None and now_ms - run.info.start_time > older_than_s * 1000:
            reason = f"still RUNNING {older_than_s:.0f} s after it started"
        if reason is not None:
            close(rid, reason)
    # Children whose parent is no longer RUNNING (its process on another host cannot be checked). Repeated
    # until nothing changes, so grandchildren of a closed run are closed too.
    still_running = {r.info.run_id: r for r in running if r.info.run_id not in closed}
    parent_status: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for rid, run in list(still_running.items()):
            parent_id = run.data.tags.get(TAG_PARENT)
            if not parent_id or parent_id in still_running:
                continue
            if parent_id not in parent_status:
                parent_status[parent_id] = (
                    "closed as an orphan" if parent_id in closed else _run_status(client, parent_id)
                )
            if parent_status[parent_id] == "RUNNING":
                continue
            close(rid, f"its parent run {parent_id} is no longer RUNNING ({parent_status[parent_id]})")
            del still_running[rid]
            changed = True
    return closed


def _close_run(client: Any, run_id: str, status: str, note: str) -> None:
    """End RUNNING ``run_id`` with ``status``, tag ``lgeom.error`` = ``note`` and the run's note saying why."""
    with_retries(lambda: client.set_tag(run_id, TAG_ERROR, note), what="tagging a run left RUNNING")
    with_retries(lambda: client.set_tag(run_id, TAG_NOTE, f"**{status}**: {note}"), what="noting a run left RUNNING")
    with_retries(lambda: client.set_terminated(run_id, status), what="closing a run left RUNNING")


def close_superseded_attempts(
    store: Store, experiment_id: str, *, parent_run_id: str, cell: str, current_run_id: str
) -> list[str]:
    """Close (FAILED) the earlier attempts of ``cell`` under ``parent_run_id`` that are still RUNNING; returns
    their ids.

    One study invocation runs one attempt of a cell at a time, so when a new attempt starts (Ray Tune retrying
    a trial whose process or node was lost) any other RUNNING child run of the same cell and parent belongs to
    a lost attempt: it is closed now rather than left RUNNING beside its retry until the study ends.
    """
    client = store.client()
    filters = (
        f"tags.`{TAG_PARENT}` = {quote_search_value(parent_run_id)} and tags.`{TAG_CELL}` = {quote_search_value(cell)}"
        " and attributes.status = 'RUNNING'"
    )
    closed = []
    for run in search_all_runs(store, [experiment_id], filters):
        if run.info.run_id == current_run_id:
            continue
        _close_run(client, run.info.run_id, "FAILED", f"lost attempt: superseded by the retry in run {current_run_id}")
        closed.append(run.info.run_id)
    return closed


def _run_status(client: Any, run_id: str) -> str:
    """A run's status (``FINISHED``, ``RUNNING``, ...), ``DELETED`` for a deleted or unknown run."""
    from mlflow.exceptions import MlflowException

    try:
        run = with_retries(lambda: client.get_run(run_id), what="reading a parent run")
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return "DELETED"
        raise
    return "DELETED" if run.info.lifecycle_stage == "deleted" else run.info.status


__all__ = [
    "Manifest",
    "ModelRecord",
    "TrackedRun",
    "attach_run",
    "end_run",
    "ensure_experiment",
    "find_finished_run",
    "flatten_params",
    "link_project_run",
    "close_superseded_attempts",
    "mark_orphaned_runs",
    "project_run_id",
    "quote_search_value",
    "ray_node_ip",
    "run_tags",
    "search_all_runs",
    "start_run",
    "tracked_run",
]
