"""Wide residual network for CIFAR (Zagoruyko & Komodakis 2016), the WRN-28-10 of Garipov et al. (2018).

A 3x3 convolution to 16 channels, three stages of ``(depth - 4) / 6`` pre-activation blocks of 16k, 32k and
64k channels (k = ``widen_factor``; the first block of stages 2 and 3 halves the resolution), then
BN-ReLU, global average pooling and a linear head. WRN-28-10 has 36.5M parameters for 10 classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lgeom._checks import check_positive_int, check_unit_interval, expected
from lgeom.models.registry import register_model
from lgeom.models.resnet import PreActivationResNet, projection_shortcut

STAGE_CHANNELS = (16, 32, 64)


class WideBlock(nn.Module):
    """bn-relu-conv3x3 (stride), bn-relu, dropout, conv3x3, plus the input (or a 1x1 projection of its
    activation when the channel count or the resolution changes).
    """

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = projection_shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output ``(batch, planes, h / stride, w / stride)`` for ``x`` ``(batch, in_planes, h, w)``."""
        act = self.relu(self.bn1(x))
        out = self.conv2(self.dropout(self.relu(self.bn2(self.conv1(act)))))
        # The projection reads the activated input, as in the original network.
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(PreActivationResNet):
    """conv3x3(16) -> 3 stages of :class:`WideBlock` -> bn-relu -> global average pool -> linear.

    Parameter names: ``conv1.weight``, ``stages.<s>.<b>.{bn1,conv1,bn2,conv2,shortcut}.*``, ``bn.*``,
    ``head.*``.
    """

    def __init__(self, depth: int, widen_factor: int, dropout: float, in_channels: int, num_classes: int) -> None:
        super().__init__()
        n = (depth - 4) // 6
        self._add_stem(in_channels, STAGE_CHANNELS[0])
        in_planes = STAGE_CHANNELS[0]
        stages = []
        for s, channels in enumerate(STAGE_CHANNELS):
            planes = channels * widen_factor
            blocks = []
            for b in range(n):
                blocks.append(WideBlock(in_planes, planes, 2 if (s > 0 and b == 0) else 1, dropout))
                in_planes = planes
            stages.append(blocks)
        self._add_stages_and_head(stages, in_planes, num_classes)


@register_model("wideresnet")
def build_wideresnet(
    *,
    num_classes: int,
    in_shape: Sequence[int],
    depth: int = 28,
    widen_factor: int = 10,
    dropout: float = 0.0,
) -> WideResNet:
    """WRN-``depth``-``widen_factor`` for ``(channels, H, W)`` inputs.

    Args:
        num_classes, in_shape: as in :func:`~lgeom.models.build_model`.
        depth: ``6n + 4`` (10, 16, 22, 28, 40, ...), ``n`` blocks per stage.
        widen_factor: channel multiplier k of the stages (16k, 32k, 64k).
        dropout: drop probability between the two convolutions of each block (0: none).

    Raises:
        ValueError: a depth that is not ``6n + 4``, a bad ``widen_factor``, ``dropout`` or ``in_shape``.
    """
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 10 or (depth - 4) % 6:
        raise expected("wideresnet depth", "6n+4 with n >= 1 (10, 16, 22, 28, 40, ...)", depth)
    check_positive_int("wideresnet widen_factor", widen_factor)
    check_unit_interval("wideresnet dropout", dropout)
    if len(in_shape) != 3:
        raise expected("wideresnet in_shape", "(channels, height, width)", tuple(in_shape))
    return WideResNet(depth, widen_factor, float(dropout), in_shape[0], num_classes)
