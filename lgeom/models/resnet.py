"""Pre-activation ResNet for CIFAR (He et al. 2016, "Identity Mappings in Deep Residual Networks").

Stages of 16, 32, 64 planes. Depth ``6n + 2`` uses ``n`` basic blocks per stage (depth < 44);
depth ``9n + 2`` uses ``n`` bottleneck blocks with 4x expansion (depth >= 44). The ``block`` option picks
the block type regardless of depth: He et al.'s PreResNet-110 (1.7M parameters) is ``depth=110,
block="basic"``; PreResNet-164 (1.7M) is ``depth=164`` with the default bottleneck blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lgeom._checks import check_choice, check_positive_int, expected
from lgeom.models._layers import conv_layout
from lgeom.models.registry import register_model

STAGE_PLANES = (16, 32, 64)
BLOCK_CHOICES = ("auto", "basic", "bottleneck")


def projection_shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Conv2d | None:
    """The shortcut of a residual block: a 1x1 convolution when the block changes the channel count or the
    resolution, else ``None`` (the identity).
    """
    return (
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        if stride != 1 or in_planes != out_planes
        else None
    )


class BasicBlock(nn.Module):
    """bn-relu-conv3x3-bn-relu-conv3x3 with an identity or 1x1-conv shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut = projection_shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output ``(batch, planes, h / stride, w / stride)`` for ``x`` ``(batch, in_planes, h, w)``."""
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


class Bottleneck(nn.Module):
    """bn-relu-conv1x1, bn-relu-conv3x3 (stride), bn-relu-conv1x1 (x4) with a shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        out = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut = projection_shortcut(in_planes, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output ``(batch, 4 planes, h / stride, w / stride)`` for ``x`` ``(batch, in_planes, h, w)``."""
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


class PreActivationResNet(nn.Module):
    """The skeleton shared by the pre-activation CIFAR ResNets (PreResNet, WideResNet): conv3x3 stem ->
    stages of residual blocks -> bn-relu -> global average pool -> linear.

    Subclasses build it in order: :meth:`_add_stem`, then their blocks, then :meth:`_add_stages_and_head`
    (which also initialises every layer: He normal fan-out convolutions, identity BatchNorms, zero head bias).
    Parameter names: ``conv1.weight``, ``stages.<s>.<b>.*``, ``bn.*``, ``head.*``.
    """

    def _add_stem(self, in_channels: int, planes: int) -> None:
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)

    def _add_stages_and_head(self, stages: Sequence[Sequence[nn.Module]], out_planes: int, num_classes: int) -> None:
        self.stages = nn.Sequential(*(nn.Sequential(*blocks) for blocks in stages))
        self.bn = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()
        self.head = nn.Linear(out_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` of images ``x`` of shape ``(batch, channels, height, width)``."""
        h = self.stages(conv_layout(self.conv1(conv_layout(x))))
        h = self.relu(self.bn(h))
        return self.head(h.mean(dim=(2, 3)))


class PreResNet(PreActivationResNet):
    """conv3x3(16) -> 3 stages of blocks -> bn-relu -> global average pool -> linear.

    Parameter names: ``conv1.weight``, ``stages.<s>.<b>.{bn1,conv1,...,shortcut}.*``, ``bn.*``, ``head.*``.
    """

    def __init__(self, depth: int, in_channels: int, num_classes: int, block: str = "auto") -> None:
        super().__init__()
        self.depth = depth
        block_type, n = block_layout(depth, block)
        self.block_type = block_type.__name__
        self.blocks_per_stage = n
        self._add_stem(in_channels, STAGE_PLANES[0])
        in_planes = STAGE_PLANES[0]
        stages = []
        for s, planes in enumerate(STAGE_PLANES):
            blocks = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(block_type(in_planes, planes, stride))
                in_planes = planes * block_type.expansion
            stages.append(blocks)
        self._add_stages_and_head(stages, in_planes, num_classes)


def valid_depths(limit: int = 200) -> list[int]:
    """Depths up to ``limit`` that fit ``6n+2`` (< 44, basic) or ``9n+2`` (>= 44, bottleneck)."""
    basic = [6 * n + 2 for n in range(1, 8) if 6 * n + 2 < 44]
    bottleneck = [9 * n + 2 for n in range(1, limit) if 44 <= 9 * n + 2 <= limit]
    return basic + bottleneck


def block_layout(depth: int, block: str = "auto") -> tuple[type[nn.Module], int]:
    """Block type and blocks per stage for ``depth``.

    Args:
        depth: total depth, ``6n+2`` for basic blocks, ``9n+2`` for bottleneck blocks.
        block: ``"auto"`` (basic below 44, bottleneck from 44 up), ``"basic"`` or ``"bottleneck"``.

    Raises:
        ValueError: an unknown ``block``, or a ``depth`` that fits no formula of the block type, listing the
            valid depths.
    """
    check_choice("preresnet block", block, BLOCK_CHOICES)
    if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 8:
        basic_ok = (depth - 2) % 6 == 0
        bottleneck_ok = depth >= 11 and (depth - 2) % 9 == 0
        if block == "auto":
            if depth < 44 and basic_ok:
                return BasicBlock, (depth - 2) // 6
            if depth >= 44 and bottleneck_ok:
                return Bottleneck, (depth - 2) // 9
        elif block == "basic" and basic_ok:
            return BasicBlock, (depth - 2) // 6
        elif block == "bottleneck" and bottleneck_ok:
            return Bottleneck, (depth - 2) // 9
    if block == "basic":
        raise expected("preresnet depth", "6n+2 with basic blocks (8, 14, 20, ..., 110, ...)", depth)
    if block == "bottleneck":
        raise expected("preresnet depth", "9n+2 with bottleneck blocks (11, 20, 29, ..., 164, ...)", depth)
    depths = valid_depths(164)
    raise ValueError(
        f"preresnet depth: expected 6n+2 below 44 or 9n+2 from 44 up (valid depths include "
        f"{', '.join(map(str, depths))}, ...), got {depth!r}"
    )


@register_model("preresnet")
def build_preresnet(*, num_classes: int, in_shape: Sequence[int], depth: int = 8, block: str = "auto") -> PreResNet:
    """Pre-activation CIFAR ResNet of the given depth for ``(channels, H, W)`` inputs; ``block`` as in
    :func:`block_layout` (``depth=110, block="basic"`` is He et al.'s PreResNet-110).
    """
    block_layout(depth, block)
    if len(in_shape) != 3:
        raise expected("preresnet in_shape", "(channels, height, width)", tuple(in_shape))
    check_positive_int("preresnet in channels", in_shape[0])
    return PreResNet(depth, in_shape[0], num_classes, block)
