"""The dataset registry: the names it lists and bad requests (name, split, options)."""

from __future__ import annotations

import pytest
import torch

from lgeom.data import (
    ArrayDataset,
    available_datasets,
    build_dataset,
    make_loader,
)


def test_registry() -> None:
    assert available_datasets() == [
        "cifar10",
        "cifar100",
        "circles",
        "digits",
        "fashion-mnist",
        "gaussians",
        "gaussmix256",
        "mnist",
        "moons",
        "xor",
    ]


def test_bad_dataset_requests() -> None:
    with pytest.raises(ValueError, match="dataset name: expected one of .*moons.*, got 'imagenet'"):
        build_dataset("imagenet", "train")
    with pytest.raises(ValueError, match="split: expected one of 'test', 'train', got 'val'"):
        build_dataset("moons", "val")
    with pytest.raises(ValueError, match="moons option: expected one of n_test, n_train, noise, got 'centers'"):
        build_dataset("moons", "train", centers=3)
    with pytest.raises(ValueError, match="centers: expected an integer from 2 to 4, got 5"):
        build_dataset("gaussians", "train", centers=5)
    empty = ArrayDataset(torch.zeros(0, 2), torch.zeros(0), 2)
    with pytest.raises(ValueError, match="dataset: expected a non-empty dataset"):
        make_loader(empty, 4)


def test_subset_n_is_seeded_and_bounded() -> None:
    a = build_dataset("digits", "train", n=50, seed=1)
    b = build_dataset("digits", "train", n=50, seed=1)
    assert len(a) == 50 and torch.equal(a.inputs, b.inputs)
    with pytest.raises(ValueError, match=r"n: expected at most 1348 \(the size of the digits train split\), got 5000"):
        build_dataset("digits", "train", n=5000)
