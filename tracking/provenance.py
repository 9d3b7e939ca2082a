"""Provenance of a run: the git commit and whether the working tree was dirty, the dataset it used (an MLflow
dataset input), system metrics while it runs, and descriptions (``mlflow.note.content``) of experiments.

Everything here degrades gracefully: outside a git repository (or without git) there are no git tags;
without ``psutil`` there are no system metrics (a warning says so).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from lgeom import names
from tracking.log import TrackedRun
from tracking.store import Store, with_retries

#: MLflow's input tag saying what a dataset was used for (``mlflow.data.context``).
_DATASET_CONTEXT_TAG = "mlflow.data.context"


@functools.lru_cache(maxsize=8)
def _git_tags_of(cwd: str) -> tuple[tuple[str, str], ...]:
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit or not commit.strip():
        return ()
    status = git("status", "--porcelain", "--untracked-files=no")
    tags = [(names.TAG_GIT_COMMIT, commit.strip())]
    if status is not None:
        tags.append((names.TAG_GIT_DIRTY, "true" if status.strip() else "false"))
    return tuple(tags)


def git_tags(cwd: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """``{mlflow.source.git.commit: <sha>, lgeom.git_dirty: "true"|"false"}`` of the git working tree at
    ``cwd`` (default: the current directory); ``{}`` outside a repository or without git. Cached per folder
    for the life of the process (uncommitted edits made meanwhile are not seen).
    """
    return dict(_git_tags_of(os.path.abspath(os.fspath(cwd or os.getcwd()))))


def log_dataset(
    run: TrackedRun,
    *,
    name: str,
    digest: str,
    source: Mapping[str, Any],
    profile: Mapping[str, Any],
    context: str = "training",
) -> None:
    """Record the dataset a run used as an MLflow dataset input (the run's *Datasets used* in the UI):
    ``name``, ``digest`` (what identifies its contents), ``source`` (how it is made: e.g. the data config),
    ``profile`` (e.g. split sizes) and the input tag ``mlflow.data.context`` = ``context``.
    """
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.entities import Dataset, DatasetInput, InputTag

    src = CodeDatasetSource(tags={str(k): str(v) for k, v in source.items()})
    entity = Dataset(
        name=name,
        digest=digest[:36],
        source_type=src._get_source_type(),
        source=src.to_json(),
        profile=json.dumps(dict(profile), sort_keys=True, default=str),
    )
    item = DatasetInput(entity, tags=[InputTag(_DATASET_CONTEXT_TAG, context)])
    what = f"logging dataset input {name}"
    for attempt in range(_DATASET_RACE_ATTEMPTS):
        try:
            run.call(what, run.client.log_inputs, run.run_id, datasets=[item])
            return
        except Exception as err:  # noqa: BLE001 - only the insert race is retried, see below
            # MLflow looks the dataset up by (experiment, name, digest) and inserts it when absent; trials of
            # one study logging the same dataset at once can both miss it and the second insert violates the
            # unique key. The row exists then, so the next attempt finds and reuses it.
            if attempt + 1 >= _DATASET_RACE_ATTEMPTS or not _is_duplicate_key(err):
                raise


#: Attempts of :func:`log_dataset` when concurrent trials race to create the same dataset row.
_DATASET_RACE_ATTEMPTS = 5


def _is_duplicate_key(err: BaseException) -> bool:
    """Whether ``err`` is a database unique-key violation (SQLite, PostgreSQL, MySQL wording)."""
    text = str(err)
    return any(
        s in text
        for s in ("UNIQUE constraint failed", "duplicate key value violates unique constraint", "Duplicate entry")
    )


@contextmanager
def system_metrics(run: TrackedRun, *, sampling_interval_s: float = 10.0) -> Iterator[bool]:
    """MLflow system metrics (``system/cpu_utilization_percentage``, memory, GPU ...) of ``run`` while the
    block runs, sampled every ``sampling_interval_s`` seconds by MLflow's monitor thread (what
    ``mlflow.start_run(log_system_metrics=True)`` starts). Yields whether the monitor runs: without
    ``psutil`` it does not (warned once).
    """
    try:
        import psutil  # noqa: F401 - MLflow's monitor needs it
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ImportError:
        warnings.warn(
            "system metrics: psutil is not installed (pip install psutil); the run has none",
            RuntimeWarning,
            stacklevel=3,
        )
        yield False
        return
    monitor = SystemMetricsMonitor(
        run.run_id, sampling_interval=sampling_interval_s, tracking_uri=run.store.tracking_uri
    )
    monitor.start()
    try:
        yield True
    finally:
        monitor.finish()


def set_experiment_note(store: Store, experiment_id: str, text: str) -> None:
    """Set the description (``mlflow.note.content``) shown on the experiment's page."""
    client = store.client()
    with_retries(
        lambda: client.set_experiment_tag(experiment_id, names.TAG_NOTE, text),
        what=f"describing experiment {experiment_id}",
    )


__all__ = ["git_tags", "log_dataset", "set_experiment_note", "system_metrics"]
