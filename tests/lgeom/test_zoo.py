"""The mode-connectivity zoo (VGG16, WideResNet, PreResNet-110/164) and torchvision models through the
registry: published parameter counts, the CIFAR stem, option checks, and a tiny train -> connect (aligned)
-> Hessian probe run of each zoo model on CIFAR-shaped random tensors.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lgeom.connect import ConnectSpec, connect_pair
from lgeom.curves import CurveFitSpec
from lgeom.data import ArrayDataset, fixed_batches
from lgeom.hessian import top_eigenvalues
from lgeom.models import build_model, model_arch_args
from lgeom.models.resnet import BasicBlock, Bottleneck
from lgeom.params import count_params
from lgeom.train import TrainSpec, train

CIFAR = (3, 32, 32)

# Published sizes for CIFAR-10: Garipov et al. (2018) VGG16 15.2M (512-512 classifier with dropout);
# Zagoruyko & Komodakis (2016) WRN-28-10 36.5M; He et al. (2016) PreResNet-110 (basic) and -164
# (bottleneck) 1.7M each.
PUBLISHED = [
    ("vgg16", {}, 15.2e6),
    ("vgg16", {"batchnorm": True}, 15.2e6),
    ("wideresnet", {"depth": 28, "widen_factor": 10}, 36.5e6),
    ("preresnet", {"depth": 110, "block": "basic"}, 1.7e6),
    ("preresnet", {"depth": 164}, 1.7e6),
]


@pytest.mark.parametrize(("arch", "kw", "count"), PUBLISHED, ids=lambda v: str(v))
def test_full_size_models_match_published_parameter_counts(arch: str, kw: dict, count: float) -> None:
    with torch.device("meta"):  # no memory, no init cost: only the shapes matter
        model = build_model(arch, num_classes=10, in_shape=CIFAR, **kw)
    assert abs(count_params(model) - count) / count < 0.05, count_params(model)


def test_preresnet_block_option_picks_the_block_type() -> None:
    with torch.device("meta"):
        basic = build_model("preresnet", num_classes=10, in_shape=CIFAR, depth=110, block="basic")
        default = build_model("preresnet", num_classes=10, in_shape=CIFAR, depth=110)
        small = build_model("preresnet", num_classes=10, in_shape=CIFAR, depth=20, block="bottleneck")
    assert isinstance(basic.stages[0][0], BasicBlock) and len(basic.stages[0]) == 18
    assert isinstance(default.stages[0][0], Bottleneck) and len(default.stages[0]) == 12  # 9n+2 from 44 up, as before
    assert isinstance(small.stages[0][0], Bottleneck) and len(small.stages[0]) == 2
    with pytest.raises(ValueError, match=r"preresnet depth: expected 6n\+2 with basic blocks .*, got 47"):
        build_model("preresnet", num_classes=10, in_shape=CIFAR, depth=47, block="basic")
    with pytest.raises(ValueError, match="preresnet block: expected one of 'auto', 'basic', 'bottleneck', got 'wide'"):
        build_model("preresnet", num_classes=10, in_shape=CIFAR, block="wide")


def test_vgg16_layout_and_options() -> None:
    model = build_model("vgg16", num_classes=10, in_shape=CIFAR, width=4, batchnorm=True, dropout=0.25)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 4, 8, 8, 16, 16, 16, 32, 32, 32, 32, 32, 32]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 13
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 32), (32, 32), (32, 10)]
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.25, 0.25]
    with pytest.raises(
        ValueError, match=r"vgg16 in_shape: expected \(channels, height, width\) with height, width >= 32"
    ):
        build_model("vgg16", num_classes=10, in_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="vgg16 width: expected an integer > 0, got 0"):
        build_model("vgg16", num_classes=10, in_shape=CIFAR, width=0)


def test_wideresnet_layout_and_options() -> None:
    model = build_model("wideresnet", num_classes=10, in_shape=CIFAR, depth=16, widen_factor=2, dropout=0.3)
    assert [len(stage) for stage in model.stages] == [2, 2, 2]
    assert [stage[0].conv1.out_channels for stage in model.stages] == [32, 64, 128]
    assert isinstance(model.stages[0][0].dropout, nn.Dropout) and model.stages[0][0].dropout.p == 0.3
    with pytest.raises(ValueError, match=r"wideresnet depth: expected 6n\+4 with n >= 1 .*, got 12"):
        build_model("wideresnet", num_classes=10, in_shape=CIFAR, depth=12)


# --- torchvision -----------------------------------------------------------------------------------------


def test_torchvision_resnet18_with_a_cifar_stem() -> None:
    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", num_classes=10, in_shape=CIFAR, cifar_stem=True).eval()
    assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(model.maxpool, nn.Identity)
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)
    plain = build_model("torchvision:resnet18", num_classes=10, in_shape=CIFAR)
    assert (plain.conv1.kernel_size, plain.conv1.stride) == ((7, 7), (2, 2)) and isinstance(plain.maxpool, nn.MaxPool2d)
    gray = build_model("torchvision:resnet18", num_classes=10, in_shape=(1, 16, 16), cifar_stem=True).eval()
    assert gray(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_torchvision_options_come_from_the_builder() -> None:
    options = model_arch_args("torchvision:resnet18")
    assert {"cifar_stem", "weights", "zero_init_residual", "groups", "width_per_group"} <= set(options)
    assert options["cifar_stem"] is False and options["weights"] is None
    assert "num_classes" not in options and "in_shape" not in options
    model = build_model("torchvision:resnet18", num_classes=10, in_shape=CIFAR, zero_init_residual=True)
    assert torch.all(model.layer1[0].bn2.weight == 0)


@pytest.mark.parametrize(
    ("name", "kw", "pattern"),
    [
        (
            "torchvision:resnet18",
            {"dropout": 0.1},
            (
                r"torchvision:resnet18 option: expected one of cifar_stem, groups, norm_layer, .*weights, width_per_group, "
                r"zero_init_residual, got 'dropout'"
            ),
        ),
        (
            "torchvision:resnet18",
            {"weights": "IMAGENET1K_V1"},
            (
                r"torchvision:resnet18 weights: expected None \(models are built untrained: there is no network to "
                r"download pretrained weights from\), got 'IMAGENET1K_V1'"
            ),
        ),
        ("torchvision:resnet1000", {}, r"torchvision model: expected one of alexnet, .*resnet18, .*got 'resnet1000'"),
        ("resnet18", {}, r"model name: expected one of cnn, .*wideresnet or torchvision:<name>, got 'resnet18'"),
        (
            "torchvision:vit_b_16",
            {"cifar_stem": True},
            (
                r"torchvision:vit_b_16 cifar_stem: expected a model with an overlapping strided stem convolution, got "
                r"\"a patch embedding 'conv_proj'"
            ),
        ),
    ],
    ids=["unknown-option", "weights", "unknown-member", "no-prefix", "patch-stem"],
)
def test_torchvision_bad_options_raise_clear_errors(name: str, kw: dict, pattern: str) -> None:
    with torch.device("meta"), pytest.raises(ValueError, match=pattern):
        build_model(name, num_classes=10, in_shape=(3, 224, 224), **kw)


# --- the zoo end to end on tiny versions --------------------------------------------------------------------

TINY = [
    ("vgg16", {"width": 2}),
    ("vgg16", {"width": 2, "batchnorm": True}),
    ("wideresnet", {"depth": 10, "widen_factor": 1}),
    ("preresnet", {"depth": 8, "block": "basic"}),
]


def _random_cifar(n: int, seed: int) -> ArrayDataset:
    gen = torch.Generator().manual_seed(seed)
    return ArrayDataset(torch.randn(n, *CIFAR, generator=gen), torch.randint(0, 10, (n,), generator=gen), 10, "noise")


@pytest.mark.parametrize(("arch", "kw"), TINY, ids=lambda v: str(v))
def test_zoo_model_trains_connects_aligns_and_probes(arch: str, kw: dict) -> None:
    train_set, test_set = _random_cifar(16, seed=0), _random_cifar(8, seed=1)
    ends = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model(arch, num_classes=10, in_shape=CIFAR, **kw)
        res = train(model, train_set, None, TrainSpec(epochs=2, batch_size=8, lr=0.05, seed=seed), progress=False)
        assert math.isfinite(res.final["train"].loss)
        ends.append(res)
    a, b = ends
    spec = ConnectSpec(
        kinds=("bezier",),
        points=3,
        align=True,
        bn_batches=1,
        bn_batch_size=8,
        plane=False,
        fit=CurveFitSpec(epochs=1, batch_size=8, seed=0),
        eval_batch_size=16,
    )
    out = connect_pair(
        model,
        a.final_params,
        b.final_params,
        a_buffers=a.final_buffers,
        b_buffers=b.final_buffers,
        train=train_set,
        test=test_set,
        spec=spec,
        progress=False,
    )
    assert set(out.paths) == {"linear", "bezier", "linear_aligned", "bezier_aligned"}
    metrics = out.metrics()
    for key in (
        "linear.test.loss_barrier",
        "bezier_aligned.test.loss_barrier",
        "bezier.dist_ac",
        "align.similarity_after",
    ):
        assert math.isfinite(metrics[key]), key
    assert out.alignment is not None and out.alignment.similarity_after >= out.alignment.similarity_before
    assert any(not torch.equal(p, torch.arange(len(p))) for p in out.alignment.perms.values())
    batches = fixed_batches(train_set, 8, n_batches=1, seed=0)
    eig = top_eigenvalues(model, batches, k=1, params=a.final_params, buffers=a.final_buffers, max_iter=8)
    assert len(eig.values) == 1 and math.isfinite(float(eig.values[0]))
