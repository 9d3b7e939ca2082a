"""Image datasets: MNIST, Fashion-MNIST and CIFAR-10/100 through torchvision, and sklearn's 8x8 digits.

Files are read by torchvision's own dataset classes from ``root`` (default: ``$LGEOM_DATA`` or ``./data``).
Fashion-MNIST can also come from Debian's ``dataset-fashion-mnist`` package (gzipped IDX files in
``/usr/share/datasets/fashion-mnist``): :func:`prepare_fashion_mnist` decompresses them into the layout
torchvision reads (``<root>/FashionMNIST/raw/``), and the ``fashion-mnist`` loader does so by itself when
files are missing under ``root`` and that folder exists.
Splits without augmentation are materialised as normalised tensors (:class:`ArrayDataset`) so that
evaluation and Hessian probes do not pay per-sample transforms; CIFAR training splits keep torchvision's
per-sample augmentation (4-pixel padded random crop and horizontal flip).
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lgeom._checks import expected
from lgeom.data.arrays import ArrayDataset
from lgeom.data.registry import register_dataset

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
#: Pixel mean and standard deviation of the 60,000 Fashion-MNIST training images (scaled to [0, 1]).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
#: Where Debian's ``dataset-fashion-mnist`` package puts the gzipped IDX files.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
#: The official download site of the gzipped Fashion-MNIST files (torchvision's mirror).
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
#: The four uncompressed Fashion-MNIST files: name -> (IDX magic number, number of items).
FASHION_MNIST_FILES: dict[str, tuple[int, int]] = {
    "train-images-idx3-ubyte": (0x803, 60000),
    "train-labels-idx1-ubyte": (0x801, 60000),
    "t10k-images-idx3-ubyte": (0x803, 10000),
    "t10k-labels-idx1-ubyte": (0x801, 10000),
}
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
    "fashion-mnist": (
        "FashionMNIST/raw",
        list(FASHION_MNIST_FILES),
        f"{FASHION_MNIST_URL} (gunzip the four .gz files)",
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


def missing_files_message(name: str, root: Path, note: str = "") -> str:
    """Where to put which files for dataset ``name`` under ``root``; ``note`` is appended as is."""
    sub, files, source = EXPECTED_FILES[name]
    folder = root / sub
    missing = [f for f in files if not (folder / f).exists()]
    offline = ""
    if name == "fashion-mnist":
        offline = (
            f"Offline on Debian/Ubuntu: apt-get install dataset-fashion-mnist, then "
            f"python -c \"from lgeom.data.vision import prepare_fashion_mnist; prepare_fashion_mnist('{root}')\" "
            f"decompresses {DEBIAN_FASHION_MNIST}/*.gz there "
            f"(the loader does this itself when that folder exists, unless source=None). "
        )
    return (
        f"{name}: expected its files under {folder}, "
        f"missing: {', '.join(missing) or '(files present but unreadable)'}. "
        f"{offline}"
        f"Without network access, download {source} elsewhere and copy the files there; "
        f"with network access pass download=True (config: data.download=true). "
        f"Set another location with root=... (config: data.root) or the LGEOM_DATA variable.{note}"
    )


def _open_torchvision(name: str, split: str, root: Path, download: bool, verify_checksums: bool, note: str = "") -> Any:
    import torchvision

    classes = {
        "mnist": torchvision.datasets.MNIST,
        "fashion-mnist": torchvision.datasets.FashionMNIST,
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
    }
    cls = classes[name]
    if not verify_checksums and name not in ("mnist", "fashion-mnist"):
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
        raise DatasetNotFoundError(missing_files_message(name, root, note)) from err


def _normalise(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (images - m) / s


@register_dataset("mnist")
def mnist(
    split: str, *, root: str | None = None, seed: int = 0, download: bool = False, verify_checksums: bool = True
) -> ArrayDataset:
    """MNIST 1x28x28, normalised with the usual mean/std; read by ``torchvision.datasets.MNIST``."""
    ds = _open_torchvision("mnist", split, default_root(root), download, verify_checksums)
    images = ds.data.unsqueeze(1).float().div_(255.0)
    return ArrayDataset(_normalise(images, MNIST_MEAN, MNIST_STD), ds.targets.clone(), 10, "mnist")


# --- Fashion-MNIST from Debian's dataset-fashion-mnist package -------------------------------------------


def _check_idx(path: Path, magic: int, count: int, what: str) -> None:
    """Raise ``ValueError`` unless ``path`` is an uncompressed IDX file of ``count`` 28x28 images
    (``magic`` 0x803) or ``count`` labels in 0..9 (``magic`` 0x801), with exactly the bytes that implies.
    """
    header_len = 16 if magic == 0x803 else 8
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.read(header_len)
        if len(header) < header_len:
            raise expected(what, f"an IDX file of at least {header_len} bytes", f"{size} bytes")
        got_magic, got_count = struct.unpack(">II", header[:8])
        if got_magic != magic:
            raise expected(f"{what} magic number", f"0x{magic:08x}", f"0x{got_magic:08x}")
        if got_count != count:
            raise expected(f"{what} item count", str(count), got_count)
        if magic == 0x803:
            rows, cols = struct.unpack(">II", header[8:16])
            if (rows, cols) != (28, 28):
                raise expected(f"{what} image size", "28x28", f"{rows}x{cols}")
            want = header_len + count * 28 * 28
        else:
            want = header_len + count
            labels = np.frombuffer(fh.read(count + 1), dtype=np.uint8)
            if labels.size == count and int(labels.max()) > 9:
                raise expected(f"{what} labels", "values in 0..9", int(labels.max()))
    if size != want:
        raise expected(f"{what} size", f"{want} bytes", f"{size} bytes")


def _idx_ok(path: Path, magic: int, count: int) -> bool:
    """Whether ``path`` exists and passes :func:`_check_idx`."""
    try:
        _check_idx(path, magic, count, str(path))
    except (OSError, ValueError):
        return False
    return True


def prepare_fashion_mnist(
    root: str | os.PathLike[str] | None = None,
    source: str | os.PathLike[str] = DEBIAN_FASHION_MNIST,
) -> Path:
    """Lay out Fashion-MNIST for torchvision: decompress ``source/*.gz`` into ``<root>/FashionMNIST/raw/``.

    ``source`` holds the four gzipped IDX files as shipped by Debian's ``dataset-fashion-mnist`` package
    (``apt-get install dataset-fashion-mnist``) or the official site. Each file is decompressed to a temporary
    name in the destination folder, checked (IDX magic number, item count, 28x28 images, labels in 0..9, size
    implied by the header) and only then renamed into place, so a reader never sees a half-written file and
    concurrent calls are safe. Idempotent: a destination file that already passes the same checks is kept
    (nothing is read from ``source`` for it); one that does not is replaced.

    Offline, without this package: ``python -c "from lgeom.data.vision import prepare_fashion_mnist;
    prepare_fashion_mnist('data')"``.

    Args:
        root: data root (default: ``$LGEOM_DATA`` or ``./data``, as for the loaders).
        source: folder of ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
            ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``.

    Returns:
        The folder now holding the four uncompressed files (``<root>/FashionMNIST/raw``).

    Raises:
        DatasetNotFoundError: a ``.gz`` file is missing from ``source``.
        ValueError: a decompressed file is not the expected Fashion-MNIST IDX file (nothing is written then).
        OSError: the destination cannot be written, or a ``.gz`` file is corrupt.
    """
    src = Path(source).expanduser()
    raw = default_root(root) / "FashionMNIST" / "raw"
    todo = {name: spec for name, spec in FASHION_MNIST_FILES.items() if not _idx_ok(raw / name, *spec)}
    if not todo:
        return raw
    missing = [f"{name}.gz" for name in todo if not (src / f"{name}.gz").is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"fashion-mnist source: expected the gzipped IDX files in {src}, missing: {', '.join(missing)}. "
            f"Install them with apt-get install dataset-fashion-mnist (Debian/Ubuntu; they land in "
            f"{DEBIAN_FASHION_MNIST}) or download them from {FASHION_MNIST_URL}."
        )
    raw.mkdir(parents=True, exist_ok=True)
    for name, (magic, count) in todo.items():
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=raw)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, gzip.open(src / f"{name}.gz", "rb") as inp:
                shutil.copyfileobj(inp, out, length=1 << 20)
                out.flush()
                os.fsync(out.fileno())
            _check_idx(tmp, magic, count, f"{src / name}.gz (decompressed)")
            os.chmod(tmp, 0o644)
            os.replace(tmp, raw / name)
        finally:
            tmp.unlink(missing_ok=True)
    return raw


@register_dataset("fashion-mnist")
def fashion_mnist(
    split: str,
    *,
    root: str | None = None,
    seed: int = 0,
    download: bool = False,
    verify_checksums: bool = True,
    source: str | None = DEBIAN_FASHION_MNIST,
) -> ArrayDataset:
    """Fashion-MNIST 1x28x28 (10 clothing classes), normalised with its own training mean/std; read by
    ``torchvision.datasets.FashionMNIST`` from ``<root>/FashionMNIST/raw/``.

    When a file is missing there and the folder ``source`` exists (default: where Debian's
    ``dataset-fashion-mnist`` package puts the gzipped files), :func:`prepare_fashion_mnist` first lays them
    out under ``root``; ``source=None`` never does. ``verify_checksums`` is accepted for symmetry with the other
    torchvision sets and has no effect (torchvision checks MNIST-style files only when downloading).

    Raises:
        DatasetNotFoundError: the files are missing and could be neither laid out from ``source`` nor
            downloaded; the message names the folder, the files, and how to get them offline.
    """
    base = default_root(root)
    note = ""
    raw = base / "FashionMNIST" / "raw"
    if source is not None and Path(source).is_dir() and not all((raw / f).exists() for f in FASHION_MNIST_FILES):
        try:
            prepare_fashion_mnist(base, source)
        except (OSError, ValueError) as err:
            note = f" (Laying them out from {source} failed: {err})"
    ds = _open_torchvision("fashion-mnist", split, base, download, verify_checksums, note)
    images = ds.data.unsqueeze(1).float().div_(255.0)
    return ArrayDataset(
        _normalise(images, FASHION_MNIST_MEAN, FASHION_MNIST_STD), ds.targets.clone(), 10, "fashion-mnist"
    )


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


def _cifar(
    name: str, split: str, root: str | None, download: bool, augment: bool | None, verify_checksums: bool
) -> Dataset:
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
def cifar10(
    split: str,
    *,
    root: str | None = None,
    seed: int = 0,
    download: bool = False,
    augment: bool | None = None,
    verify_checksums: bool = True,
) -> Dataset:
    """CIFAR-10 3x32x32; ``augment`` (default: on for train) adds random crop with 4-pixel padding and flips."""
    return _cifar("cifar10", split, root, download, augment, verify_checksums)


@register_dataset("cifar100")
def cifar100(
    split: str,
    *,
    root: str | None = None,
    seed: int = 0,
    download: bool = False,
    augment: bool | None = None,
    verify_checksums: bool = True,
) -> Dataset:
    """CIFAR-100 3x32x32 (fine labels); augmentation as for CIFAR-10."""
    return _cifar("cifar100", split, root, download, augment, verify_checksums)


@register_dataset("digits")
def digits(split: str, *, root: str | None = None, seed: int = 0, test_fraction: float = 0.25) -> ArrayDataset:
    """Sklearn's 8x8 handwritten digits (1797 images) as 1x8x8, seeded split, standardised by training statistics."""
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
