"""The image presets' tiny variants run every trial stage on files in the real on-disk formats: PreResNet-8
with BatchNorm on CIFAR-10 (resnet-depth-tiny) and the residual CNN on MNIST (mnist-arch-tiny). Every shipped
preset's cells are valid spec objects that round-trip, and no preset leans on a default the config no longer has.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pytest
import yaml

from lgeom.connect import ConnectSpec
from lgeom.probes import ProbeSettings
from lgeom.train import TrainSpec
from pipelines.config import (
    PRESET_DIR,
    available_presets,
    config_from_dict,
    config_hash,
    expand_matrix,
    load_config,
)
from pipelines.trial import StageLog, run_stages, work_dir
from tracking.bundle import Bundle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lgeom"))
from vision_files import write_cifar, write_mnist  # noqa: E402

pytestmark = pytest.mark.slow


def _run(preset: str, cell_name: str, root: Path, out: Path) -> tuple[dict, Bundle]:
    cfg = load_config(preset, [f"data.root={root}", f"output_dir={out}", "train.device=cpu"])
    cell = next(c for c in expand_matrix(cfg) if c.name == cell_name)
    wd = work_dir(cfg.output_dir, cfg.name, cell.name, cell.config)
    bundle = Bundle(wd / "bundle")
    stages = StageLog(wd / "stages.json")
    run_stages(cell.config, cell.name, wd, bundle, stages)
    assert set(stages.done) == {"train", "connect", "probe"}
    return bundle.metrics(), bundle


def _finite(metrics: dict, names: list[str]) -> None:
    for name in names:
        assert metrics.get(name) is not None and math.isfinite(metrics[name]), name


def test_resnet_depth_tiny_runs_every_stage_on_cifar_files(tmp_path: Path) -> None:
    write_cifar(tmp_path / "data", "cifar10", per_batch=16, n_test=32)
    metrics, bundle = _run("resnet-depth-tiny", "preresnet8/cifar10/sgd", tmp_path / "data", tmp_path / "out")
    _finite(
        metrics,
        [
            "endpoint/a/test_acc",
            "endpoint/b/train_loss",
            "barrier/linear/test/loss",
            "barrier/bezier/test/loss",
            "barrier/polychain/test/acc_auc",
            "triangle/bezier/angle_acb_deg",
            "triangle/polychain/dist_ac",
            "hessian/a/lambda_max",
            "hessian/mid/lambda_max",
            "sharpness/b/eps_avg",
        ],
    )
    table = bundle.read_path("bezier")
    assert len(table) == 5 and "hessian_lambda_max" in table
    # BN policy: t = 0 is the trained endpoint A with its own statistics
    assert table["test_acc"][0] == pytest.approx(metrics["endpoint/a/test_acc"])
    assert {"curves/bezier.pt", "curves/polychain.pt", "spectra/mid.json", "planes/bezier.npz"} <= {
        str(p) for p in bundle.files()
    }


def test_mnist_arch_tiny_runs_every_stage_on_mnist_files(tmp_path: Path) -> None:
    write_mnist(tmp_path / "data", n_train=64, n_test=32)
    metrics, bundle = _run("mnist-arch-tiny", "rescnn16/mnist/adam", tmp_path / "data", tmp_path / "out")
    _finite(
        metrics,
        [
            "endpoint/a/test_acc",
            "barrier/linear/test/loss",
            "barrier/linear_aligned/test/loss",
            "triangle/bezier/dist_bc",
            "hessian/a/lambda_max",
            "hessian/a/trace",
            "sharpness/a/eps_worst",
        ],
    )
    assert (bundle.root / "endpoints" / "b_aligned.pt").exists()


@pytest.mark.parametrize("preset", available_presets())
def test_every_cell_of_every_preset_is_made_of_specs_and_round_trips(preset: str) -> None:
    base = load_config(preset)
    for cell in expand_matrix(base):
        cfg = cell.config
        assert isinstance(cfg.curve, ConnectSpec) and isinstance(cfg.probe, ProbeSettings)
        assert all(isinstance(cfg.train.endpoint_spec(s), TrainSpec) for s in cfg.train.seeds)
        data = cfg.to_dict()
        data["study"]["matrix"] = {}  # a cell carries the study's matrix; expanding it again per cell is not the point
        again = dataclasses.replace(config_from_dict(data), study=base.study)
        assert again == cfg and config_hash(again) == config_hash(cfg), cell.name


def _preset_chain(name: str) -> list[dict]:
    data = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
    return ([data] + _preset_chain(data["base"])) if data.get("base") else [data]


@pytest.mark.parametrize("preset", available_presets())
def test_presets_set_the_train_settings_whose_config_default_changed(preset: str) -> None:
    # The train section used to default to 20 epochs and the piecewise schedule; it now takes TrainSpec's
    # defaults (10, constant). Presets set both, so their runs are unchanged.
    train_keys = set().union(*(d.get("train", {}) for d in _preset_chain(preset)))
    assert {"epochs", "schedule"} <= train_keys, preset
