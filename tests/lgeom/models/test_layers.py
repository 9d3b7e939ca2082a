"""The shared layers: activations by name and the initialisation that suits each."""

from __future__ import annotations

import math

import pytest
import torch

from lgeom.models import build_model


def test_he_init_for_relu_and_xavier_for_tanh() -> None:
    torch.manual_seed(0)
    relu = build_model("mlp", num_classes=2, in_shape=(400,), depth=1, width=400, activation="relu")
    w = relu.hidden[0].weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.05)
    torch.manual_seed(0)
    tanh = build_model("mlp", num_classes=2, in_shape=(400,), depth=1, width=400, activation="tanh")
    w = tanh.hidden[0].weight
    assert w.std().item() == pytest.approx(5 / 3 * math.sqrt(2 / 800), rel=0.05)
    assert torch.all(tanh.hidden[0].bias == 0)


def test_gelu_mlp_uses_gelu() -> None:
    model = build_model("mlp", num_classes=2, in_shape=(2,), activation="gelu")
    assert isinstance(model.act, torch.nn.GELU)

