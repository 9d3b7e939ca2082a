"""The MNIST comparison preset's tiny variant on real Fashion-MNIST through the CLI:
``lgeom train --preset mnist-arch-tiny data.name=fashion-mnist`` with an empty ``data.root``, which the
loader fills from Debian's ``dataset-fashion-mnist`` package (skipped, with that reason, where it is absent;
``.ci/run`` installs it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lgeom.data.vision import DEBIAN_FASHION_MNIST, FASHION_MNIST_FILES
from pipelines.cli import main

pytestmark = pytest.mark.skipif(
    not all((Path(DEBIAN_FASHION_MNIST) / f"{name}.gz").is_file() for name in FASHION_MNIST_FILES),
    reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FASHION_MNIST}/*.gz absent): "
    "apt-get install dataset-fashion-mnist (.ci/run installs it)",
)


def test_mnist_arch_tiny_trains_on_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    cell = "cnn16/fashion-mnist/adam"
    code = main(
        [
            "train",
            "--preset",
            "mnist-arch-tiny",
            "--cell",
            cell,
            "--no-progress",
            "--no-tracking",
            "data.name=fashion-mnist",
            f"data.root={tmp_path / 'data'}",
            f"output_dir={tmp_path / 'out'}",
            "train.device=cpu",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert all((tmp_path / "data" / "FashionMNIST" / "raw" / name).is_file() for name in FASHION_MNIST_FILES)
    endpoints = tmp_path / "out" / "mnist-arch-tiny" / "cnn16" / "fashion-mnist" / "adam" / "endpoints"
    seed_dirs = sorted(endpoints.glob("*/seed*"))
    assert [d.name for d in seed_dirs] == ["seed0", "seed1"]
    metrics = json.loads((seed_dirs[0] / "metrics.json").read_text())
    assert metrics["cell"] == cell and metrics["config"]["data"]["name"] == "fashion-mnist"
    assert 0 <= metrics["final"]["test"]["acc"] <= 100
    assert f"{cell} seed 1: train acc" in capsys.readouterr().out
