"""The shared layers: activations by name and the initialisation that suits each."""

from __future__ import annotations

import math

import pytest
import torch

from lgeom.models import build_model
from lgeom.models._layers import init_weights, make_activation


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


@pytest.mark.parametrize(("name", "kind"), [("relu", torch.nn.ReLU), ("tanh", torch.nn.Tanh), ("gelu", torch.nn.GELU)])
def test_make_activation_by_name(name: str, kind: type) -> None:
    assert type(make_activation(name)) is kind


def test_an_unknown_activation_is_refused() -> None:
    with pytest.raises(ValueError, match="activation: expected one of 'gelu', 'relu', 'tanh', got 'ReLU'"):
        make_activation("ReLU")


def test_init_weights_on_convs_linears_and_batchnorm() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(16, 32, 3),
        torch.nn.BatchNorm2d(32),
        torch.nn.Flatten(),
        torch.nn.Linear(512, 64, bias=False),
        torch.nn.BatchNorm1d(64),
    )
    for bn in (net[1], net[4]):
        torch.nn.init.uniform_(bn.weight)
        torch.nn.init.uniform_(bn.bias)
    init_weights(net, "gelu")
    assert net[0].weight.std().item() == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.05)
    assert torch.all(net[0].bias == 0) and net[3].bias is None
    assert net[3].weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    for bn in (net[1], net[4]):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
