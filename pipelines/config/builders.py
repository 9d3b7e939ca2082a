"""What the model and dataset builders of lgeom take: their options with defaults and annotated types, the
data's shape without loading image files, and a model built once to check its options (both cached).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

from lgeom._checks import keyword_types
from lgeom.data import (
    available_datasets,
    build_dataset,
    build_splits,
    dataset_option_types,
    dataset_options,
)
from lgeom.models import build_model, model_arch_args, model_arch_types
from lgeom.plugins import is_plugin_ref
from pipelines.config.sections import DataConfig

#: The key of an open section that chooses its builder.
CHOSEN_BY = {"model": "arch", "data": "name"}


def data_option_defaults(name: str) -> dict[str, Any]:
    """Options of dataset ``name`` with their defaults: the split sizes every dataset takes (keywords of
    ``lgeom.data.build_splits``) and the keywords of its builder.
    """
    sig = inspect.signature(build_splits)
    sizes = {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind == p.KEYWORD_ONLY and p.name not in ("root", "seed")
    }
    return {**sizes, **dataset_options(name)}


def builder_options(section: str, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(options with defaults, their annotated types)`` of the model (``section`` "model") or dataset
    (``section`` "data") ``name`` (None: unknown name).
    """
    try:
        return _builder_options(section, name)
    except ValueError:
        return None


def builder_problem(section: str, name: str) -> str | None:
    """Why ``name`` names no model (``section`` "model") or dataset (``section`` "data") builder: the
    resolver's own message for a ``prefix:member`` or plug-in ``module:callable`` name (naming the module,
    the attribute and the search path), None for a plain unknown name or a known one.
    """
    if ":" not in str(name):
        return None
    try:
        _builder_options(section, name)
    except ValueError as err:
        return str(err)
    return None


def _builder_options(section: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if section == "model":
        # a registered name, a family member ("torchvision:resnet18") or a plug-in ("mynets:build_vit")
        return model_arch_args(name), model_arch_types(name)
    if name not in available_datasets() and not is_plugin_ref(name):
        raise ValueError(f"unknown dataset {name!r}")
    sizes = keyword_types(build_splits, ("n_train", "n_test"))
    return data_option_defaults(name), {**sizes, **dataset_option_types(name)}


def hashable_options(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """``options`` hashable and order-free, for the caches below (list values become tuples)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))


@functools.lru_cache(maxsize=256)
def check_model_builds(
    arch: str, options: tuple[tuple[str, Any], ...], in_shape: tuple[int, ...], num_classes: int
) -> None:
    """Build the model ``arch`` with ``options`` (see :func:`hashable_options`) for data of ``in_shape`` and
    ``num_classes``; raises what the builder raises.
    """
    build_model(arch, num_classes=num_classes, in_shape=in_shape, **dict(options))


def data_shape(d: DataConfig) -> tuple[tuple[int, ...], int]:
    """``(in_shape, num_classes)`` of the configured dataset without loading image files."""
    return _data_shape(
        d.name, d.seed, hashable_options({k: v for k, v in d.options.items() if k not in ("n_train", "n_test")})
    )


@functools.lru_cache(maxsize=256)
def _data_shape(name: str, seed: int, options: tuple[tuple[str, Any], ...]) -> tuple[tuple[int, ...], int]:
    """:func:`data_shape` by hashable arguments (cached): known image sets by table, others by building a few
    samples.
    """
    known = {
        "mnist": ((1, 28, 28), 10),
        "fashion-mnist": ((1, 28, 28), 10),
        "cifar10": ((3, 32, 32), 10),
        "cifar100": ((3, 32, 32), 100),
    }
    if name in known:
        return known[name]
    # A few samples are enough to learn the shape (and to try every option).
    sizes = {"n_train": 8, "n_test": 8} if "n_train" in dataset_options(name) else {}
    ds = build_dataset(name, "test", seed=seed, **dict(options), **sizes)
    return tuple(ds.in_shape), int(ds.num_classes)
