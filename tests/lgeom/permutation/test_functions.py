"""The trace's rules for functions and methods (``call_function`` / ``call_method``): elementwise ops,
pooling, flatten and ``view(n, -1)``, reductions, transpose/permute, (un)squeeze and concatenation keep
track of the units (random permutations keep the function); operations that would mix units raise naming
the node and the reason.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.lgeom.permutation.permuted import refused, traced_and_kept


class Around(nn.Module):
    """``conv`` (2 -> 4 channels, 1x1) then ``body`` (any functions) then ``head`` (Linear(features, 2))."""

    def __init__(self, body: Callable[[torch.Tensor], torch.Tensor], features: int) -> None:
        super().__init__()
        self.conv, self.head, self.body = nn.Conv2d(2, 4, 1), nn.Linear(features, 2), body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.conv(x)))


SHAPE = (2, 3, 3)

KEPT = {
    "elementwise": (
        lambda h: (F.gelu(h) * 2 - torch.sigmoid(h).clamp(0.1, 0.9) + h.relu()).mean(dim=(2, 3)),
        4,
        (None, "conv"),
    ),
    "pool-then-flatten": (lambda h: torch.flatten(F.avg_pool2d(h, 3), 1), 4, (None, "conv", None)),
    "view-n-minus-1": (lambda h: h.view(h.size(0), -1), 36, (None, "conv", None)),
    "flatten-method": (lambda h: h.flatten(1), 36, (None, "conv", None)),
    "sum-keepdim-then-squeeze": (lambda h: h.sum(dim=-1, keepdim=True).squeeze(-1).amax(dim=-1), 4, (None, "conv")),
    "permute-then-mean": (lambda h: h.permute(0, 2, 3, 1).mean(dim=(1, 2)), 4, (None, "conv")),
    "transpose-then-flatten": (lambda h: h.transpose(1, 3).flatten(1), 36, (None, None, "conv")),
    "unsqueeze": (lambda h: h.mean(dim=(2, 3)).unsqueeze(1).squeeze(1), 4, (None, "conv")),
    "scalar-broadcast": (lambda h: (h - h.mean()).mean(dim=(2, 3)), 4, (None, "conv")),
}


@pytest.mark.parametrize("name", sorted(KEPT))
def test_units_are_followed_through(name: str) -> None:
    body, features, head_axes = KEPT[name]
    spec = traced_and_kept(Around(body, features), SHAPE)
    assert spec.sizes == {"conv": 4} and spec.axes["head.weight"] == head_axes


def test_concatenation_along_the_units_axis_is_by_segments() -> None:
    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.head = nn.Linear(3, 2), nn.Linear(3, 4), nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.cat([self.a(x), torch.relu(self.b(x))], dim=-1))

    spec = traced_and_kept(Cat(), (3,))
    assert spec.sizes == {"a": 2, "b": 4} and spec.concats == {"cat:cat": (("a", 2), ("b", 4))}
    assert spec.axes["head.weight"] == (None, "cat:cat")


def test_concatenation_along_another_axis_keeps_the_units() -> None:
    spec = traced_and_kept(Around(lambda h: torch.cat([h, 2 * h], dim=2).mean(dim=(2, 3)), 4), SHAPE)
    assert spec.axes["head.weight"] == (None, "conv")


@pytest.mark.parametrize(
    ("body", "where", "op", "reason"),
    [
        (lambda h: h[:, :2].mean(dim=(2, 3)), "getitem", "indexing", "indexing may select or reorder units"),
        (
            lambda h: h.reshape(h.shape[0], 2, -1).mean(dim=-1),
            "reshape",
            "call_method reshape",
            "a reshape may split or mix the units' axis",
        ),
        (lambda h: h.mean(dim=(2, 3)).squeeze(1), "squeeze", "call_method squeeze", "it squeezes the units' axis"),
        (
            lambda h: torch.cumsum(h, dim=1).mean(dim=(2, 3)),
            "cumsum",
            "call_function cumsum",
            "an operation whose effect on units is unknown",
        ),
    ],
    ids=["indexing", "reshape", "squeeze-units", "unknown-function"],
)
def test_operations_that_mix_units_are_refused(
    body: Callable[[torch.Tensor], torch.Tensor], where: str, op: str, reason: str
) -> None:
    refused(Around(body, 2), where, op, reason)
