"""VGG-16: layout and options."""

from __future__ import annotations

import pytest
from torch import nn

from lgeom.models import build_model

CIFAR = (3, 32, 32)


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
