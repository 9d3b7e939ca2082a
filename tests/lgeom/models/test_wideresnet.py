"""Wide ResNet: layout and options."""

from __future__ import annotations

import pytest
from torch import nn

from lgeom.models import build_model

CIFAR = (3, 32, 32)


def test_wideresnet_layout_and_options() -> None:
    model = build_model("wideresnet", num_classes=10, in_shape=CIFAR, depth=16, widen_factor=2, dropout=0.3)
    assert [len(stage) for stage in model.stages] == [2, 2, 2]
    assert [stage[0].conv1.out_channels for stage in model.stages] == [32, 64, 128]
    assert isinstance(model.stages[0][0].dropout, nn.Dropout) and model.stages[0][0].dropout.p == 0.3
    with pytest.raises(ValueError, match=r"wideresnet depth: expected 6n\+4 with n >= 1 .*, got 12"):
        build_model("wideresnet", num_classes=10, in_shape=CIFAR, depth=12)
