"""Image datasets: MNIST and CIFAR-10/100 through torchvision, and sklearn's 8x8 digits.

Files are read by torchvision's own dataset classes from ``root`` (default: ``$LGEOM_DATA`` or ``./data``).
Splits without augmentation are materialised as normalised tensors (:class:`ArrayDataset`) so that
evaluation and Hessian probes do not pay per-sample transforms; CIFAR training splits keep torchvision's
per-sample augmentation (4-pixel padded random crop and horizontal flip).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lgeom._checks import expected
from lgeom.data import ArrayDataset, register_dataset

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
EXPECTED_FILES = {
    "mnist": (
        "MNIST/raw",
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
        "https://ossci-datasets.s3.amazonaws.com/mnist/ (gunzip the four .gz files)",
    ),
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"],
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract it inside the root folder)",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train", "test", "meta"],
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (extract it inside the root folder)",
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """A torchvision dataset's files are missing and could not be downloaded."""


def default_root(root: str | os.PathLike[str] | None) -> Path:
    """``root`` if given, else ``$LGEOM_DATA``, else ``./data``."""
    return Path(root if root is not None else os.environ.get("LGEOM_DATA", "data")).expanduser()


def missing_files_message(name: str, root: Path) -> str:
    """Where to put which files for dataset ``name`` under ``root``."""
    sub, files, source = EXPECTED_FILES[name]
    folder = root / sub
    missing = [f for f in files if not (folder / f).exists()]
    return (
        f"{name}: expected its files under {folder}, missing: {', '.join(missing) or '(files present but unreadable)'}. "
        f"Without network access, download {source} elsewhere and copy the files there; "
        f"with network access pass download=True (config: data.download=true). "
        f"Set another location with root=... (config: data.root) or the LGEOM_DATA variable."
    )


def _open_torchvision(name: str, split: str, root: Path, download: bool, verify_checksums: bool) -> Any:
    import torchvision

    classes = {
        "mnist": torchvision.datasets.MNIST,
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
    }
    cls = classes[name]
    if not verify_checksums and name != "mnist":
        # torchvision checks CIFAR files against the published MD5 sums; a dataset in the same on-disk
        # format but other content (a subset, or generated test files) is accepted when asked for.
        cls = type(
            cls.__name__,
            (cls,),
            {
                "train_list": [[f, None] for f, _ in cls.train_list],
                "test_list": [[f, None] for f, _ in cls.test_list],
                "meta": {**cls.meta, "md5": None},
            },
        )
    try:
        return cls(str(root), train=(split == "train"), download=download)
    except Exception as err:  # torchvision raises RuntimeError for missing files, URLError etc. for network
        raise DatasetNotFoundError(missing_files_message(name, root)) from err


def _normalise(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (images - m) / s


@register_dataset("mnist")
def mnist(split: str, *, root: str | None = None, seed: int = 0, download: bool = False,
          verify_checksums: bool = True) -> ArrayDataset:
    """MNIST 1x28x28, normalised with the usual mean/std; read by ``torchvision.datasets.MNIST``."""
    ds = _open_torchvision("mnist", split, default_root(root), download, verify_checksums)
    images = ds.data.unsqueeze(1).float().div_(255.0)
    return ArrayDataset(_normalise(images, MNIST_MEAN, MNIST_STD), ds.targets.clone(), 10, "mnist")


class AugmentedVision(Dataset):
    """A torchvision dataset with per-sample augmentation, carrying ``num_classes`` and ``in_shape``."""

    def __init__(self, base: Any, num_classes: int, in_shape: tuple[int, ...]) -> None:
        self.base = base
        self.num_classes = num_classes
        self.in_shape = in_shape

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.base[index]


def _cifar(name: str, split: str, root: str | None, download: bool, augment: bool | None,
           verify_checksums: bool) -> Dataset:
    import torchvision.transforms as T

    num_classes = 10 if name == "cifar10" else 100
    mean, std = CIFAR_STATS[name]
    ds = _open_torchvision(name, split, default_root(root), download, verify_checksums)
    if augment is None:
        augment = split == "train"
    if not augment:
        images = torch.as_tensor(np.asarray(ds.data)).permute(0, 3, 1, 2).float().div_(255.0)
        return ArrayDataset(_normalise(images, mean, std), torch.as_tensor(ds.targets), num_classes, name)
    ds.transform = T.Compose(
        [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)]
    )
    return AugmentedVision(ds, num_classes, (3, 32, 32))


@register_dataset("cifar10")
def cifar10(split: str, *, root: str | None = None, seed: int = 0, download: bool = False,
            augment: bool | None = None, verify_checksums: bool = True) -> Dataset:
    """CIFAR-10 3x32x32; ``augment`` (default: on for train) adds random crop with 4-pixel padding and flips."""
    return _cifar("cifar10", split, root, download, augment, verify_checksums)


@register_dataset("cifar100")
def cifar100(split: str, *, root: str | None = None, seed: int = 0, download: bool = False,
             augment: bool | None = None, verify_checksums: bool = True) -> Dataset:
    """CIFAR-100 3x32x32 (fine labels); augmentation as for CIFAR-10."""
    return _cifar("cifar100", split, root, download, augment, verify_checksums)


@register_dataset("digits")
def digits(split: str, *, root: str | None = None, seed: int = 0, test_fraction: float = 0.25) -> ArrayDataset:
    """sklearn's 8x8 handwritten digits (1797 images) as 1x8x8, seeded split, standardised by training statistics."""
    from sklearn.datasets import load_digits

    if not 0 < test_fraction < 1:
        raise expected("test_fraction", "a number in (0, 1)", test_fraction)
    bunch = load_digits()
    x = bunch.images.astype(np.float64)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    train_idx, test_idx = order[n_test:], order[:n_test]
    mean, std = x[train_idx].mean(), x[train_idx].std()
    idx = train_idx if split == "train" else test_idx
    images = torch.as_tensor((x[idx] - mean) / std, dtype=torch.float32).unsqueeze(1)
    return ArrayDataset(images, torch.as_tensor(y[idx]), 10, "digits")
