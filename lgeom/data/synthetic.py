"""Synthetic classification sets: 2-D toys and a 256-d Gaussian mixture.

Each set draws ``n_train + n_test`` samples from one seeded generator, shuffles them, splits the first
``n_train`` off for training, and standardises both splits with the training mean and standard deviation
(per feature). The same ``seed`` therefore always yields the same, disjoint train and test splits.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import make_circles, make_moons

from lgeom._checks import check_positive, check_positive_int, expected
from lgeom.data.arrays import ArrayDataset
from lgeom.data.registry import register_dataset


def _split_and_standardise(
    x: np.ndarray, y: np.ndarray, split: str, n_train: int, rng: np.random.Generator, num_classes: int, name: str
) -> ArrayDataset:
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    x_train = x[:n_train]
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0) + 1e-8
    x = (x - mean) / std
    part = slice(0, n_train) if split == "train" else slice(n_train, None)
    return ArrayDataset(
        torch.as_tensor(x[part], dtype=torch.float32),
        torch.as_tensor(y[part], dtype=torch.long),
        num_classes=num_classes,
        name=name,
    )


def _sizes(n_train: int, n_test: int) -> int:
    check_positive_int("n_train", n_train)
    check_positive_int("n_test", n_test)
    return n_train + n_test


@register_dataset("moons")
def moons(
    split: str, *, root: str | None = None, seed: int = 0, n_train: int = 1000, n_test: int = 1000, noise: float = 0.2
) -> ArrayDataset:
    """Two interleaving half circles (sklearn ``make_moons``) with Gaussian noise of std ``noise``."""
    check_positive("noise", noise, allow_zero=True)
    x, y = make_moons(_sizes(n_train, n_test), noise=noise, random_state=seed)
    return _split_and_standardise(x, y, split, n_train, np.random.default_rng(seed), 2, "moons")


@register_dataset("circles")
def circles(
    split: str,
    *,
    root: str | None = None,
    seed: int = 0,
    n_train: int = 1000,
    n_test: int = 1000,
    noise: float = 0.1,
    factor: float = 0.5,
) -> ArrayDataset:
    """Two concentric circles (sklearn ``make_circles``), inner radius ``factor``."""
    check_positive("noise", noise, allow_zero=True)
    if not 0 < factor < 1:
        raise expected("factor", "a number in (0, 1)", factor)
    x, y = make_circles(_sizes(n_train, n_test), noise=noise, factor=factor, random_state=seed)
    return _split_and_standardise(x, y, split, n_train, np.random.default_rng(seed), 2, "circles")


@register_dataset("gaussians")
def gaussians(
    split: str,
    *,
    root: str | None = None,
    seed: int = 0,
    n_train: int = 1000,
    n_test: int = 1000,
    centers: int = 3,
    noise: float = 1.0,
    radius: float = 3.0,
) -> ArrayDataset:
    """``centers`` (2-4) isotropic 2-D Gaussian clusters of std ``noise`` on a circle of ``radius``; one class each."""
    if not (isinstance(centers, int) and 2 <= centers <= 4):
        raise expected("centers", "an integer from 2 to 4", centers)
    check_positive("noise", noise)
    rng = np.random.default_rng(seed)
    total = _sizes(n_train, n_test)
    angles = 2 * np.pi * np.arange(centers) / centers
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    y = rng.integers(0, centers, size=total)
    x = means[y] + noise * rng.standard_normal((total, 2))
    return _split_and_standardise(x, y, split, n_train, rng, centers, "gaussians")


@register_dataset("xor")
def xor(
    split: str, *, root: str | None = None, seed: int = 0, n_train: int = 1000, n_test: int = 1000, noise: float = 0.35
) -> ArrayDataset:
    """Four Gaussian clusters at (+-1, +-1) of std ``noise``; label 1 where the signs of the centre differ."""
    check_positive("noise", noise)
    rng = np.random.default_rng(seed)
    total = _sizes(n_train, n_test)
    signs = rng.choice([-1.0, 1.0], size=(total, 2))
    x = signs + noise * rng.standard_normal((total, 2))
    y = (signs[:, 0] != signs[:, 1]).astype(np.int64)
    return _split_and_standardise(x, y, split, n_train, rng, 2, "xor")


@register_dataset("gaussmix256")
def gaussmix256(
    split: str,
    *,
    root: str | None = None,
    seed: int = 0,
    n_train: int = 2000,
    n_test: int = 1000,
    classes: int = 10,
    separation: float = 0.35,
    noise: float = 1.0,
) -> ArrayDataset:
    """A 256-d mixture of ``classes`` Gaussians (means ~ N(0, separation^2 I), std ``noise``), shaped 1x16x16."""
    check_positive_int("classes", classes)
    if classes < 2:
        raise expected("classes", "an integer >= 2", classes)
    check_positive("separation", separation)
    check_positive("noise", noise)
    rng = np.random.default_rng(seed)
    total = _sizes(n_train, n_test)
    means = separation * rng.standard_normal((classes, 256))
    y = rng.integers(0, classes, size=total)
    x = means[y] + noise * rng.standard_normal((total, 256))
    ds = _split_and_standardise(x, y, split, n_train, rng, classes, "gaussmix256")
    return ArrayDataset(ds.inputs.reshape(-1, 1, 16, 16), ds.targets, classes, "gaussmix256")
