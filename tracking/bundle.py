"""The result bundle: one local folder per run that steps write and :func:`log_bundle` turns into a run.

Steps (train, connect, probe, a study trial) write their results into a :class:`Bundle`; :func:`log_bundle`
logs it to MLflow (metrics in batches, series with steps, artifacts) without knowing how the results were
computed. The layout, which is also the run's artifact layout, uses ``lgeom.names`` (the metric contract):

```
metrics.json          flat {metric name: float} (endpoint/a/test_loss, barrier/linear/test/loss,
                      hessian/mid/lambda_max ...)
                      -> metrics (log_batch, step 0; null -> NaN)
params.json           flat {param name: value} (the cell config, n_params, ...) -> params (flattened)
tags.json             {tag: value} (lgeom.cell, lgeom.stage, ...) -> tags (credentials dropped / masked)
paths/<path>.csv      column t plus train_loss, train_acc, test_loss, test_acc, hessian_lambda_max ...;
                      every numeric column but t -> metric "path/<path>/<column>" with step = row index, and the
                      CSV itself as an artifact
curves/<curve>.pt     lgeom.curves.save_curve output (control points + model config to rebuild)
spectra/<point>.json  eigenvalues, trace, density of the Hessian at a point (a, b, mid, ...)
planes/<curve>.npz    plane basis coordinates and loss/accuracy grids
figures/<name>.png    matplotlib figures
figure_inputs.json    what draws each figure from the data files (pipelines.figures; lets a study defer them)
training/<e>_sharpness.csv  tracked lambda_max and 2/lr per epoch of an endpoint
endpoints/<a|b>.pt    {"params", "buffers"} of trained endpoints -> an MLflow PyTorch model named a / b
                      (pickle serialisation, linked to the run and tagged lgeom.model.<x>) when the
                      architecture is given, else an artifact
*.json                anything else a step records (e.g. probes.json); every other file -> an artifact at
                      the same path
```
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lgeom import names
from lgeom.curves import Curve, save_curve
from lgeom.params import load_params
from lgeom.safe_io import load_plain, save_plain, write_atomically
from lgeom.table import Table
from tracking.log import (
    Manifest,
    ModelRecord,
    TrackedRun,
    log_artifacts,
    log_metrics,
    log_model,
    log_params,
    log_series,
    set_tags,
)


class Bundle:
    """A result folder with helpers that write each kind of result atomically."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"Bundle({self.root})"

    # --- json documents --------------------------------------------------------------------------
    def write_json(self, relpath: str, obj: Any) -> Path:
        """Write ``obj`` as JSON to ``relpath`` inside the bundle (atomic)."""
        return write_json(self.root / relpath, obj)

    def read_json(self, relpath: str, default: Any = None) -> Any:
        """Read a JSON document of the bundle (``default`` when missing)."""
        path = self.root / relpath
        if not path.exists():
            return default
        return json.loads(path.read_text())

    def add_metrics(self, metrics: Mapping[str, float]) -> None:
        """Merge scalar metrics into ``metrics.json`` (non-finite values are kept as null)."""
        current = self.metrics()
        for k, v in metrics.items():
            v = float(v)
            current[k] = v if math.isfinite(v) else None
        self.write_json(names.METRICS_FILE, current)

    def metrics(self) -> dict[str, float | None]:
        """The scalar metrics recorded so far."""
        return dict(self.read_json(names.METRICS_FILE, {}))

    def add_params(self, params: Mapping[str, Any]) -> None:
        """Merge parameters into ``params.json``."""
        self.write_json(names.PARAMS_FILE, {**self.read_json(names.PARAMS_FILE, {}), **params})

    def add_tags(self, tags: Mapping[str, str]) -> None:
        """Merge tags into ``tags.json``."""
        self.write_json(
            names.TAGS_FILE, {**self.read_json(names.TAGS_FILE, {}), **{k: str(v) for k, v in tags.items()}}
        )

    # --- typed results -----------------------------------------------------------------------------
    def write_path(self, name: str, table: Table) -> Path:
        """Write a path table to ``paths/<name>.csv``."""
        return self.write_table(names.path_table_artifact(name), table)

    def read_path(self, name: str) -> Table:
        """Read ``paths/<name>.csv``."""
        return Table.read_csv(self.root / names.path_table_artifact(name))

    def write_table(self, relpath: str, table: Table) -> Path:
        """Write ``table`` as CSV to ``relpath`` inside the bundle (atomic; outside ``paths/`` it is an artifact
        only, not logged as series).
        """
        return write_atomically(self.root / relpath, table.to_csv)

    def path_names(self) -> list[str]:
        """Names of the path tables in the bundle."""
        return sorted(p.stem for p in (self.root / names.PATHS_DIR).glob("*.csv"))

    def write_curve(self, name: str, curve: Curve, **extra: Any) -> Path:
        """Save a curve (control points + ``extra``, e.g. the model config) to ``curves/<name>.pt``."""
        return save_curve(self.root / names.curve_artifact(name), curve, **extra)

    def write_spectrum(self, point: str, spectrum: Mapping[str, Any]) -> Path:
        """Write Hessian results at ``point`` to ``spectra/<point>.json``."""
        return self.write_json(names.spectrum_artifact(point), spectrum)

    def write_plane(self, name: str, arrays: Mapping[str, Any]) -> Path:
        """Write plane arrays to ``planes/<name>.npz``."""
        # keep_suffix: np.savez appends .npz to any other name
        return write_atomically(
            self.root / names.plane_artifact(name),
            lambda tmp: np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()}),
            keep_suffix=True,
        )

    def write_endpoint(
        self, name: str, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor]
    ) -> Path:
        """Save an endpoint's parameters and buffers to ``endpoints/<name>.pt`` (plain data, read back with
        ``weights_only=True``).
        """
        return save_plain({"params": dict(params), "buffers": dict(buffers)}, self.root / names.endpoint_artifact(name))

    def figure_path(self, name: str) -> Path:
        """Where figure ``name`` goes: ``figures/<name>.png`` (folder created)."""
        path = self.root / names.figure_artifact(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def files(self) -> list[Path]:
        """Every file in the bundle, relative to its root (temporary files excluded)."""
        return sorted(p.relative_to(self.root) for p in self.root.rglob("*") if p.is_file() and ".tmp" not in p.name)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (temp file + rename); tensors and arrays become lists."""
    text = json.dumps(obj, indent=2, default=_json_default)
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# --- logging a bundle ----------------------------------------------------------------------------------------------


def _bundle_root(bundle: Bundle | str | os.PathLike[str]) -> Path:
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


def log_bundle(
    run: TrackedRun,
    bundle: Bundle | str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    cell: str | None = None,
    input_example: Any = None,
) -> Manifest:
    """Log a result bundle (a :class:`Bundle` or its folder) into ``run`` (see module doc).

    Three independent parts go at once, each from its own thread and client: tags, params, metrics and series;
    the endpoint models; every other file, in one ``log_artifacts`` upload. All three end before an error is
    raised, and everything uploaded is in ``run.manifest`` for the verification before FINISHED.

    Args:
        model: the architecture of the endpoints (any ``nn.Module`` of the right shape; it is not
            modified). With it, ``endpoints/<x>.pt`` become MLflow PyTorch models ``x``; without it they are
            uploaded as plain artifacts under ``endpoints/``.
        cell: names the models by cell and role (:func:`lgeom.names.model_name`, e.g.
            ``mlp2x16-moons-sgd-a``) instead of by role only.
        input_example: a few model inputs, saved with each model and giving its signature.

    Returns:
        the :class:`~tracking.log.Manifest` of this bundle's uploads (also merged into ``run.manifest``).

    Raises:
        FileNotFoundError: no bundle folder.
        ValueError: unparsable JSON, bad metric names or values; SecretInArtifactError for credentials.
    """
    root = _bundle_root(bundle)
    files = sorted(p for p in root.rglob("*") if p.is_file() and ".tmp" not in p.name)
    rel = {p: p.relative_to(root).as_posix() for p in files}
    endpoints = [p for p in files if rel[p].startswith(f"{names.ENDPOINTS_DIR}/") and p.suffix == ".pt"]
    uploads = [
        (p, rel[p].rsplit("/", 1)[0] if "/" in rel[p] else None)
        for p in files
        if not (model is not None and p in endpoints)
    ]

    def values(lane: TrackedRun) -> None:
        if (root / names.TAGS_FILE).exists():
            set_tags(lane, _read_json(root / names.TAGS_FILE))
        if (root / names.PARAMS_FILE).exists():
            log_params(lane, _read_json(root / names.PARAMS_FILE))
        if (root / names.METRICS_FILE).exists():
            log_metrics(lane, _read_json(root / names.METRICS_FILE))
        for csv_path in sorted((root / names.PATHS_DIR).glob("*.csv")):
            log_series(lane, csv_path.stem, Table.read_csv(csv_path))

    def models(lane: TrackedRun) -> dict[str, ModelRecord]:
        if model is None:
            return {}
        return {
            p.stem: log_model(
                lane,
                p.stem,
                _endpoint_module(model, p),
                input_example=input_example,
                display_name=names.model_name(cell, p.stem) if cell else None,
            )
            for p in endpoints
        }

    # Three independent lanes at once, each with its own client: metric rows (the store's database),
    # models (serialising, uploading, listing back) and the other files (one upload of the folder tree).
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="lgeom-log-bundle") as pool:
        lanes = [pool.submit(fn, run.with_own_client()) for fn in (values, models)]
        lanes.append(pool.submit(log_artifacts, run.with_own_client(), uploads))
        wait(lanes)  # every lane ends before an error propagates (the run is then ended FAILED)
    for lane in lanes:
        if lane.exception() is not None:
            raise lane.exception()  # type: ignore[misc]
    added = Manifest()
    added.models.update(lanes[1].result())
    added.artifacts.update(lanes[2].result())
    return added


def _endpoint_module(model: nn.Module, path: Path) -> nn.Module:
    """A copy of ``model`` holding the endpoint saved at ``path`` (``{"params", "buffers"}``)."""
    state = load_plain(path, "endpoint")
    if not isinstance(state, dict) or "params" not in state:
        raise ValueError(
            f"endpoint {path}: expected a dict with 'params' and 'buffers' (Bundle.write_endpoint), "
            f"got {type(state).__name__}"
        )
    module = copy.deepcopy(model).cpu()
    load_params(module, state["params"], state.get("buffers"))
    return module.eval()
