"""The loaders of ``lgeom.data``: batches, seeded shuffles, fixed batches."""

from __future__ import annotations

import torch

from lgeom.data import (
    ArrayLoader,
    build_dataset,
    fixed_batches,
    make_loader,
)


def test_array_loader_batches_and_seeded_shuffle() -> None:
    ds = build_dataset("moons", "train", n_train=105)
    loader = make_loader(ds, 20, shuffle=True, seed=5)
    assert isinstance(loader, ArrayLoader) and len(loader) == 6
    sizes = [len(y) for _, y in loader]
    assert sizes == [20] * 5 + [5]
    first = torch.cat([x for x, _ in make_loader(ds, 20, shuffle=True, seed=5)])
    same = torch.cat([x for x, _ in make_loader(ds, 20, shuffle=True, seed=5)])
    assert torch.equal(first, same)
    assert sorted(first[:, 0].tolist()) == sorted(ds.inputs[:, 0].tolist())
    assert len(make_loader(ds, 20, drop_last=True)) == 5


def test_fixed_batches_are_fixed() -> None:
    ds = build_dataset("moons", "train", n_train=100)
    a = fixed_batches(ds, 16, n_batches=3, seed=2)
    b = fixed_batches(ds, 16, n_batches=3, seed=2)
    assert len(a) == 3 and all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, b))
