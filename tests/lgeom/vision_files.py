"""Writers of tiny datasets in the real MNIST (idx) and CIFAR (pickled batches) on-disk formats."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np


def write_mnist(
    root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0, folder: str = "MNIST"
) -> dict[str, np.ndarray]:
    """Write ``root/<folder>/raw/*-idx?-ubyte`` files (``folder="FashionMNIST"`` for Fashion-MNIST's
    layout, the same format); returns the arrays written.
    """
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())
        out[f"{prefix}_images"], out[f"{prefix}_labels"] = images, labels
    return out


def write_cifar(root: Path, name: str, per_batch: int = 4, n_test: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a tiny CIFAR-10 (5 train batches + test) or CIFAR-100 (train + test) in the python-pickle format."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, classes, label_key = root / "cifar-10-batches-py", 10, "labels"
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_file, meta_file, meta = "test_batch", "batches.meta", {"label_names": [f"c{i}" for i in range(10)]}
    else:
        folder, classes, label_key = root / "cifar-100-python", 100, "fine_labels"
        train_files = ["train"]
        test_file, meta_file, meta = "test", "meta", {"fine_label_names": [f"c{i}" for i in range(100)]}
        per_batch *= 5
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for fname, n, split in [(f, per_batch, "train") for f in train_files] + [(test_file, n_test, "test")]:
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, classes, size=n).tolist()
        entry = {"data": data, label_key: labels, "batch_label": fname}
        if name == "cifar100":
            entry["coarse_labels"] = [lab // 5 for lab in labels]
        with open(folder / fname, "wb") as fh:
            pickle.dump(entry, fh)
        written[split].append(data)
    with open(folder / meta_file, "wb") as fh:
        pickle.dump(meta, fh)
    return {k: np.concatenate(v) for k, v in written.items()}
