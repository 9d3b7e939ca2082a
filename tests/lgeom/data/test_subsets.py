"""Seeded subsets: a stratified subset keeps each class's share of the full set (within one sample), gives every
class at least one sample when it can, is the same for the same seed and different for another, and a cap at
or above the size returns the whole set; bad sizes and labels are refused.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from lgeom.data import ArrayDataset
from lgeom.data.subsets import (
    dataset_labels,
    random_subset,
    stratified_counts,
    stratified_indices,
    stratified_subset,
)


def _imbalanced(seed: int = 0) -> ArrayDataset:
    # 4 classes of 500, 300, 150 and 50 samples, shuffled.
    labels = torch.cat([torch.full((m,), c) for c, m in enumerate((500, 300, 150, 50))])
    gen = torch.Generator().manual_seed(seed)
    labels = labels[torch.randperm(labels.numel(), generator=gen)]
    return ArrayDataset(torch.randn(labels.numel(), 3, generator=gen), labels, 4, "imbalanced")


@pytest.mark.parametrize("n", [1, 3, 4, 7, 100, 333, 999])
def test_each_class_keeps_its_share_within_one_sample(n: int) -> None:
    data = _imbalanced()
    sub = stratified_subset(data, n, seed=3)
    assert len(sub) == n
    counts = torch.bincount(sub.targets, minlength=4)
    full = torch.bincount(data.targets, minlength=4)
    share = full.double() * n / len(data)
    if n >= 4:
        assert bool((counts >= 1).all()), counts  # every class present
    # Largest remainders stay within one sample of the exact share; the minimum of one moves at most one
    # sample per class lifted to 1 away from the largest class.
    assert float((counts.double() - share).abs().max()) < 1.0 + (share < 1).sum().item()
    if n in (100, 333, 999):
        assert float((counts.double() - share).abs().max()) < 1.0


def test_the_samples_are_the_datasets_own() -> None:
    data = _imbalanced()
    idx = stratified_indices(data.targets, 100, seed=0)
    assert idx.unique().numel() == 100 and bool((idx[1:] > idx[:-1]).all())  # distinct, sorted
    sub = stratified_subset(data, 100, seed=0)
    assert torch.equal(sub.inputs, data.inputs[idx]) and torch.equal(sub.targets, data.targets[idx])


def test_same_seed_same_subset_other_seed_another() -> None:
    data = _imbalanced()
    a, b, c = (stratified_indices(data.targets, 200, seed=s) for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.bincount(data.targets[a]), torch.bincount(data.targets[c]))  # same class counts


@pytest.mark.parametrize("n", [None, 1000, 5000])
def test_a_cap_at_or_above_the_size_returns_everything(n: int | None) -> None:
    data = _imbalanced()
    assert stratified_subset(data, n, seed=0) is data and random_subset(data, n, seed=0) is data
    if n is not None:
        assert torch.equal(stratified_indices(data.targets, n, seed=0), torch.arange(1000))


def test_counts_round_by_largest_remainders_and_lift_empty_classes() -> None:
    assert stratified_counts(torch.tensor([90, 9, 1]), 10).tolist() == [8, 1, 1]
    assert stratified_counts(torch.tensor([90, 9, 1]), 2).tolist() == [2, 0, 0]  # fewer samples than classes
    assert stratified_counts(torch.tensor([3, 0, 3]), 4).tolist() == [2, 0, 2]  # an absent class gets none
    assert stratified_counts(torch.tensor([5, 5, 5]), 15).tolist() == [5, 5, 5]


def test_other_datasets_are_subset_through_their_labels() -> None:
    x, y = torch.randn(40, 2), torch.arange(40) % 2
    plain = TensorDataset(x, y)
    assert torch.equal(dataset_labels(plain), y)
    sub = stratified_subset(plain, 10, seed=0)
    assert isinstance(sub, Subset) and len(sub) == 10
    assert sorted(int(sub[i][1]) for i in range(10)) == [0] * 5 + [1] * 5
    assert torch.equal(dataset_labels(Subset(plain, [3, 4, 5])), y[3:6])
    assert len(random_subset(plain, 7, seed=1)) == 7


def test_bad_sizes_and_labels_are_refused() -> None:
    data = _imbalanced()
    for bad in (0, -3):
        with pytest.raises(ValueError, match="n: expected"):
            stratified_subset(data, bad, seed=0)
        with pytest.raises(ValueError, match="n: expected"):
            random_subset(data, bad, seed=0)
    with pytest.raises(ValueError, match="labels: expected a 1-D tensor"):
        stratified_indices(torch.zeros(4, 2, dtype=torch.long), 2, seed=0)
    with pytest.raises(ValueError, match="labels: expected a 1-D tensor"):
        stratified_indices(torch.tensor([0.0, 1.0]), 1, seed=0)
    with pytest.raises(ValueError, match="n: expected at most the 10 samples"):
        stratified_counts(torch.tensor([5, 5]), 11)
