"""torchvision classifiers as lgeom models: the CIFAR stem, options from the builder, bad options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lgeom.models import build_model, model_arch_args

CIFAR = (3, 32, 32)


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
                r"torchvision:resnet18 option: expected one of cifar_stem, groups, norm_layer, .*weights, "
                r"width_per_group, zero_init_residual, got 'dropout'"
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
        (
            "resnet18",
            {},
            r"model name: expected one of cnn, .*wideresnet, torchvision:<name> or a plug-in module:callable, "
            r"got 'resnet18'",
        ),
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
