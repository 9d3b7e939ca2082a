"""VGG16 for CIFAR as in the mode-connectivity experiments (Garipov et al. 2018, after Simonyan & Zisserman 2015).

Thirteen 3x3 convolutions in five stages of 64, 128, 256, 512, 512 channels (2, 2, 3, 3, 3 layers), each
stage closed by a 2x2 max-pool, then a classifier of two hidden layers of 512 units with dropout before
each: 15.2M parameters for 10 classes. ``width`` scales every layer (64 is the published network);
``batchnorm`` puts a BatchNorm2d after every convolution (VGG16-BN).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lgeom._checks import check_positive_int, check_unit_interval, expected
from lgeom.models._layers import conv_layout
from lgeom.models.registry import register_model

# Channels per convolution as multiples of ``width``; "M" is a 2x2 max-pool.
VGG16_LAYOUT: tuple[int | str, ...] = (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M")
POOLS = VGG16_LAYOUT.count("M")


class VGG(nn.Module):
    """Convolutional ``features``, flatten, ``classifier`` (dropout-linear-relu twice, then linear).

    Parameter names: ``features.<i>.*`` (convolutions and BatchNorms in order), ``classifier.{1,4,6}.*``.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, width: int, batchnorm: bool, dropout: float) -> None:
        super().__init__()
        c_in, h, w = in_shape
        layers: list[nn.Module] = []
        channels = c_in
        for item in VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = int(item) * width
            layers.append(nn.Conv2d(channels, out, 3, padding=1))
            if batchnorm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
            channels = out
        self.features = nn.Sequential(*layers)
        hidden = 8 * width
        positions = (h >> POOLS) * (w >> POOLS)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(channels * positions, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` of images ``x`` of shape ``(batch, channels, height, width)``."""
        return self.classifier(torch.flatten(self.features(conv_layout(x)), 1))


@register_model("vgg16")
def build_vgg16(
    *,
    num_classes: int,
    in_shape: Sequence[int],
    batchnorm: bool = False,
    width: int = 64,
    dropout: float = 0.5,
) -> VGG:
    """VGG16 for ``(channels, H, W)`` inputs with H, W >= 32 (five 2x2 pools).

    Args:
        num_classes, in_shape: as in :func:`~lgeom.models.build_model`.
        batchnorm: a BatchNorm2d after every convolution.
        width: channels of the first stage (64 published; the others are 2x, 4x, 8x, 8x and the classifier's
            hidden layers 8x).
        dropout: drop probability before each hidden classifier layer.

    Raises:
        ValueError: a non-image ``in_shape`` or one smaller than 32x32, a bad ``width`` or ``dropout``.
    """
    if len(in_shape) != 3 or min(in_shape[1], in_shape[2]) < 2**POOLS:
        raise expected("vgg16 in_shape", f"(channels, height, width) with height, width >= {2**POOLS}", tuple(in_shape))
    check_positive_int("vgg16 width", width)
    check_unit_interval("vgg16 dropout", dropout)
    return VGG(in_shape, num_classes, width, bool(batchnorm), float(dropout))
