"""The synthetic datasets: split, standardised, seeded; options (clusters, noise)."""

from __future__ import annotations

import pytest
import torch

from lgeom.data import (
    ArrayDataset,
    build_dataset,
)

SYNTHETIC = {
    "moons": ((2,), 2),
    "circles": ((2,), 2),
    "gaussians": ((2,), 3),
    "xor": ((2,), 2),
    "gaussmix256": ((1, 16, 16), 10),
}


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_sets_split_standardise_and_are_seeded(name: str) -> None:
    in_shape, classes = SYNTHETIC[name]
    train = build_dataset(name, "train", n_train=300, n_test=100, seed=3)
    test = build_dataset(name, "test", n_train=300, n_test=100, seed=3)
    assert isinstance(train, ArrayDataset)
    assert (len(train), len(test)) == (300, 100)
    assert train.in_shape == in_shape and train.num_classes == classes
    assert train.inputs.dtype == torch.float32 and train.targets.dtype == torch.long
    assert set(train.targets.tolist()) == set(range(classes))
    flat = train.inputs.reshape(300, -1).double()
    assert torch.allclose(flat.mean(0), torch.zeros(flat.shape[1], dtype=torch.float64), atol=1e-5)
    assert torch.allclose(flat.std(0, unbiased=False), torch.ones(flat.shape[1], dtype=torch.float64), atol=1e-4)
    # train and test are disjoint draws of one seeded sample
    tr_rows = {tuple(r) for r in train.inputs.reshape(300, -1)[:, :4].tolist()}
    assert not tr_rows & {tuple(r) for r in test.inputs.reshape(100, -1)[:, :4].tolist()}
    again = build_dataset(name, "train", n_train=300, n_test=100, seed=3)
    assert torch.equal(again.inputs, train.inputs) and torch.equal(again.targets, train.targets)
    other = build_dataset(name, "train", n_train=300, n_test=100, seed=4)
    assert not torch.equal(other.inputs, train.inputs)


@pytest.mark.parametrize("centers", [2, 3, 4])
def test_gaussians_number_of_clusters(centers: int) -> None:
    ds = build_dataset("gaussians", "train", centers=centers, n_train=200)
    assert ds.num_classes == centers and int(ds.targets.max()) == centers - 1


def test_noise_changes_the_data() -> None:
    low = build_dataset("moons", "train", noise=0.0, n_train=100)
    high = build_dataset("moons", "train", noise=0.5, n_train=100)
    assert not torch.equal(low.inputs, high.inputs)
