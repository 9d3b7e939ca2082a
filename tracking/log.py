"""Logging results into a run: metrics in batches, series with steps, artifacts, PyTorch models, bundles.

The central call is :func:`log_bundle`, which turns a result bundle (``pipelines.bundle.Bundle``; the
folder layout is read directly, so ``tracking`` does not import ``pipelines``) into a run:

* ``metrics.json`` -> metrics (``log_batch``, step 0; ``null`` -> NaN),
* ``params.json`` -> params (flattened), ``tags.json`` -> tags (credentials dropped / masked),
* ``paths/<path>.csv`` -> metric ``<path>.<column>`` for every numeric column but ``t`` with step = row
  index, and the CSV itself as an artifact,
* ``endpoints/<x>.pt`` -> an MLflow PyTorch model named ``x`` (pickle serialisation, a LoggedModel linked to
  the run as an output and by tag ``lgeom.model.<x>``) when the architecture is given, else an artifact,
* every other file (curves/, spectra/, planes/, figures/, *.json ...) -> an artifact at the same path.

Every upload is recorded in the run's :class:`~tracking.runs.Manifest`; :func:`verify_uploads` lists
the uploaded files back and compares sizes before a run may end FINISHED. Text artifacts are scanned for
secret values (``tracking.redact``) before upload.

For the steps: :func:`log_step_bundle` (one call: run with DESIGN.md tags/params + bundle + verify).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracking.redact import clean_mapping, find_secret
from tracking.runs import (
    TAG_MODEL_PREFIX,
    Manifest,
    ModelRecord,
    TrackedRun,
    ensure_experiment,
    find_finished_run,
    flatten_params,
    run_tags,
    tracked_run,
)
from tracking.store import Store, connect, with_retries

if TYPE_CHECKING:
    from torch import nn

    from lgeom.curves import Curve
    from pipelines.bundle import Bundle
    from pipelines.config import Cell, Config

_METRIC_NAME = re.compile(r"^[A-Za-z0-9_\-. /:]+$")
_TEXT_SUFFIXES = {".json", ".csv", ".txt", ".yaml", ".yml", ".md", ".html", ".log", ".ini", ".toml", ".tsv", ".svg"}
_METRICS_PER_BATCH = 1000
_PARAMS_PER_BATCH = 100
_TAGS_PER_BATCH = 100


class UploadVerificationError(RuntimeError):
    """Uploaded artifacts, listed back from the store, do not match what was logged (missing / wrong size)."""


class SecretInArtifactError(ValueError):
    """A file about to be uploaded contains the value of a credential (names the variable, not the value)."""


# --- scalars ----------------------------------------------------------------------------------------------


def _check_metric_name(name: str) -> None:
    if not _METRIC_NAME.match(name):
        raise ValueError(
            f"metric name: expected letters, digits and _ - . / : or spaces, got {name!r}"
        )


def log_metrics(run: TrackedRun, metrics: Mapping[str, float | None], *, step: int = 0, timestamp_ms: int | None = None) -> None:
    """Log scalar metrics at ``step`` with ``log_batch`` (chunks of 1000); ``None`` is logged as NaN.

    Raises:
        ValueError: a metric name MLflow would reject, or a value that is not a number.
    """
    from mlflow.entities import Metric

    ts = timestamp_ms or int(time.time() * 1000)
    entries = []
    for name, value in metrics.items():
        _check_metric_name(name)
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
    clashes = [f"{k} (logged {existing[k]!r}, now {v!r})" for k, v in flat.items() if k in existing and existing[k] != v]
    if clashes:
        raise ValueError(f"params of run {run.run_id}: expected the values already logged, got different ones for " + ", ".join(clashes))
    items = [Param(k, v) for k, v in flat.items() if k not in existing]
    for i in range(0, len(items), _PARAMS_PER_BATCH):
        chunk = items[i : i + _PARAMS_PER_BATCH]
        run.call(f"logging {len(chunk)} params", run.client.log_batch, run.run_id, params=chunk, synchronous=True)


def set_tags(run: TrackedRun, tags: Mapping[str, Any]) -> None:
    """Set tags (credential-named keys dropped, secret values masked)."""
    from mlflow.entities import RunTag

    from tracking.runs import MAX_TAG_VALUE

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
) -> list[str]:
    """Log every numeric column of ``columns`` (a mapping of name -> values, an ``lgeom.table.Table`` or a
    pandas DataFrame) as metric ``<prefix>.<column>`` with step = row index (or ``steps``); NaN cells are
    not logged (a column probed at some rows only has entries at those steps).

    Returns:
        the metric names logged.

    Raises:
        ValueError: columns of different lengths, or ``steps`` of the wrong length.
    """
    import numpy as np
    from mlflow.entities import Metric

    if hasattr(columns, "columns") and isinstance(getattr(columns, "columns"), Mapping):
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
    names = []
    for name, arr in arrays.items():
        key = f"{prefix}.{name}"
        _check_metric_name(key)
        names.append(key)
        for i, v in enumerate(arr):
            if np.isnan(v):  # sparse columns (e.g. the Hessian probed at some points only): no value, no entry
                continue
            entries.append(Metric(key, float(v), ts, int(steps[i]) if steps is not None else i))
    _log_metric_entries(run, entries)
    return names


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
            infos = with_retries(lambda: run.client.list_artifacts(run.run_id, folder), what=f"listing artifacts {folder or '/'}")
            found.update({i.path: int(i.file_size or 0) for i in infos if not i.is_dir})
        problems += _compare(manifest.artifacts, found, "artifact")
    for name, rec in manifest.models.items():
        found = _list_tree(lambda p, m=rec.model_id: run.client.list_logged_model_artifacts(m, p), None, f"model {name}")
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


def log_model(
    run: TrackedRun,
    name: str,
    module: "nn.Module",
    *,
    step: int = 0,
    tags: Mapping[str, Any] | None = None,
) -> ModelRecord:
    """Log ``module`` as an MLflow PyTorch model (pickle serialisation, so the loaded model takes any batch
    size) named ``name``: a LoggedModel in the run's experiment with ``source_run_id`` = the run, linked as
    a run output, tagged on the run as ``lgeom.model.<name> = models:/<id>``, READY once its files are
    listed back with the right sizes.

    Returns:
        the :class:`~tracking.runs.ModelRecord` (``.uri`` loads it with :func:`load_model`).

    Raises:
        UploadVerificationError: the model's files did not all arrive (the model is marked FAILED).
    """
    import mlflow.pytorch
    import torch
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"model name: expected letters, digits, _ . -, got {name!r}")
    client = run.client
    lm = run.call(
        f"creating model {name}", client.create_logged_model, run.experiment_id,
        name=name, source_run_id=run.run_id, tags=clean_mapping(tags or {}) or None,
    )
    rec = ModelRecord(lm.model_id)
    run.manifest.models[name] = rec
    with tempfile.TemporaryDirectory(prefix="lgeom-model-") as tmp:
        local = Path(tmp) / "model"
        meta = Model(artifact_path=lm.artifact_location, model_uuid=lm.model_id, run_id=run.run_id, model_id=lm.model_id)
        if any(t.device.type != "cpu" for t in [*module.parameters(), *module.buffers()]):
            module = copy.deepcopy(module).cpu()
        with _quiet_pickle_warning():
            mlflow.pytorch.save_model(
                module,
                str(local),
                mlflow_model=meta,
                serialization_format="pickle",
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
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
    run.call(f"tagging model {name}", client.set_tag, run.run_id, f"{TAG_MODEL_PREFIX}{name}", rec.uri)
    return rec


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
    return {k[len(TAG_MODEL_PREFIX):]: v for k, v in run.data.tags.items() if k.startswith(TAG_MODEL_PREFIX)}


def load_model(store: Store, run_id: str, name: str, *, dst: str | os.PathLike[str] | None = None) -> "nn.Module":
    """Load the PyTorch model ``name`` (e.g. ``a``) logged for ``run_id``.

    Raises:
        KeyError: no model of that name for the run (lists the names there are).
    """
    import mlflow.artifacts
    import mlflow.pytorch

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


def load_logged_curve(store: Store, run_id: str, name: str) -> tuple["Curve", dict[str, Any]]:
    """The curve ``curves/<name>.pt`` of ``run_id`` rebuilt with ``lgeom.curves.load_curve``:
    ``(curve, extra)`` where ``extra`` holds what was saved with it (e.g. the model config)."""
    from lgeom.curves import load_curve

    with tempfile.TemporaryDirectory(prefix="lgeom-curve-") as tmp:
        local = download_artifact(store, run_id, f"curves/{name}.pt", tmp)
        return load_curve(local)


# --- bundles ----------------------------------------------------------------------------------------------


def _bundle_root(bundle: "Bundle | str | os.PathLike[str]") -> Path:
    # A Bundle carries its folder in .root; a path is the folder itself (Path.root would be "/").
    root = Path(bundle) if isinstance(bundle, (str, os.PathLike)) else Path(bundle.root)
    if not root.is_dir():
        raise FileNotFoundError(f"bundle: expected a result folder at {root}, got nothing there")
    return root


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"bundle file {path}: expected JSON, got unparsable content ({err})") from err


def log_bundle(run: TrackedRun, bundle: "Bundle | str | os.PathLike[str]", *, model: "nn.Module | None" = None) -> Manifest:
    """Log a result bundle (a ``pipelines.bundle.Bundle`` or its folder) into ``run`` (see module doc).

    Args:
        model: the architecture of the endpoints (any ``nn.Module`` of the right shape; it is not
            modified). With it, ``endpoints/<x>.pt`` become MLflow PyTorch models ``x``; without it they are
            uploaded as plain artifacts under ``endpoints/``.

    Returns:
        the :class:`~tracking.runs.Manifest` of this bundle's uploads (also merged into ``run.manifest``).

    Raises:
        FileNotFoundError: no bundle folder.
        ValueError: unparsable JSON, bad metric names or values; SecretInArtifactError for credentials.
    """
    root = _bundle_root(bundle)
    files = sorted(p for p in root.rglob("*") if p.is_file() and ".tmp" not in p.name)
    rel = {p: p.relative_to(root).as_posix() for p in files}
    added = Manifest()

    if (root / "tags.json").exists():
        set_tags(run, _read_json(root / "tags.json"))
    if (root / "params.json").exists():
        log_params(run, _read_json(root / "params.json"))
    if (root / "metrics.json").exists():
        log_metrics(run, _read_json(root / "metrics.json"))
    for csv_path in sorted((root / "paths").glob("*.csv")):
        from lgeom.table import Table

        log_series(run, csv_path.stem, Table.read_csv(csv_path))

    endpoints = [p for p in files if rel[p].startswith("endpoints/") and p.suffix == ".pt"]
    if model is not None:
        for p in endpoints:
            added.models[p.stem] = log_model(run, p.stem, _endpoint_module(model, p))
    for p in files:
        if model is not None and p in endpoints:
            continue
        parent = rel[p].rsplit("/", 1)[0] if "/" in rel[p] else None
        key = log_artifact(run, p, parent)
        added.artifacts[key] = run.manifest.artifacts[key]
    return added


def _endpoint_module(model: "nn.Module", path: Path) -> "nn.Module":
    """A copy of ``model`` holding the endpoint saved at ``path`` (``{"params", "buffers"}``)."""
    import torch

    from lgeom.params import load_params

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "params" not in state:
        raise ValueError(f"endpoint {path}: expected a dict with 'params' and 'buffers' (Bundle.write_endpoint), got {type(state).__name__}")
    module = copy.deepcopy(model).cpu()
    load_params(module, state["params"], state.get("buffers"))
    return module.eval()


# --- the steps' entry point -------------------------------------------------------------------------------


def log_step_bundle(
    cfg: "Config",
    cell: "Cell | str | None",
    stage: str,
    bundle: "Bundle | str | os.PathLike[str]",
    model: "nn.Module | None" = None,
    *,
    store: Store | None = None,
    study: str | None = None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    reuse: bool = False,
) -> str:
    """Log one step's bundle as its own run and return the run id: what ``connect`` / ``probe`` call.

    The run goes to experiment ``study`` (default ``cfg.name``) in ``store`` (default: resolved from the
    environment and health-checked), with tags ``lgeom.study``, ``lgeom.cell``, ``lgeom.config_hash``
    (``pipelines.config.config_hash`` of the cell's config), ``lgeom.stage`` = ``stage`` and
    ``mlflow.parentRunId`` when ``parent_run_id`` is given; params = the cell's flattened config. It ends
    FINISHED only after every upload is verified, else FAILED with the error (which is re-raised).

    Args:
        cfg: the step's config (a cell's config when ``cell`` is a name or ``None``).
        cell: a ``pipelines.config.Cell`` (its ``.config`` is used), a cell name, or ``None``
            (``cfg`` itself; the name is derived with ``pipelines.config.cell_name``).
        reuse: return the id of a FINISHED run with the same config hash and stage instead of logging.

    Raises:
        tracking.store.StoreUnavailableError: the store does not answer; logging/verification errors.
    """
    from pipelines.config import cell_name, config_hash

    if cell is None:
        cell_cfg, name = cfg, cell_name(cfg, {})
    elif isinstance(cell, str):
        cell_cfg, name = cfg, cell
    else:
        cell_cfg, name = cell.config, cell.name
    study = study or cfg.name
    store = store or connect()
    exp_id = ensure_experiment(store, study)
    h = config_hash(cell_cfg)
    if reuse:
        found = find_finished_run(store, exp_id, h, stage=stage, cell=name)
        if found is not None:
            return found.info.run_id
    tags = run_tags(study=study, stage=stage, cell=name, config_hash=h, parent_run_id=parent_run_id)
    with tracked_run(
        store, experiment_id=exp_id, run_name=run_name or f"{stage}:{name}",
        parent_run_id=parent_run_id, tags=tags, params=cell_cfg.flat(),
    ) as run:
        run.log_bundle(bundle, model=model)
        return run.run_id


def endpoint_name(index: int) -> str:
    """The contract's name of the ``index``-th endpoint of a cell: ``a``, ``b``, ``c`` ..."""
    if not 0 <= index < 26:
        raise ValueError(f"endpoint index: expected 0..25, got {index}")
    return chr(ord("a") + index)


def log_train_result(run: TrackedRun, name: str, module: "nn.Module", result: Any, *, log_model_too: bool = True) -> None:
    """Log one trained endpoint (an ``lgeom.train.TrainResult``) as endpoint ``name`` of ``run``:

    * final metrics ``<name>.train_loss``, ``<name>.train_acc``, ``<name>.test_loss``, ``<name>.test_acc``
      (eval mode, the metric contract's names) plus ``<name>.samples_per_s``, ``<name>.n_params``;
    * the per-epoch history as series ``<name>.history.<column>`` with step = epoch;
    * the trained ``module`` as MLflow PyTorch model ``name`` (when ``log_model_too``).
    """
    from lgeom.params import count_params

    final = {f"{name}.{split}_{k}": getattr(res, k) for split, res in result.final.items() for k in ("loss", "acc")}
    final[f"{name}.samples_per_s"] = result.samples_per_s
    final[f"{name}.n_params"] = count_params(module)
    log_metrics(run, final)
    log_params(run, {"n_params": count_params(module)})
    history = result.history
    epochs = [int(e) for e in history["epoch"]]
    log_series(run, f"{name}.history", history, skip=("epoch",), steps=epochs)
    if log_model_too:
        log_model(run, name, module)


def log_tune_results(
    cfg: "Config",
    cell_name: str,
    outcome: Mapping[str, Any],
    preset_path: str | os.PathLike[str] | None = None,
    *,
    store: Store | None = None,
) -> str:
    """Log a hyperparameter search (``pipelines.tune``) and return the id of its ``tune`` run.

    One parent run (experiment ``cfg.name``, stage ``tune``, tags ``lgeom.cell`` / ``lgeom.config_hash``
    of the tuned cell) with params ``best.<key>``, metric ``best_test_acc`` and the tuned preset file as
    artifact ``tuned/<file>``; one child run per trial (stage ``tune-trial``) with the trial's sampled
    values as params and ``test_acc`` / ``epochs`` as metrics. Trials that failed end FAILED with their
    error recorded.

    Args:
        outcome: ``{"best": {...}, "best_test_acc": float, "trials": [{..., "test_acc", "epochs", "error"}]}``.

    Raises:
        ValueError: ``outcome`` lacks ``best`` or ``trials``; tracking.store.StoreUnavailableError.
    """
    from pipelines.config import config_hash, expand_matrix

    from tracking.runs import end_run, start_run

    if "best" not in outcome or "trials" not in outcome:
        raise ValueError(f"tune outcome: expected keys 'best' and 'trials', got {sorted(outcome)}")
    cells = {c.name: c for c in expand_matrix(cfg)}
    cell_cfg = cells[cell_name].config if cell_name in cells else cfg
    study = cfg.name
    store = store or connect()
    exp_id = ensure_experiment(store, study)
    h = config_hash(cell_cfg)
    tags = run_tags(study=study, stage="tune", cell=cell_name, config_hash=h)
    with tracked_run(store, experiment_id=exp_id, run_name=f"tune:{cell_name}", tags=tags,
                     params={**cell_cfg.flat(), **{f"best.{k}": v for k, v in outcome["best"].items()}}) as parent:
        if outcome.get("best_test_acc") is not None:
            parent.log_metrics({"best_test_acc": outcome["best_test_acc"]})
        if preset_path is not None:
            parent.log_artifact(preset_path, "tuned")
        for i, trial in enumerate(outcome["trials"]):
            values = {k: v for k, v in trial.items() if k not in ("test_acc", "epochs", "error")}
            child_tags = run_tags(study=study, stage="tune-trial", cell=cell_name, parent_run_id=parent.run_id)
            child = start_run(store, experiment_id=exp_id, run_name=f"trial {i}", parent_run_id=parent.run_id,
                              tags=child_tags, params=values, check=False)
            if trial.get("error"):
                end_run(child, "FAILED", error=RuntimeError(str(trial["error"])))
                continue
            try:
                child.log_metrics({k: trial[k] for k in ("test_acc", "epochs") if trial.get(k) is not None})
            except BaseException as err:
                end_run(child, "FAILED", error=err)
                raise
            end_run(child, "FINISHED")
        return parent.run_id
