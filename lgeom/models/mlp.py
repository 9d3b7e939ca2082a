"""Fully connected models: plain MLP and a residual MLP. Images are flattened."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from lgeom._checks import check_positive_int
from lgeom.models._layers import init_weights, make_activation
from lgeom.models.registry import register_model


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units with one activation, then a linear head.

    Parameter names: ``hidden.<i>.weight|bias`` and ``head.weight|bias``.
    """

    def __init__(self, in_features: int, num_classes: int, depth: int, width: int, activation: str) -> None:
        super().__init__()
        self.activation_name = activation
        self.act = make_activation(activation)
        sizes = [in_features] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], num_classes)
        init_weights(self, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` of inputs ``x`` of shape ``(batch, ...)`` (flattened per sample)."""
        h = x.flatten(1)
        for layer in self.hidden:
            h = self.act(layer(h))
        return self.head(h)

    def forward_stacked(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits of ``m`` parameter points at once: ``params`` holds this model's parameters stacked along a
        leading dimension of size ``m``; returns ``(m, batch, classes)``. Equals ``functional_call`` at each
        point, in one batched matrix product per layer (what ``lgeom.multipoint`` uses for plane and slice grids).
        """
        h = x.flatten(1)
        for i in range(len(self.hidden)):
            h = self.act(_stacked_linear(h, params[f"hidden.{i}.weight"], params[f"hidden.{i}.bias"]))
        return _stacked_linear(h, params["head.weight"], params["head.bias"])


class ResidualBlock(nn.Module):
    """Pre-activation residual block ``h + fc2(act(fc1(act(h))))`` on a stream of fixed width."""

    def __init__(self, width: int, activation: str) -> None:
        super().__init__()
        self.act = make_activation(activation)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` plus the block's residual branch, same shape ``(batch, width)``."""
        return h + self.fc2(self.act(self.fc1(self.act(h))))


class ResMLP(nn.Module):
    """Input projection to ``width``, ``blocks`` residual blocks, activation, linear head.

    Parameter names: ``inp.*``, ``blocks.<i>.fc1.*``, ``blocks.<i>.fc2.*``, ``head.*``.
    """

    def __init__(self, in_features: int, num_classes: int, blocks: int, width: int, activation: str) -> None:
        super().__init__()
        self.activation_name = activation
        self.act = make_activation(activation)
        self.inp = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, activation) for _ in range(blocks))
        self.head = nn.Linear(width, num_classes)
        init_weights(self, activation)
        # Scale each block's output layer so the residual stream's variance does not grow with depth.
        with torch.no_grad():
            for block in self.blocks:
                block.fc2.weight.mul_(1.0 / math.sqrt(max(blocks, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` of inputs ``x`` of shape ``(batch, ...)`` (flattened per sample)."""
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = block(h)
        return self.head(self.act(h))

    def forward_stacked(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits of ``m`` stacked parameter points at once, ``(m, batch, classes)`` (see ``MLP.forward_stacked``)."""
        h = _stacked_linear(x.flatten(1), params["inp.weight"], params["inp.bias"])
        for i in range(len(self.blocks)):
            inner = self.act(
                _stacked_linear(self.act(h), params[f"blocks.{i}.fc1.weight"], params[f"blocks.{i}.fc1.bias"])
            )
            h = h + _stacked_linear(inner, params[f"blocks.{i}.fc2.weight"], params[f"blocks.{i}.fc2.bias"])
        return _stacked_linear(self.act(h), params["head.weight"], params["head.bias"])


def _stacked_linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``h @ W_i^T + b_i`` for every point i: ``h`` is ``(batch, in)`` (shared) or ``(m, batch, in)``,
    ``weight`` ``(m, out, in)``, ``bias`` ``(m, out)``; returns ``(m, batch, out)``.
    """
    if h.dim() == 2:
        h = h.unsqueeze(0).expand(weight.shape[0], -1, -1)
    return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))


@register_model("mlp")
def build_mlp(
    *, num_classes: int, in_shape: Sequence[int], depth: int = 2, width: int = 64, activation: str = "relu"
) -> MLP:
    """MLP with ``depth`` hidden layers (0 gives a linear classifier) of ``width`` units."""
    check_positive_int("mlp depth", depth, allow_zero=True)
    check_positive_int("mlp width", width)
    make_activation(activation)
    return MLP(math.prod(in_shape), num_classes, depth, width, activation)


@register_model("resmlp")
def build_resmlp(
    *, num_classes: int, in_shape: Sequence[int], blocks: int = 2, width: int = 64, activation: str = "relu"
) -> ResMLP:
    """Residual MLP with ``blocks`` two-layer residual blocks of ``width`` units."""
    check_positive_int("resmlp blocks", blocks, allow_zero=True)
    check_positive_int("resmlp width", width)
    make_activation(activation)
    return ResMLP(math.prod(in_shape), num_classes, blocks, width, activation)
