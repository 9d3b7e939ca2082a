"""Seeded subsets of a dataset: uniform (:func:`random_subset`) or class-stratified (:func:`stratified_subset`).

A stratified subset of ``n`` of ``N`` samples gives class ``c`` (``m_c`` samples) a share as close to
``n * m_c / N`` as integers allow (largest remainders), and at least one sample to every class present
when ``n`` is at least the number of classes. With 10 classes of 6,000 samples and ``n = 2000``, every class
gets 200 samples:

>>> stratified_counts(torch.tensor([6000] * 10), 2000).tolist()
[200, 200, 200, 200, 200, 200, 200, 200, 200, 200]
>>> stratified_counts(torch.tensor([90, 9, 1]), 10).tolist()
[8, 1, 1]
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

from lgeom._checks import check_positive_int, expected
from lgeom.data.arrays import ArrayDataset

__all__ = ["dataset_labels", "random_subset", "stratified_counts", "stratified_indices", "stratified_subset"]

# Offsets the seed of subset draws from the seeds used for batch orders elsewhere, so that a subset and a
# shuffled order drawn with the same user seed are not the same permutation.
_SUBSET_SEED_OFFSET = 104729


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """The integer labels of every sample of ``dataset`` (``targets`` where the dataset holds them, else read
    sample by sample), as a 1-D ``long`` tensor on the CPU.
    """
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):  # type: ignore[arg-type]
        return torch.as_tensor(targets).reshape(-1).long().cpu()
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)  # type: ignore[arg-type]


def stratified_counts(class_sizes: torch.Tensor, n: int) -> torch.Tensor:
    """Samples to draw from each class for a stratified subset of ``n`` samples.

    Each class's quota is ``n * m_c / N``; counts are the quotas rounded down, plus one for the classes with
    the largest remainders (ties: the lower class index) until they sum to ``n``. When ``n`` is at least the
    number of non-empty classes, a class left with none takes one from the class furthest above its quota.

    Args:
        class_sizes: ``m_c`` per class (non-negative integers).
        n: subset size (``1 <= n <= N``).

    Returns:
        A ``long`` tensor of counts, ``0 <= count_c <= m_c``, summing to ``n``.

    Raises:
        ValueError: ``n`` not in ``1 .. N``, or negative class sizes.
    """
    sizes = torch.as_tensor(class_sizes, dtype=torch.long)
    total = int(sizes.sum())
    if bool((sizes < 0).any()):
        raise expected("class_sizes", "non-negative counts", sizes.tolist())
    check_positive_int("n", n)
    if n > total:
        raise expected("n", f"at most the {total} samples there are", n)
    quota = sizes.double() * n / total
    counts = quota.floor().long()
    short = n - int(counts.sum())
    if short:
        remainder = quota - counts.double()
        # Stable order: largest remainder first, lower class index on ties.
        order = sorted(range(len(sizes)), key=lambda c: (-float(remainder[c]), c))
        for c in order[:short]:
            counts[c] += 1
    present = sizes > 0
    if n >= int(present.sum()):
        for c in torch.nonzero(present & (counts == 0)).flatten().tolist():
            excess = torch.where(counts > 1, counts.double() - quota, torch.full_like(quota, -torch.inf))
            donor = int(torch.argmax(excess))
            counts[donor] -= 1
            counts[c] = 1
    return counts


def stratified_indices(labels: torch.Tensor, n: int, *, seed: int) -> torch.Tensor:
    """Indices of a seeded class-stratified subset of ``n`` of the samples labelled ``labels``.

    Class counts come from :func:`stratified_counts`; within a class the samples are a seeded uniform draw.
    The same labels, ``n`` and ``seed`` give the same indices.

    Returns:
        Sorted ``long`` indices (all of them when ``n >= len(labels)``).

    Raises:
        ValueError: ``n`` < 1, or labels that are not a 1-D tensor of non-negative integers.
    """
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point() or (labels.numel() and int(labels.min()) < 0):
        raise expected("labels", "a 1-D tensor of non-negative integer class labels", tuple(labels.shape))
    check_positive_int("n", n)
    labels = labels.long().cpu()
    if n >= labels.numel():
        return torch.arange(labels.numel())
    counts = stratified_counts(torch.bincount(labels), n)
    gen = torch.Generator().manual_seed(seed + _SUBSET_SEED_OFFSET)
    picked = []
    for c, k in enumerate(counts.tolist()):
        if k:
            members = torch.nonzero(labels == c).flatten()
            picked.append(members[torch.randperm(members.numel(), generator=gen)[:k]])
    return torch.sort(torch.cat(picked)).values


def _take(dataset: Dataset, idx: torch.Tensor) -> Dataset:
    if isinstance(dataset, ArrayDataset):
        return dataset.subset(idx)
    return Subset(dataset, idx.tolist())


def stratified_subset(dataset: Dataset, n: int | None, *, seed: int) -> Dataset:
    """A seeded class-stratified subset of ``n`` samples of ``dataset`` (see :func:`stratified_indices`).

    Returns:
        ``dataset`` itself when ``n`` is ``None`` or at least its size; else an :class:`ArrayDataset` for an
        :class:`ArrayDataset`, a ``Subset`` otherwise.

    Raises:
        ValueError: ``n`` < 1.
    """
    if n is not None:
        check_positive_int("n", n)
    if n is None or n >= len(dataset):  # type: ignore[arg-type]
        return dataset
    return _take(dataset, stratified_indices(dataset_labels(dataset), n, seed=seed))


def random_subset(dataset: Dataset, n: int | None, *, seed: int) -> Dataset:
    """A seeded uniform subset of ``n`` samples of ``dataset`` (``dataset`` itself when ``n`` is ``None`` or at
    least its size), in the order of the seeded permutation.

    Raises:
        ValueError: ``n`` < 1.
    """
    if n is not None:
        check_positive_int("n", n)
    size = len(dataset)  # type: ignore[arg-type]
    if n is None or n >= size:
        return dataset
    return _take(dataset, torch.randperm(size, generator=torch.Generator().manual_seed(seed + _SUBSET_SEED_OFFSET))[:n])
