"""The result bundle: one local folder per run that steps write and ``tracking`` logs to MLflow.

Steps (train, connect, probe, a study trial) write their results into a :class:`Bundle`; ``tracking``
turns a bundle into an MLflow run (metrics in batches, series with steps, artifacts) without knowing how
the results were computed. Layout, which is also the run's artifact layout (DESIGN.md):

```
metrics.json          flat {metric name: float} using the metric contract's names
                      (a.test_loss, linear.test.loss_barrier, bezier.angle_acb_deg, hessian.mid.lambda_max ...)
params.json           flat {param name: value} (the cell config, n_params, ...)
tags.json             {tag: value} (lgeom.cell, lgeom.stage, ...)
paths/<path>.csv      column t plus train_loss, train_acc, test_loss, test_acc, hessian_lambda_max ...;
                      every column but t is logged as metric "<path>.<column>" with step = row index
curves/<curve>.pt     lgeom.curves.save_curve output (control points + model config to rebuild)
spectra/<point>.json  eigenvalues, trace, density of the Hessian at a point (a, b, mid, ...)
planes/<curve>.npz    plane basis coordinates and loss/accuracy grids
figures/<name>.png    matplotlib figures
endpoints/<a|b>.pt    {"params", "buffers"} of trained endpoints (logged as MLflow PyTorch models)
*.json                anything else a step records (e.g. probes.json)
```
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lgeom.curves import Curve, save_curve
from lgeom.safe_io import save_plain, unique_temp_path
from lgeom.table import Table


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
        self.write_json("metrics.json", current)

    def metrics(self) -> dict[str, float | None]:
        """The scalar metrics recorded so far."""
        return dict(self.read_json("metrics.json", {}))

    def add_params(self, params: Mapping[str, Any]) -> None:
        """Merge parameters into ``params.json``."""
        self.write_json("params.json", {**self.read_json("params.json", {}), **params})

    def add_tags(self, tags: Mapping[str, str]) -> None:
        """Merge tags into ``tags.json``."""
        self.write_json("tags.json", {**self.read_json("tags.json", {}), **{k: str(v) for k, v in tags.items()}})

    # --- typed results -----------------------------------------------------------------------------
    def write_path(self, name: str, table: Table) -> Path:
        """Write a path table to ``paths/<name>.csv``."""
        path = self.root / "paths" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = unique_temp_path(path)
        try:
            table.to_csv(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def read_path(self, name: str) -> Table:
        """Read ``paths/<name>.csv``."""
        return Table.read_csv(self.root / "paths" / f"{name}.csv")

    def path_names(self) -> list[str]:
        """Names of the path tables in the bundle."""
        return sorted(p.stem for p in (self.root / "paths").glob("*.csv"))

    def write_curve(self, name: str, curve: Curve, **extra: Any) -> Path:
        """Save a curve (control points + ``extra``, e.g. the model config) to ``curves/<name>.pt``."""
        return save_curve(self.root / "curves" / f"{name}.pt", curve, **extra)

    def write_spectrum(self, point: str, spectrum: Mapping[str, Any]) -> Path:
        """Write Hessian results at ``point`` to ``spectra/<point>.json``."""
        return self.write_json(f"spectra/{point}.json", spectrum)

    def write_plane(self, name: str, arrays: Mapping[str, Any]) -> Path:
        """Write plane arrays to ``planes/<name>.npz``."""
        path = self.root / "planes" / f"{name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = unique_temp_path(path).with_suffix(".npz")  # np.savez appends .npz to any other name
        try:
            np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def write_endpoint(self, name: str, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor]) -> Path:
        """Save an endpoint's parameters and buffers to ``endpoints/<name>.pt`` (plain data, read back with
        ``weights_only=True``)."""
        return save_plain({"params": dict(params), "buffers": dict(buffers)}, self.root / "endpoints" / f"{name}.pt")

    def figure_path(self, name: str) -> Path:
        """Where figure ``name`` goes: ``figures/<name>.png`` (folder created)."""
        path = self.root / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def files(self) -> list[Path]:
        """Every file in the bundle, relative to its root (temporary files excluded)."""
        return sorted(
            p.relative_to(self.root) for p in self.root.rglob("*") if p.is_file() and ".tmp" not in p.name
        )


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (temp file + rename); tensors and arrays become lists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, default=_json_default)
    tmp = unique_temp_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
