"""Pieces shared by the architectures: activations and initialisation."""

from __future__ import annotations

from torch import nn

from lgeom._checks import check_choice

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def make_activation(name: str) -> nn.Module:
    """An activation module by name (relu | tanh | gelu)."""
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def init_weights(module: nn.Module, activation: str) -> None:
    """He (Kaiming normal, fan-in) init for relu/gelu, Xavier normal for tanh; zero biases; BN to identity."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if activation == "tanh":
                nn.init.xavier_normal_(m.weight, gain=nn.init.calculate_gain("tanh"))
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
