"""The model registry: the architectures it lists, every full-size model's published parameter count, bad
options, classes and shapes.
"""

from __future__ import annotations

import pytest
import torch

from lgeom.models import available_models, build_model
from lgeom.params import count_params


def test_registry_lists_every_architecture() -> None:
    assert available_models() == ["cnn", "mlp", "preresnet", "rescnn", "resmlp", "vgg16", "wideresnet"]


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        (
            "transformer",
            {},
            r"model name: expected one of cnn, mlp, preresnet, rescnn, resmlp, vgg16, wideresnet, "
            r"torchvision:<name> or a plug-in module:callable, got 'transformer'",
        ),
        ("mlp", {"activation": "swish"}, r"activation: expected one of 'gelu', 'relu', 'tanh', got 'swish'"),
        ("mlp", {"width": 0}, r"mlp width: expected an integer > 0, got 0"),
        ("mlp", {"channels": 3}, r"mlp option: expected one of activation, depth, width, got 'channels'"),
        ("preresnet", {"width": 3}, r"preresnet option: expected one of block, depth, got 'width'"),
    ],
)
def test_bad_model_options_raise_clear_errors(name: str, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        build_model(name, num_classes=10, in_shape=(3, 32, 32), **kwargs)


def test_bad_num_classes_and_shape() -> None:
    with pytest.raises(ValueError, match="num_classes: expected an integer > 0, got 0"):
        build_model("mlp", num_classes=0, in_shape=(2,))
    with pytest.raises(ValueError, match="in_shape: expected a non-empty shape"):
        build_model("mlp", num_classes=2, in_shape=(0, 3))


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
