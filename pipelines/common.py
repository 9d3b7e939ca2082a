"""What every step shares: building data and models from a config, training endpoints with checkpoints,
and writing results to the local output folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from lgeom import names
from lgeom.data import Splits, build_splits, is_dataset_plugin
from lgeom.models import build_model, is_model_plugin
from lgeom.plugins import plugin_digest, plugin_shipping_path
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


def plugins(cfg: Config) -> dict[str, str]:
    """The plug-in builders (``module:callable``) a config uses, by section (``model``, ``data``)."""
    out = {}
    if is_model_plugin(cfg.model.arch):
        out["model"] = cfg.model.arch
    if is_dataset_plugin(cfg.data.name):
        out["data"] = cfg.data.name
    return out


def plugin_tags(cfg: Config) -> dict[str, str]:
    """``lgeom.plugin.<section>`` = ``<module:callable>@<sha256 of its source file>`` for each plug-in of
    ``cfg``: the config hash holds the reference, the tag shows when the file behind it changed.
    """
    return {names.plugin_tag(sec): f"{ref}@{plugin_digest(ref)}" for sec, ref in plugins(cfg).items()}


def plugin_modules(cfgs: Iterable[Config]) -> list[Path]:
    """What Ray workers need to import the plug-ins of ``cfgs``: each plug-in's top-level module file or
    package folder that lies in the working directory or a ``PYTHONPATH`` folder (installed packages are
    expected on the workers already), once each.
    """
    roots = [os.getcwd(), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    found: list[Path] = []
    for cfg in cfgs:
        for ref in plugins(cfg).values():
            path = plugin_shipping_path(ref, roots)
            if path is not None and path not in found:
                found.append(path)
    return found


def trial_settings(cfg: Config) -> dict[str, Any]:
    """A cell's config as the dict a Ray trial rebuilds it from: without the study's matrix, which the cell's
    own settings need not fit (a cell of one architecture holds options another lacks); the matrix does not
    change results.
    """
    data = cfg.to_dict()
    data["study"]["matrix"] = {}
    return data
