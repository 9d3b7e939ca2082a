"""Small convolutional models for the MLP / CNN / residual-CNN comparison (MNIST, digits, 16x16 inputs)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lgeom._checks import check_positive_int, expected
from lgeom.models._layers import conv_layout, init_weights, make_activation
from lgeom.models.registry import register_model


class CNN(nn.Module):
    """conv3x3 -> act -> conv3x3 -> act -> 2x2 max-pool -> linear head; ``residual`` adds a 1x1 skip.

    With ``residual`` the second activation sees ``conv2(act(conv1(x))) + skip(x)`` where ``skip`` is a 1x1
    convolution from the input channels. With ``batchnorm`` a BatchNorm2d follows each 3x3 convolution.
    Parameter names: ``conv1.*``, ``conv2.*``, ``skip.*`` (residual), ``bn1.*``, ``bn2.*`` (batchnorm),
    ``head.*``.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        channels: int,
        activation: str,
        residual: bool,
        batchnorm: bool,
    ) -> None:
        super().__init__()
        c_in, h, w = in_shape
        self.activation_name = activation
        self.act = make_activation(activation)
        self.conv1 = nn.Conv2d(c_in, channels, 3, padding=1, bias=not batchnorm)
        self.bn1 = nn.BatchNorm2d(channels) if batchnorm else nn.Identity()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=not batchnorm)
        self.bn2 = nn.BatchNorm2d(channels) if batchnorm else nn.Identity()
        self.skip = nn.Conv2d(c_in, channels, 1) if residual else None
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(channels * (h // 2) * (w // 2), num_classes)
        init_weights(self, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` of images ``x`` of shape ``(batch, channels, height, width)``."""
        x = conv_layout(x)
        h = self.act(self.bn1(conv_layout(self.conv1(x))))
        h = self.bn2(self.conv2(h))
        if self.skip is not None:
            h = h + conv_layout(self.skip(x))
        h = self.pool(self.act(h))
        return self.head(h.flatten(1))


def _image_shape(name: str, in_shape: Sequence[int]) -> None:
    if len(in_shape) != 3 or in_shape[1] < 2 or in_shape[2] < 2:
        raise expected(f"{name} in_shape", "(channels, height, width) with height, width >= 2", tuple(in_shape))


def _build(
    name: str,
    residual: bool,
    num_classes: int,
    in_shape: Sequence[int],
    channels: int,
    activation: str,
    batchnorm: bool,
) -> CNN:
    _image_shape(name, in_shape)
    check_positive_int(f"{name} channels", channels)
    make_activation(activation)
    return CNN(in_shape, num_classes, channels, activation, residual=residual, batchnorm=batchnorm)


@register_model("cnn")
def build_cnn(
    *,
    num_classes: int,
    in_shape: Sequence[int],
    channels: int = 16,
    activation: str = "relu",
    batchnorm: bool = False,
) -> CNN:
    """Two 3x3 conv layers of ``channels`` filters and a linear head."""
    return _build("cnn", False, num_classes, in_shape, channels, activation, batchnorm)


@register_model("rescnn")
def build_rescnn(
    *,
    num_classes: int,
    in_shape: Sequence[int],
    channels: int = 16,
    activation: str = "relu",
    batchnorm: bool = False,
) -> CNN:
    """The ``cnn`` model with a 1x1 convolutional skip connection around the two 3x3 layers."""
    return _build("rescnn", True, num_classes, in_shape, channels, activation, batchnorm)
