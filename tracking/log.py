"""Logging into a run: the run handle (:class:`TrackedRun`), metrics in batches, series with steps, params,
tags, artifacts, figures and tables (``mlflow.log_figure`` / ``log_table``) and PyTorch models, and verifying
that every upload arrived.

Every upload is recorded in the run's :class:`Manifest`; :func:`verify_uploads` lists the uploaded files
back and compares sizes before a run may end FINISHED (``tracking.runs.end_run``). Text artifacts are
scanned for secret values (``tracking.redact``) before upload.

A run's life cycle (start, end, reuse, orphans) is ``tracking.runs``; a result bundle is logged by
``tracking.bundle.log_bundle``; a pipeline step's run by ``tracking.steps``. This module imports neither,
so the run handle and its logging live in one place and nothing imports back into it.

mlflow is imported inside the functions that need it: importing it costs seconds, and the pipelines
import this module on every ``lgeom`` command, including those that never log.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from lgeom import names
from lgeom.curves import Curve, load_curve
from tracking.redact import clean_mapping, find_secret
from tracking.store import RetryPolicy, Store, with_retries

if TYPE_CHECKING:
    from mlflow import MlflowClient

_METRIC_NAME = re.compile(r"^[A-Za-z0-9_\-. /:]+$")
_TEXT_SUFFIXES = {".json", ".csv", ".txt", ".yaml", ".yml", ".md", ".html", ".log", ".ini", ".toml", ".tsv", ".svg"}
_METRICS_PER_BATCH = 1000
_PARAMS_PER_BATCH = 100
_TAGS_PER_BATCH = 100

MAX_PARAM_VALUE = 6000
#: Resolution of logged figures (the same as ``tracking.figures.save_figure``'s PNGs).
FIGURE_DPI = 120
MAX_TAG_VALUE = 8000


class UploadVerificationError(RuntimeError):
    """Uploaded artifacts, listed back from the store, do not match what was logged (missing / wrong size)."""


class SecretInArtifactError(ValueError):
    """A file about to be uploaded contains the value of a credential (names the variable, not the value)."""


# --- the run handle ---------------------------------------------------------------------------------------


@dataclass
class ModelRecord:
    """A LoggedModel made for a run: its id and the files (relative path -> bytes) uploaded for it."""

    model_id: str
    files: dict[str, int] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """``models:/<model_id>``, loadable with :func:`load_model`."""
        return f"models:/{self.model_id}"


@dataclass
class Manifest:
    """What was uploaded for a run: artifact path -> size in bytes, and models by name."""

    artifacts: dict[str, int] = field(default_factory=dict)
    models: dict[str, ModelRecord] = field(default_factory=dict)

    def merge(self, other: Manifest) -> None:
        """Add ``other``'s entries (later uploads of the same path replace earlier ones)."""
        self.artifacts.update(other.artifacts)
        self.models.update(other.models)


class TrackedRun:
    """A started MLflow run and the ledger of what was uploaded to it (used to verify before FINISHED).

    Made by ``tracking.runs.start_run`` / ``tracked_run`` / ``attach_run``. Its methods are this module's
    functions with the run bound, so a trial needs only the run object.

    Attributes:
        store: where the run lives.
        client: an ``MlflowClient`` for ``store``.
        run_id, experiment_id: the run's ids.
        manifest: every upload made through this object.
        retry: backoff for transient errors of each MLflow / S3 call.
    """

    def __init__(self, store: Store, client: MlflowClient, run_id: str, experiment_id: str, retry: RetryPolicy) -> None:
        self.store = store
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.retry = retry
        self.manifest = Manifest()
        self._artifact_repo: Any = None

    def __repr__(self) -> str:
        return f"TrackedRun({self.run_id}, experiment {self.experiment_id}, {self.store.describe()})"

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with this run's retry policy on transient errors."""
        return with_retries(lambda: fn(*args, **kwargs), what=what, policy=self.retry)

    def log_metrics(self, metrics: Mapping[str, float | None], *, step: int = 0) -> None:
        """See :func:`log_metrics`."""
        log_metrics(self, metrics, step=step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """See :func:`log_params`."""
        log_params(self, params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """See :func:`set_tags`."""
        set_tags(self, tags)

    def log_artifact(self, local_path: str | os.PathLike[str], artifact_path: str | None = None) -> str:
        """See :func:`log_artifact`."""
        return log_artifact(self, local_path, artifact_path)

    def log_figure(self, figure: Any, artifact_file: str) -> str:
        """See :func:`log_figure`."""
        return log_figure(self, figure, artifact_file)

    def log_table(self, data: Any, artifact_file: str) -> str:
        """See :func:`log_table`."""
        return log_table(self, data, artifact_file)

    def log_model(self, name: str, module: nn.Module, **kwargs: Any) -> ModelRecord:
        """See :func:`log_model`."""
        return log_model(self, name, module, **kwargs)

    def verify(self) -> None:
        """See :func:`verify_uploads`."""
        verify_uploads(self)

    def with_own_client(self) -> TrackedRun:
        """The same run and manifest with a client of its own (for a worker thread)."""
        other = TrackedRun(self.store, self.store.client(), self.run_id, self.experiment_id, self.retry)
        other.manifest = self.manifest
        other._artifact_repo = self._artifact_repo
        return other

    def list_artifacts(self, folder: str | None) -> list[Any]:
        """``FileInfo``s of ``folder`` (``None``: the root) of the run's artifacts, read from the store
        (retried on transient errors). The artifact repository is resolved once per run handle, so listing
        many folders costs one ``get_run``, not one per folder (``MlflowClient.list_artifacts`` reads the run
        each time).
        """
        if self._artifact_repo is None:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            uri = self.call(f"reading run {self.run_id}", self.client.get_run, self.run_id).info.artifact_uri
            self._artifact_repo = get_artifact_repository(uri, tracking_uri=self.store.tracking_uri)
        repo = self._artifact_repo
        return self.call(f"listing artifacts {folder or '/'}", repo.list_artifacts, folder)


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings -> ``{"dotted.key": "value"}`` for MLflow params: lists/tuples as JSON, ``None`` as
    ``"None"``, values longer than MLflow's limit truncated (marked), credential-named keys dropped and
    secret values masked.
    """
    out: dict[str, str] = {}

    def walk(p: str, v: Any) -> None:
        if isinstance(v, Mapping) and v:
            for k, vv in v.items():
                walk(f"{p}.{k}" if p else str(k), vv)
            return
        if isinstance(v, (list, tuple, Mapping)):
            text = json.dumps(v, default=str, separators=(",", ":"))
        else:
            text = str(v)
        if len(text) > MAX_PARAM_VALUE:
            text = text[: MAX_PARAM_VALUE - 20] + "...[truncated]"
        out[p] = text

    for k, v in values.items():
        walk(f"{prefix}.{k}" if prefix else str(k), v)
    return clean_mapping(out)


# --- scalars ----------------------------------------------------------------------------------------------


def check_metric_name(name: str) -> None:
    """Raise ``ValueError`` for a metric name MLflow would reject (letters, digits, ``_ - . / :`` and spaces only)."""
    if not _METRIC_NAME.match(name):
        raise ValueError(f"metric name: expected letters, digits and _ - . / : or spaces, got {name!r}")


def log_metrics(
    run: TrackedRun, metrics: Mapping[str, float | None], *, step: int = 0, timestamp_ms: int | None = None
) -> None:
    """Log scalar metrics at ``step`` with ``log_batch`` (chunks of 1000); ``None`` is logged as NaN.

    Raises:
        ValueError: a metric name MLflow would reject, or a value that is not a number.
    """
    from mlflow.entities import Metric

    ts = timestamp_ms or int(time.time() * 1000)
    entries = []
    for name, value in metrics.items():
        check_metric_name(name)
        try:
            v = math.nan if value is None else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"metric {name}: expected a number, got {value!r}") from None
        entries.append(Metric(name, v, ts, int(step)))
    _log_metric_entries(run, entries)


def _log_metric_entries(run: TrackedRun, entries: list[Any]) -> None:
    for i in range(0, len(entries), _METRICS_PER_BATCH):
        chunk = entries[i : i + _METRICS_PER_BATCH]
        run.call(f"logging {len(chunk)} metrics", run.client.log_batch, run.run_id, metrics=chunk, synchronous=True)


def log_params(run: TrackedRun, params: Mapping[str, Any]) -> None:
    """Log params (nested mappings flattened to dotted keys; credentials dropped, secrets masked).

    Params already logged with the same value are skipped.

    Raises:
        ValueError: a param already logged with a different value (MLflow params are immutable).
    """
    from mlflow.entities import Param

    flat = flatten_params(params)
    existing = run.call("reading the run's params", run.client.get_run, run.run_id).data.params
    clashes = [
        f"{k} (logged {existing[k]!r}, now {v!r})" for k, v in flat.items() if k in existing and existing[k] != v
    ]
    if clashes:
        raise ValueError(
            f"params of run {run.run_id}: expected the values already logged, got different ones for "
            + ", ".join(clashes)
        )
    items = [Param(k, v) for k, v in flat.items() if k not in existing]
    for i in range(0, len(items), _PARAMS_PER_BATCH):
        chunk = items[i : i + _PARAMS_PER_BATCH]
        run.call(f"logging {len(chunk)} params", run.client.log_batch, run.run_id, params=chunk, synchronous=True)


def set_tags(run: TrackedRun, tags: Mapping[str, Any]) -> None:
    """Set tags (credential-named keys dropped, secret values masked)."""
    from mlflow.entities import RunTag

    items = [RunTag(k, v[:MAX_TAG_VALUE]) for k, v in clean_mapping(tags).items()]
    for i in range(0, len(items), _TAGS_PER_BATCH):
        chunk = items[i : i + _TAGS_PER_BATCH]
        run.call(f"setting {len(chunk)} tags", run.client.log_batch, run.run_id, tags=chunk, synchronous=True)


def log_series(
    run: TrackedRun,
    prefix: str,
    columns: Any,
    *,
    skip: Sequence[str] = ("t",),
    steps: Sequence[int] | None = None,
    naming: Callable[[str, str], str] = names.series_metric,
) -> list[str]:
    """Log every numeric column of ``columns`` (a mapping of name -> values, an ``lgeom.table.Table`` or a
    pandas DataFrame) as metric ``naming(prefix, column)`` (default :func:`lgeom.names.series_metric`, a
    path's series; :func:`lgeom.names.history_metric` for an endpoint's training history) with step = row
    index (or ``steps``); NaN cells are not logged (a column probed at some rows only has entries at those
    steps).

    Returns:
        the metric names logged.

    Raises:
        ValueError: columns of different lengths, or ``steps`` of the wrong length.
    """
    from mlflow.entities import Metric

    if hasattr(columns, "columns") and isinstance(columns.columns, Mapping):
        data = dict(columns.columns)  # lgeom Table
    elif hasattr(columns, "to_dict") and hasattr(columns, "dtypes"):
        data = {str(c): columns[c].to_numpy() for c in columns.columns}  # pandas
    else:
        data = dict(columns)
    arrays = {}
    for name, values in data.items():
        if name in skip:
            continue
        arr = np.asarray(values)
        if arr.dtype.kind not in "biuf":
            continue
        arrays[name] = arr.astype(float)
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) > 1:
        raise ValueError(f"series {prefix}: expected columns of equal length, got lengths {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    if steps is not None and len(steps) != n:
        raise ValueError(f"series {prefix}: expected {n} steps (one per row), got {len(steps)}")
    ts = int(time.time() * 1000)
    entries = []
    logged = []
    for name, arr in arrays.items():
        key = naming(prefix, name)
        check_metric_name(key)
        logged.append(key)
        for i, v in enumerate(arr):
            if np.isnan(v):  # sparse columns (e.g. the Hessian probed at some points only): no value, no entry
                continue
            entries.append(Metric(key, float(v), ts, int(steps[i]) if steps is not None else i))
    _log_metric_entries(run, entries)
    return logged


# --- artifacts --------------------------------------------------------------------------------------------


def _scan_for_secrets(path: Path) -> None:
    if path.suffix.lower() not in _TEXT_SUFFIXES:
        return
    name = find_secret(path.read_bytes().decode("utf-8", errors="ignore"))
    if name:
        raise SecretInArtifactError(
            f"artifact {path}: expected no credentials, got the value of {name}; remove it before logging"
        )


def _artifact_key(artifact_path: str | None, filename: str) -> str:
    return f"{artifact_path.strip('/')}/{filename}" if artifact_path and artifact_path.strip("/") else filename


def log_artifact(run: TrackedRun, local_path: str | os.PathLike[str], artifact_path: str | None = None) -> str:
    """Upload one file to ``<artifact_path>/<file name>`` of the run (retried on transient errors) and
    record its size for verification.

    Returns:
        the artifact's path inside the run.

    Raises:
        FileNotFoundError: ``local_path`` is not a file.
        SecretInArtifactError: a text file contains a credential's value.
    """
    path = Path(local_path)
    if not path.is_file():
        raise FileNotFoundError(f"artifact: expected a file at {path}, got nothing there")
    _scan_for_secrets(path)
    key = _artifact_key(artifact_path, path.name)
    run.call(f"uploading artifact {key}", run.client.log_artifact, run.run_id, str(path), artifact_path or None)
    run.manifest.artifacts[key] = path.stat().st_size
    return key


def log_artifacts(run: TrackedRun, files: Sequence[tuple[str | os.PathLike[str], str | None]]) -> dict[str, int]:
    """Upload many files with one ``log_artifacts`` call: each ``(local file, artifact folder or None)`` goes
    to ``<folder>/<file name>`` of the run, and each size is recorded for verification, exactly as
    :func:`log_artifact` one by one would. Every text file is scanned for credentials before anything is
    uploaded. The files are linked (copied where linking fails) into a temporary staging folder (removed
    afterwards; never inside the folders being uploaded, so an interrupted upload leaves nothing there),
    and the store receives that one folder tree.

    Returns:
        ``{artifact path: size in bytes}`` of the files uploaded.

    Raises:
        FileNotFoundError: a path is not a file.
        ValueError: two files would land on the same artifact path.
        SecretInArtifactError: a text file contains a credential's value (nothing is uploaded).
    """
    items: dict[str, Path] = {}
    for local, folder in files:
        path = Path(local)
        if not path.is_file():
            raise FileNotFoundError(f"artifact: expected a file at {path}, got nothing there")
        key = _artifact_key(folder, path.name)
        if key in items:
            raise ValueError(f"artifacts: expected one file per artifact path, got {items[key]} and {path} for {key}")
        items[key] = path
    if not items:
        return {}
    for path in items.values():
        _scan_for_secrets(path)
    sizes = {key: path.stat().st_size for key, path in items.items()}
    with tempfile.TemporaryDirectory(prefix="lgeom-upload-") as tmp:
        for key, path in items.items():
            dst = Path(tmp) / key
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, dst)
            except OSError:
                shutil.copyfile(path, dst)
        run.call(f"uploading {len(items)} artifacts", run.client.log_artifacts, run.run_id, tmp, None)
    run.manifest.artifacts.update(sizes)
    return sizes


def _record_logged(run: TrackedRun, key: str) -> str:
    """Confirm ``key`` arrived (listed back with its size) and add it to the manifest for :func:`verify_uploads`.

    Raises:
        UploadVerificationError: the store does not list ``key``.
    """
    folder = key.rsplit("/", 1)[0] if "/" in key else None
    infos = run.list_artifacts(folder)
    sizes = {i.path: int(i.file_size or 0) for i in infos if not i.is_dir}
    if key not in sizes:
        raise UploadVerificationError(f"run {run.run_id}: artifact {key} missing after upload")
    run.manifest.artifacts[key] = sizes[key]
    return key


def log_figure(run: TrackedRun, figure: Any, artifact_file: str) -> str:
    """Log a matplotlib ``figure`` as ``artifact_file`` (``figures/<name>.png``) with ``mlflow.log_figure``,
    so the MLflow UI shows it as an image (retried on transient errors, confirmed by listing it back).

    Returns:
        the artifact's path inside the run.

    Raises:
        UploadVerificationError: the store does not list the figure afterwards.
    """
    run.call(
        f"logging figure {artifact_file}",
        run.client.log_figure,
        run.run_id,
        figure,
        artifact_file,
        save_kwargs={"dpi": FIGURE_DPI, "bbox_inches": "tight"},
    )
    return _record_logged(run, artifact_file)


def log_table(run: TrackedRun, data: Any, artifact_file: str) -> str:
    """Log a table (a pandas DataFrame or ``{column: values}``) as ``artifact_file`` (a ``.json``) with
    ``mlflow.log_table``, which the MLflow UI shows as a table, retried on transient errors and confirmed by
    listing it back. ``mlflow.log_table`` appends to a table the run already has; here a second call
    replaces it (the same JSON layout, uploaded over the old file), so a rerun or a retry never duplicates rows.

    Returns:
        the artifact's path inside the run.

    Raises:
        SecretInArtifactError: a cell contains a credential's value.
        UploadVerificationError: the store does not list the table afterwards.
    """
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    name = find_secret(frame.to_json(orient="split", index=False))
    if name:
        raise SecretInArtifactError(f"table {artifact_file}: expected no credentials, got the value of {name}")
    folder, _, base = artifact_file.rpartition("/")

    def put() -> None:
        listed = {i.path for i in run.client.list_artifacts(run.run_id, folder or None)}
        if artifact_file not in listed:
            run.client.log_table(run.run_id, frame, artifact_file)
            return
        with tempfile.TemporaryDirectory(prefix="lgeom-table-") as tmp:
            local = Path(tmp) / base
            frame.to_json(local, orient="split", index=False, date_format="iso")
            run.client.log_artifact(run.run_id, str(local), folder or None)

    run.call(f"logging table {artifact_file}", put)
    return _record_logged(run, artifact_file)


def _list_tree(list_fn: Any, root: str | None, what: str) -> dict[str, int]:
    """``{path: size}`` of every file below ``root`` using ``list_fn(path) -> [FileInfo]``."""
    out: dict[str, int] = {}
    pending = [root]
    while pending:
        folder = pending.pop()
        for info in with_retries(lambda: list_fn(folder), what=f"listing {what} {folder or '/'}"):
            if info.is_dir:
                pending.append(info.path)
            else:
                out[info.path] = int(info.file_size or 0)
    return out


def verify_uploads(run: TrackedRun, manifest: Manifest | None = None) -> None:
    """List the run's artifacts (and its models' files) back from the store and compare them with
    ``manifest`` (default: everything uploaded through ``run``), names and sizes.

    Raises:
        UploadVerificationError: listing each missing file and each size mismatch.
    """
    manifest = manifest or run.manifest
    problems: list[str] = []
    if manifest.artifacts:
        folders = {k.rsplit("/", 1)[0] if "/" in k else None for k in manifest.artifacts}
        found: dict[str, int] = {}
        for folder in sorted(folders, key=lambda f: f or ""):
            infos = run.list_artifacts(folder)
            found.update({i.path: int(i.file_size or 0) for i in infos if not i.is_dir})
        problems += _compare(manifest.artifacts, found, "artifact")
    for name, rec in manifest.models.items():
        found = _list_tree(
            lambda p, m=rec.model_id: run.client.list_logged_model_artifacts(m, p), None, f"model {name}"
        )
        problems += _compare(rec.files, found, f"model {name} ({rec.model_id}) file")
    if problems:
        raise UploadVerificationError(
            f"run {run.run_id}: {len(problems)} upload(s) not confirmed by the store: " + "; ".join(problems[:20])
        )


def _compare(expected: Mapping[str, int], found: Mapping[str, int], what: str) -> list[str]:
    out = []
    for path, size in sorted(expected.items()):
        if path not in found:
            out.append(f"{what} {path} missing")
        elif found[path] != size:
            out.append(f"{what} {path} has {found[path]} bytes, expected {size}")
    return out


# --- models -----------------------------------------------------------------------------------------------

_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None


def _warm_up() -> None:
    try:
        import mlflow.pytorch  # noqa: F401 - the import alone costs about a second
        from mlflow.models import infer_signature  # noqa: F401
        from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

        # What save_model runs on the model's requirements: the first call in a process builds MLflow's map of
        # installed packages (about a second of reading package metadata).
        warn_dependency_requirement_mismatches(_pip_requirements())
    except Exception:  # noqa: BLE001 - only a warm-up: log_model does the same work itself if this failed
        logging.getLogger(__name__).debug("model logging warm-up failed", exc_info=True)


def warm_model_logging() -> None:
    """Start, once per process, a background thread doing the one-off work of the first :func:`log_model`
    (importing ``mlflow.pytorch`` and building MLflow's map of installed packages, about a second), so that a
    trial pays it while it computes instead of after. :func:`log_model` waits for it; nothing is logged.
    """
    global _warm_thread
    with _warm_lock:
        if _warm_thread is None:
            _warm_thread = threading.Thread(target=_warm_up, name="lgeom-warm-model-logging", daemon=True)
            _warm_thread.start()


def _wait_warm() -> None:
    with _warm_lock:
        thread = _warm_thread
    if thread is not None:
        thread.join()


def _pip_requirements() -> list[str]:
    return [f"torch=={torch.__version__.split('+')[0]}"]


def log_model(
    run: TrackedRun,
    name: str,
    module: nn.Module,
    *,
    step: int = 0,
    tags: Mapping[str, Any] | None = None,
    display_name: str | None = None,
    input_example: Any = None,
) -> ModelRecord:
    """Log ``module`` as an MLflow PyTorch model (pickle serialisation, so the loaded model takes any batch
    size) named ``name``: a LoggedModel in the run's experiment with ``source_run_id`` = the run, linked as
    a run output, tagged on the run as ``lgeom.model.<name> = models:/<id>``, READY once its files are
    listed back with the right sizes.

    Args:
        display_name: the LoggedModel's name in the UI (default ``name``), e.g.
            :func:`lgeom.names.model_name` of the cell and role.
        input_example: a few inputs (array or tensor); saved with the model, and with the module's outputs
            on them they give the model's signature.

    Returns:
        the :class:`ModelRecord` (``.uri`` loads it with :func:`load_model`).

    Raises:
        UploadVerificationError: the model's files did not all arrive (the model is marked FAILED).
    """
    import mlflow.pytorch
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    for what, value in (("model name", name), ("model display name", display_name or name)):
        if not re.fullmatch(r"[A-Za-z0-9_=-]+", value):
            raise ValueError(f"{what}: expected letters, digits, _ = -, got {value!r}")
    _wait_warm()
    client = run.client
    lm = run.call(
        f"creating model {name}",
        client.create_logged_model,
        run.experiment_id,
        name=display_name or name,
        source_run_id=run.run_id,
        tags=clean_mapping(tags or {}) or None,
    )
    rec = ModelRecord(lm.model_id)
    run.manifest.models[name] = rec
    with tempfile.TemporaryDirectory(prefix="lgeom-model-") as tmp:
        local = Path(tmp) / "model"
        meta = Model(
            artifact_path=lm.artifact_location, model_uuid=lm.model_id, run_id=run.run_id, model_id=lm.model_id
        )
        if any(t.device.type != "cpu" for t in [*module.parameters(), *module.buffers()]):
            module = copy.deepcopy(module).cpu()
        example, signature = _signature(module, input_example)
        with _quiet_pickle_warning():
            mlflow.pytorch.save_model(
                module,
                str(local),
                mlflow_model=meta,
                serialization_format="pickle",
                signature=signature,
                input_example=example,
                pip_requirements=_pip_requirements(),
            )
        rec.files = {str(p.relative_to(local)): p.stat().st_size for p in local.rglob("*") if p.is_file()}
        run.call(f"uploading model {name}", client.log_model_artifacts, lm.model_id, str(local))
    found = _list_tree(lambda p: client.list_logged_model_artifacts(lm.model_id, p), None, f"model {name}")
    problems = _compare(rec.files, found, f"model {name} file")
    if problems:
        run.call("marking a model FAILED", client.finalize_logged_model, lm.model_id, "FAILED")
        raise UploadVerificationError(f"model {name} ({lm.model_id}): " + "; ".join(problems))
    run.call(f"finalising model {name}", client.finalize_logged_model, lm.model_id, "READY")
    run.call(f"linking model {name}", client.log_outputs, run.run_id, [LoggedModelOutput(lm.model_id, step)])
    run.call(f"tagging model {name}", client.set_tag, run.run_id, names.model_tag(name), rec.uri)
    return rec


def _signature(module: nn.Module, input_example: Any) -> tuple[Any, Any]:
    """``(example as a float32 array, ModelSignature)`` from the module's eval-mode outputs on
    ``input_example``; ``(None, None)`` without an example.
    """
    if input_example is None:
        return None, None
    from mlflow.models import infer_signature

    x = torch.as_tensor(np.asarray(input_example, dtype=np.float32))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            y = module(x)
    finally:
        module.train(was_training)
    example = x.numpy()
    return example, infer_signature(example, y.detach().cpu().numpy())


@contextmanager
def _quiet_pickle_warning() -> Iterator[None]:
    """Pickle is chosen deliberately (DESIGN.md: pt2 fixes the batch size); drop MLflow's warning about it."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "Pickle or CloudPickle" not in record.getMessage()

    logger = logging.getLogger("mlflow.pytorch")
    f = _Drop()
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)


def model_uris(store: Store, run_id: str) -> dict[str, str]:
    """``{name: "models:/<id>"}`` of the READY models logged for ``run_id`` (e.g. ``{"a": ..., "b": ...}``)."""
    client = store.client()
    run = with_retries(lambda: client.get_run(run_id), what=f"reading run {run_id}")
    return {
        k[len(names.TAG_MODEL_PREFIX) :]: v for k, v in run.data.tags.items() if k.startswith(names.TAG_MODEL_PREFIX)
    }


def load_model(
    store: Store,
    run_id: str,
    name: str,
    *,
    trust_pickle: bool = False,
    dst: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Load the PyTorch model ``name`` (e.g. ``a``) logged for ``run_id``.

    MLflow's PyTorch format is a pickle: loading it runs whatever code the file holds, so anyone who can write
    to the store could run code on the reader's machine. It is refused unless ``trust_pickle`` says the store's
    writers are trusted; the weights alone load safely from the run's checkpoint artifact
    (``endpoints/<name>.pt``, :func:`lgeom.names.endpoint_artifact`) with :func:`lgeom.safe_io.load_plain`.

    Raises:
        PermissionError: ``trust_pickle`` is not set.
        KeyError: no model of that name for the run (lists the names there are).
    """
    import mlflow.artifacts
    import mlflow.pytorch

    if not trust_pickle:
        raise PermissionError(
            f"model {name!r} of run {run_id}: expected trust_pickle=True to load an MLflow PyTorch model (a pickle: "
            "loading it runs code from the store); without trusting the store's writers, download the run's "
            f"checkpoint {names.endpoint_artifact(name)!r} and load it with lgeom.safe_io.load_plain (weights only)"
        )
    uris = model_uris(store, run_id)
    if name not in uris:
        raise KeyError(f"model {name!r} of run {run_id}: expected one of {sorted(uris) or 'none'}, got {name!r}")
    model_id = uris[name].split("/", 1)[1].lstrip("/")
    lm = store.client().get_logged_model(model_id)
    with tempfile.TemporaryDirectory(prefix="lgeom-load-") as tmp:
        local = with_retries(
            lambda: mlflow.artifacts.download_artifacts(
                artifact_uri=lm.artifact_location, dst_path=str(dst or tmp), tracking_uri=store.tracking_uri
            ),
            what=f"downloading model {name}",
        )
        return mlflow.pytorch.load_model(local, map_location="cpu")


def download_artifact(store: Store, run_id: str, path: str, dst: str | os.PathLike[str]) -> Path:
    """Download ``path`` (file or folder) of ``run_id``'s artifacts into ``dst``; returns the local path."""
    client = store.client()
    Path(dst).mkdir(parents=True, exist_ok=True)
    return Path(with_retries(lambda: client.download_artifacts(run_id, path, str(dst)), what=f"downloading {path}"))


def load_logged_curve(store: Store, run_id: str, name: str) -> tuple[Curve, dict[str, Any]]:
    """The curve ``curves/<name>.pt`` of ``run_id`` rebuilt with ``lgeom.curves.load_curve``:
    ``(curve, extra)`` where ``extra`` holds what was saved with it (e.g. the model config).
    """
    with tempfile.TemporaryDirectory(prefix="lgeom-curve-") as tmp:
        local = download_artifact(store, run_id, names.curve_artifact(name), tmp)
        return load_curve(local)
