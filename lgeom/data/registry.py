"""The dataset registry: builders by name, their options, and ``build_dataset``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from lgeom._checks import check_choice, check_positive_int, expected, keyword_types
from lgeom.data.arrays import ArrayDataset
from lgeom.plugins import dataset_plugin, is_plugin_ref

SPLITS = ("train", "test")


Builder = Callable[..., Dataset]
_REGISTRY: dict[str, Builder] = {}


def register_dataset(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(split, *, root, seed, **kw) -> Dataset`` under ``name``."""

    def wrap(builder: Builder) -> Builder:
        _REGISTRY[name] = builder
        return builder

    return wrap


def available_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset` (besides plug-ins, ``"module:callable"``)."""
    return sorted(_REGISTRY)


def is_dataset_plugin(name: str) -> bool:
    """Whether the dataset name ``name`` is a plug-in ``module:callable`` (not a registered name)."""
    return name not in _REGISTRY and is_plugin_ref(name)


def _builder(name: str) -> Builder:
    """The builder of a registered dataset or of a plug-in ``"module:callable"`` (see :mod:`lgeom.plugins`)."""
    if is_dataset_plugin(name):
        return dataset_plugin(name)
    check_choice("dataset name", name, _REGISTRY)
    return _REGISTRY[name]


def dataset_options(name: str) -> dict[str, Any]:
    """Keyword options of dataset ``name`` (a registered name or a plug-in) with their defaults."""
    sig = inspect.signature(_builder(name))
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind == p.KEYWORD_ONLY and p.name not in ("root", "seed")
    }


def dataset_option_types(name: str) -> dict[str, Any]:
    """The annotated types of dataset ``name``'s options (resolved, e.g. ``float`` or ``bool | None``); options
    without an annotation, or whose annotation cannot be resolved, are left out.
    """
    options = dataset_options(name)  # checks the name first
    return keyword_types(_builder(name), options)


def build_dataset(
    name: str,
    split: str,
    *,
    root: str | None = None,
    n: int | None = None,
    seed: int = 0,
    **kw: Any,
) -> Dataset:
    """Build a registered dataset split.

    Args:
        name: one of :func:`available_datasets` or a plug-in ``"module:callable"`` (see :mod:`lgeom.plugins`).
        split: ``"train"`` or ``"test"``.
        root: folder holding downloaded files (torchvision datasets only).
        n: keep a seeded random subset of ``n`` samples of the split (all when ``None``).
        seed: seed of the synthetic draw, of the train/test split and of the subset.
        **kw: dataset options (see :func:`dataset_options`), e.g. ``noise`` or ``augment``.

    Returns:
        A map-style dataset with ``num_classes`` and ``in_shape`` attributes.

    Raises:
        ValueError: unknown name, split or option, or ``n`` larger than the split.
        DatasetNotFoundError: files of a torchvision dataset are missing under ``root``.
    """
    builder = _builder(name)
    check_choice("split", split, SPLITS)
    allowed = dataset_options(name)
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise expected(f"{name} option", "one of " + ", ".join(sorted(allowed)), unknown[0])
    if n is not None:
        check_positive_int("n", n)
    ds = builder(split, root=root, seed=seed, **kw)
    if n is not None and n != len(ds):
        if n > len(ds):
            raise expected("n", f"at most {len(ds)} (the size of the {name} {split} split)", n)
        gen = torch.Generator().manual_seed(seed + 7919)
        idx = torch.randperm(len(ds), generator=gen)[:n]
        if isinstance(ds, ArrayDataset):
            ds = ds.subset(idx)
        else:
            sub = Subset(ds, idx.tolist())
            sub.num_classes, sub.in_shape = ds.num_classes, ds.in_shape  # type: ignore[attr-defined]
            ds = sub
    return ds
