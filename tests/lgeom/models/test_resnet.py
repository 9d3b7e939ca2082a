"""PreResNet: depths, sizes, block types, bad depths."""

from __future__ import annotations

import pytest
import torch

from lgeom.models import build_model
from lgeom.models.resnet import BasicBlock, Bottleneck, PreResNet, projection_shortcut, valid_depths
from lgeom.params import count_params

# The depth study's Table 1 reports ~80k, 370k, 570k, 660k, 1.2M; the issue pins ours near these.
PRERESNET_COUNTS = {8: 78_000, 26: 369_000, 38: 564_000, 65: 683_000, 119: 1_240_000}


@pytest.mark.parametrize("depth", sorted(PRERESNET_COUNTS))
def test_preresnet_depths_build_with_expected_sizes(depth: int) -> None:
    model = build_model("preresnet", num_classes=10, in_shape=(3, 32, 32), depth=depth)
    assert isinstance(model, PreResNet)
    n = count_params(model)
    assert abs(n - PRERESNET_COUNTS[depth]) / PRERESNET_COUNTS[depth] < 0.01, n
    block = model.stages[0][0]
    assert isinstance(block, Bottleneck if depth >= 44 else BasicBlock)
    expected_blocks = (depth - 2) // (9 if depth >= 44 else 6)
    assert all(len(stage) == expected_blocks for stage in model.stages)


def test_preresnet_forward_on_small_and_large_inputs() -> None:
    model = build_model("preresnet", num_classes=100, in_shape=(3, 32, 32), depth=8).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    small = build_model("preresnet", num_classes=10, in_shape=(1, 8, 8), depth=47).eval()
    assert small(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("depth", [10, 44, 45, 7, 0, -4])
def test_preresnet_bad_depth_lists_valid_depths(depth: int) -> None:
    with pytest.raises(
        ValueError, match=r"preresnet depth: expected 6n\+2 below 44 or 9n\+2 .*8, 14, 20, 26, 32, 38, 47, 56, 65"
    ) as err:
        build_model("preresnet", num_classes=10, in_shape=(3, 32, 32), depth=depth)
    assert f"got {depth}" in str(err.value)


def test_valid_depths_contains_the_study_depths() -> None:
    assert {8, 26, 38, 65, 119} <= set(valid_depths(200))


CIFAR = (3, 32, 32)


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


def test_a_shortcut_projects_only_when_the_channels_or_the_resolution_change() -> None:
    assert projection_shortcut(16, 16, 1) is None
    conv = projection_shortcut(16, 32, 1)
    assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1) and conv.bias is None
    strided = projection_shortcut(16, 16, 2)
    assert strided is not None and strided.stride == (2, 2)
