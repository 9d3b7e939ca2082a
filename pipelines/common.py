"""What every step shares: building data and models from a config, training endpoints with checkpoints,
and writing results to the local output folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from lgeom.data import Splits, build_splits
from lgeom.models import build_model
from lgeom.progress import Callback
from lgeom.seed import set_seed
from lgeom.train import TrainResult, train
from pipelines.config import ENDPOINT_SECTIONS, Config, config_hash


def load_splits(cfg: Config) -> Splits:
    """Train (as trained on), unaugmented train and test splits of the configured dataset."""
    d = cfg.data
    return build_splits(d.name, root=d.root, seed=d.seed, **d.options)


def build_cell_model(cfg: Config, splits: Splits) -> nn.Module:
    """A fresh model of the configured architecture, shaped for ``splits`` (uses the current RNG state)."""
    ds = splits.test
    return build_model(cfg.model.arch, num_classes=ds.num_classes, in_shape=ds.in_shape, **cfg.model.options)


def endpoint_key(cfg: Config) -> str:
    """Key of the trained endpoints of ``cfg``: :func:`~pipelines.config.config_hash` of the sections that
    determine an endpoint (model, data, train), without ``train.seeds`` since each endpoint's seed names its
    own folder below the key. Cells that differ only in curve or probe settings, or in settings that do not
    change results, share their endpoints.
    """
    return config_hash(cfg, sections=ENDPOINT_SECTIONS, leave_out=("train.seeds",))


def cell_dir(cfg: Config, cell: str) -> Path:
    """Local output folder of one cell: ``<output_dir>/<config name>/<cell name>``."""
    return Path(cfg.output_dir) / cfg.name / cell


def train_endpoint(
    cfg: Config,
    seed: int,
    splits: Splits,
    out_dir: Path | None,
    *,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = True,
) -> tuple[nn.Module, TrainResult, Path | None]:
    """Train (or resume, or reload) the endpoint with ``seed``; checkpoints live under
    ``out_dir/endpoints/<endpoint_key>/seed<seed>`` so a changed config never resumes a stale run
    (``out_dir=None``: train in memory without checkpoints).

    Returns:
        ``(model, result, checkpoint folder or None)`` with the model holding the trained weights.
    """
    ckpt = out_dir / "endpoints" / endpoint_key(cfg) / f"seed{seed}" if out_dir is not None else None
    set_seed(seed)
    model = build_cell_model(cfg, splits)
    spec = cfg.train.endpoint_spec(seed)
    result = train(
        model,
        splits.train,
        splits.test,
        spec,
        train_eval_data=splits.train_eval,
        callbacks=callbacks,
        progress=progress,
        checkpoint_dir=ckpt,
    )
    return model, result, ckpt


#: Params that only one optimizer family reads: logged only on cells using that family.
_OPTIMIZER_PARAMS = {"momentum": ("sgd",), "nesterov": ("sgd",), "betas": ("adam", "adamw")}
#: Params that only one learning-rate schedule reads.
_SCHEDULE_PARAMS = {"milestones": ("step",), "gamma": ("step",)}


def applicable_params(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened cell config (``Config.flat()``) without what does not apply to the cell: ``None``
    values (defaults left to the library), optimizer settings of another optimizer (no ``train.momentum``
    on an Adam cell, no ``train.betas`` on an SGD cell) and ``step``-schedule settings of other schedules.
    """
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if value is None:
            continue
        section, _, leaf = key.rpartition(".")
        optimizer = flat.get(f"{section}.optimizer")
        schedule = flat.get(f"{section}.schedule")
        if optimizer is not None and leaf in _OPTIMIZER_PARAMS and optimizer not in _OPTIMIZER_PARAMS[leaf]:
            continue
        if schedule is not None and leaf in _SCHEDULE_PARAMS and schedule not in _SCHEDULE_PARAMS[leaf]:
            continue
        out[key] = value
    return out
