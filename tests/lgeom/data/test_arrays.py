"""In-memory datasets: items, metadata, labels cast to long, subsets, copies, one label per input."""

from __future__ import annotations

import pytest
import torch

from lgeom.data.arrays import ArrayDataset


def _data() -> ArrayDataset:
    gen = torch.Generator().manual_seed(0)
    return ArrayDataset(
        torch.randn(6, 1, 2, 2, generator=gen), torch.tensor([0, 1, 2, 0, 1, 2], dtype=torch.int32), 3, "toy"
    )


def test_items_and_metadata() -> None:
    ds = _data()
    assert len(ds) == 6 and ds.in_shape == (1, 2, 2) and ds.num_classes == 3 and ds.name == "toy"
    assert ds.targets.dtype == torch.long
    x, y = ds[4]
    assert torch.equal(x, ds.inputs[4]) and int(y) == 1


def test_subset_keeps_the_chosen_samples_and_the_metadata() -> None:
    ds = _data()
    sub = ds.subset(torch.tensor([5, 0]))
    assert isinstance(sub, ArrayDataset) and len(sub) == 2 and (sub.num_classes, sub.name) == (3, "toy")
    assert torch.equal(sub.inputs, ds.inputs[[5, 0]]) and sub.targets.tolist() == [2, 0]


def test_to_copies_onto_a_device() -> None:
    ds = _data()
    moved = ds.to("cpu")
    assert moved is not ds and torch.equal(moved.inputs, ds.inputs) and moved.inputs.device.type == "cpu"
    assert (moved.num_classes, moved.in_shape, moved.name) == (3, (1, 2, 2), "toy")


def test_one_label_per_input() -> None:
    with pytest.raises(ValueError, match=r"targets: expected 3 labels \(one per input\), got 2"):
        ArrayDataset(torch.zeros(3, 2), torch.zeros(2), 2)
