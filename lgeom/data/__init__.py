"""Dataset registry and batch loaders.

``build_dataset(name, split, root=None, n=None, seed=0, **kw)`` returns a map-style torch ``Dataset`` of
``(input, label)`` pairs with two extra attributes, ``num_classes`` and ``in_shape``. In-memory datasets are
:class:`ArrayDataset`; :func:`make_loader` iterates them without per-sample Python overhead.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lgeom._checks import check_positive_int, expected

# Importing the dataset modules registers them.
from lgeom.data import synthetic, vision  # noqa: F401
from lgeom.data.arrays import ArrayDataset
from lgeom.data.registry import (
    available_datasets,
    build_dataset,
    dataset_option_types,
    dataset_options,
    is_dataset_plugin,
    register_dataset,
)
from lgeom.data.subsets import dataset_labels, random_subset, stratified_indices, stratified_subset
from lgeom.data.vision import DatasetNotFoundError

# --- loaders ---------------------------------------------------------------------------------------------

Batch = tuple[torch.Tensor, torch.Tensor]

#: ``(inputs, targets)`` batches, the ``data`` of lgeom's evaluation and probe functions (which also accept a
#: map-style ``Dataset`` in their place, see :func:`as_batches`).
Batches = Iterable[Batch]


class ArrayLoader:
    """Mini-batches over an :class:`ArrayDataset` by tensor indexing (no per-sample collation).

    Re-iterable; with ``shuffle`` each pass draws a new order from its own seeded generator, so two loaders
    built with the same seed yield the same sequence of batches.
    """

    def __init__(
        self, dataset: ArrayDataset, batch_size: int, *, shuffle: bool, seed: int = 0, drop_last: bool = False
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.dataset.inputs.device)
        else:
            order = None
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if order is None:
                yield self.dataset.inputs[lo:hi], self.dataset.targets[lo:hi]
            else:
                idx = order[lo:hi]
                yield self.dataset.inputs[idx], self.dataset.targets[idx]


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
) -> ArrayLoader | DataLoader:
    """An iterable of ``(inputs, targets)`` batches over ``dataset``.

    In-memory :class:`ArrayDataset` gets a fast :class:`ArrayLoader`; anything else a ``DataLoader``
    with a seeded generator. The last batch may be smaller unless ``drop_last``.

    Raises:
        ValueError: empty dataset or a non-positive batch size.
    """
    check_positive_int("batch_size", batch_size)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise expected("dataset", "a non-empty dataset", "an empty one (0 samples)")
    if isinstance(dataset, ArrayDataset):
        return ArrayLoader(dataset, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=gen,
        drop_last=drop_last,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


#: Batch size used when a map-style dataset is given where batches are expected (evaluation, probes).
EVAL_BATCH_SIZE = 512


def as_batches(data: Dataset | Iterable[Batch], batch_size: int = EVAL_BATCH_SIZE) -> Iterable[Batch]:
    """``data`` as an iterable of ``(inputs, targets)`` batches.

    A map-style ``Dataset`` of ``(input, label)`` samples (e.g. from :func:`build_dataset`) is wrapped in
    :func:`make_loader` (fixed order, batches of ``batch_size``, the last one possibly smaller); anything else
    (a list of batches, a loader) is returned unchanged. Every lgeom entry point that takes ``data`` calls
    this, so datasets and batch iterables are interchangeable there.

    Raises:
        ValueError: a non-positive ``batch_size``, or an empty dataset (``"data: expected a non-empty dataset"``).
    """
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        check_positive_int("batch_size", batch_size)
        if len(data) == 0:  # type: ignore[arg-type]
            raise expected("data", "a non-empty dataset", "an empty one (0 samples)")
        return make_loader(data, batch_size)
    return data


def fixed_batches(dataset: Dataset, batch_size: int, *, n_batches: int | None = None, seed: int = 0) -> list[Batch]:
    """A fixed, materialised list of batches: a seeded random subset of ``n_batches * batch_size`` samples.

    Used wherever the same data must be seen at every parameter point (BatchNorm statistics recompute,
    Hessian probes). ``n_batches=None`` takes the whole dataset in a fixed shuffled order.
    """
    check_positive_int("batch_size", batch_size)
    if n_batches is not None:
        check_positive_int("n_batches", n_batches)
    loader = make_loader(dataset, batch_size, shuffle=True, seed=seed)
    out: list[Batch] = []
    for xb, yb in loader:
        out.append((xb, yb))
        if n_batches is not None and len(out) >= n_batches:
            break
    return out


def dataset_meta(dataset: Dataset) -> tuple[int, tuple[int, ...]]:
    """``(num_classes, in_shape)`` of a dataset built by :func:`build_dataset`."""
    try:
        return int(dataset.num_classes), tuple(dataset.in_shape)  # type: ignore[attr-defined]
    except AttributeError as err:
        raise expected(
            "dataset", "a dataset with num_classes and in_shape (from build_dataset)", type(dataset).__name__
        ) from err


def num_samples(batches: Sequence[Batch] | Any) -> int:
    """Total number of samples in an iterable of batches (iterates it once)."""
    return sum(int(y.shape[0]) for _, y in batches)


__all__ = [
    "ArrayDataset",
    "ArrayLoader",
    "Batch",
    "Batches",
    "DatasetNotFoundError",
    "EVAL_BATCH_SIZE",
    "Splits",
    "as_batches",
    "available_datasets",
    "build_dataset",
    "build_splits",
    "dataset_labels",
    "dataset_meta",
    "dataset_option_types",
    "dataset_options",
    "fixed_batches",
    "is_dataset_plugin",
    "make_loader",
    "num_samples",
    "random_subset",
    "register_dataset",
    "stratified_indices",
    "stratified_subset",
]


class Splits(typing.NamedTuple):
    """The three views of a dataset a study needs."""

    train: Dataset
    """training split as trained on (augmented for CIFAR)"""
    train_eval: Dataset
    """the same samples without augmentation, for evaluating train loss/accuracy"""
    test: Dataset
    """test split"""


def build_splits(
    name: str,
    *,
    root: str | None = None,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    **options: Any,
) -> Splits:
    """Train (as trained on), unaugmented train and test splits of dataset ``name``.

    ``n_train`` / ``n_test`` are the split sizes: the number of samples drawn for synthetic sets, a seeded
    subset for the others (``None``: the dataset's default / all of it).
    """
    opts = dataset_options(name)
    if "n_train" in opts:
        sizes = {k: v for k, v in (("n_train", n_train), ("n_test", n_test)) if v is not None}
        train = build_dataset(name, "train", root=root, seed=seed, **sizes, **options)
        test = build_dataset(name, "test", root=root, seed=seed, **sizes, **options)
        return Splits(train, train, test)
    train = build_dataset(name, "train", root=root, n=n_train, seed=seed, **options)
    test = build_dataset(name, "test", root=root, n=n_test, seed=seed, **options)
    if "augment" in opts and options.get("augment", None) is not False:
        eval_opts = {**options, "augment": False}
        train_eval = build_dataset(name, "train", root=root, n=n_train, seed=seed, **eval_opts)
    else:
        train_eval = train
    return Splits(train, train_eval, test)
