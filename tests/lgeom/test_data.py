"""Every dataset (synthetic, digits, torchvision loaders on generated files), loaders and bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lgeom.data import (
    ArrayDataset,
    ArrayLoader,
    DatasetNotFoundError,
    available_datasets,
    build_dataset,
    build_splits,
    fixed_batches,
    make_loader,
)
from lgeom.data.vision import AugmentedVision

sys.path.insert(0, str(Path(__file__).parent))
from vision_files import write_cifar, write_mnist  # noqa: E402

SYNTHETIC = {
    "moons": ((2,), 2),
    "circles": ((2,), 2),
    "gaussians": ((2,), 3),
    "xor": ((2,), 2),
    "gaussmix256": ((1, 16, 16), 10),
}


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


def test_digits_are_sklearn_digits() -> None:
    train, test = build_dataset("digits", "train"), build_dataset("digits", "test")
    assert len(train) + len(test) == 1797
    assert train.in_shape == (1, 8, 8) and train.num_classes == 10
    assert abs(float(train.inputs.mean())) < 1e-5


def test_subset_n_is_seeded_and_bounded() -> None:
    a = build_dataset("digits", "train", n=50, seed=1)
    b = build_dataset("digits", "train", n=50, seed=1)
    assert len(a) == 50 and torch.equal(a.inputs, b.inputs)
    with pytest.raises(ValueError, match=r"n: expected at most 1348 \(the size of the digits train split\), got 5000"):
        build_dataset("digits", "train", n=5000)


def test_mnist_through_torchvision_from_idx_files(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path, n_train=20, n_test=10)
    train = build_dataset("mnist", "train", root=str(tmp_path))
    test = build_dataset("mnist", "test", root=str(tmp_path))
    assert (len(train), len(test)) == (20, 10)
    assert train.in_shape == (1, 28, 28) and train.num_classes == 10
    expected = (arrays["train_images"][3].astype(np.float32) / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(train.inputs[3, 0].numpy(), expected, rtol=1e-6, atol=1e-6)
    assert train.targets.tolist() == arrays["train_labels"].tolist()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_through_torchvision_from_pickled_batches(tmp_path: Path, name: str) -> None:
    arrays = write_cifar(tmp_path, name)
    test = build_dataset(name, "test", root=str(tmp_path), verify_checksums=False)
    assert isinstance(test, ArrayDataset) and test.in_shape == (3, 32, 32)
    assert test.num_classes == (10 if name == "cifar10" else 100)
    mean = (0.4914, 0.4822, 0.4465) if name == "cifar10" else (0.5071, 0.4865, 0.4409)
    std = (0.2470, 0.2435, 0.2616) if name == "cifar10" else (0.2673, 0.2564, 0.2762)
    raw = arrays["test"][2].reshape(3, 32, 32).astype(np.float32) / 255.0
    expected = (raw - np.array(mean, dtype=np.float32)[:, None, None]) / np.array(std, dtype=np.float32)[:, None, None]
    np.testing.assert_allclose(test.inputs[2].numpy(), expected, rtol=1e-5, atol=1e-5)

    train = build_dataset(name, "train", root=str(tmp_path), verify_checksums=False)
    assert isinstance(train, AugmentedVision) and len(train) == 20
    torch.manual_seed(0)
    views = torch.stack([train[0][0] for _ in range(8)])
    assert views.shape == (8, 3, 32, 32)
    assert not all(torch.equal(views[0], v) for v in views[1:]), "augmentation should vary the view"
    plain = build_dataset(name, "train", root=str(tmp_path), verify_checksums=False, augment=False)
    assert isinstance(plain, ArrayDataset) and len(plain) == 20
    # every view is a 32x32 crop of the zero-padded (4 pixels) image, flipped or not, then normalised
    m, s = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    padded = torch.nn.functional.pad(plain.inputs[0] * s + m, (4, 4, 4, 4))
    shifts, flips = set(), set()
    for view in torch.stack([train[0][0] for _ in range(40)]):
        raw = view * s + m
        found = [
            (dy, dx, f)
            for dy in range(9)
            for dx in range(9)
            for f in (False, True)
            if torch.allclose(raw, (lambda c: c.flip(-1) if f else c)(padded[:, dy : dy + 32, dx : dx + 32]), atol=1e-5)
        ]
        assert found, "a view that is no padded crop of the image"
        shifts.update((dy, dx) for dy, dx, _ in found)
        flips.update(f for _, _, f in found)
    assert len(shifts) > 5 and flips == {False, True}
    assert any(0 in sh or 8 in sh for sh in shifts), "the 4-pixel padding should be reached"

    splits = build_splits(name, root=str(tmp_path), verify_checksums=False, n_train=8)
    assert isinstance(splits.train, torch.utils.data.Subset) and isinstance(splits.train_eval, ArrayDataset)
    assert len(splits.train) == len(splits.train_eval) == 8


def test_cifar_checksums_are_verified_by_default(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10")
    with pytest.raises(DatasetNotFoundError, match="files present but unreadable"):
        build_dataset("cifar10", "test", root=str(tmp_path))


@pytest.mark.parametrize(
    ("name", "where", "files"),
    [
        ("mnist", "MNIST/raw", "train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-batches-py", "data_batch_1"),
        ("cifar100", "cifar-100-python", "train, test, meta"),
    ],
)
def test_missing_files_say_where_to_put_what(tmp_path: Path, name: str, where: str, files: str) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataset(name, "train", root=str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / where) in msg and files in msg
    assert "download" in msg and "LGEOM_DATA" in msg
    assert isinstance(err.value, FileNotFoundError)


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
