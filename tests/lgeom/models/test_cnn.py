"""CNN and ResCNN: image shapes, the skip connection, flat inputs refused."""

from __future__ import annotations

import pytest
import torch

from lgeom.models import build_model
from lgeom.params import count_params

IMAGE_SHAPES = [(1, 28, 28), (3, 32, 32), (1, 16, 16), (1, 8, 8)]


@pytest.mark.parametrize("in_shape", IMAGE_SHAPES)
@pytest.mark.parametrize("name", ["cnn", "rescnn"])
def test_conv_models_accept_image_shapes(name: str, in_shape: tuple[int, int, int]) -> None:
    model = build_model(name, num_classes=10, in_shape=in_shape)
    assert model(torch.randn(3, *in_shape)).shape == (3, 10)
    c, h, w = in_shape
    conv = (c * 16 * 9 + 16) + (16 * 16 * 9 + 16)
    head = 16 * (h // 2) * (w // 2) * 10 + 10
    skip = (c * 16 + 16) if name == "rescnn" else 0
    assert count_params(model) == conv + head + skip


def test_rescnn_differs_from_cnn_only_by_the_skip() -> None:
    cnn = build_model("cnn", num_classes=10, in_shape=(1, 28, 28), channels=8)
    res = build_model("rescnn", num_classes=10, in_shape=(1, 28, 28), channels=8)
    extra = {n for n, _ in res.named_parameters()} - {n for n, _ in cnn.named_parameters()}
    assert extra == {"skip.weight", "skip.bias"}


def test_cnn_rejects_flat_inputs() -> None:
    with pytest.raises(ValueError, match=r"cnn in_shape: expected \(channels, height, width\)"):
        build_model("cnn", num_classes=2, in_shape=(2,))
