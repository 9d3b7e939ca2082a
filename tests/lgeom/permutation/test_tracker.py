"""The trace's shared machinery (:class:`~lgeom.permutation.tracker.UnitTracker`): elementwise operations tie
the units they combine, a model's own tensors read by ``get_attr`` follow the units they meet, flatten and
pooling follow the units' axis, and what cannot be followed raises naming where and why.
"""

from __future__ import annotations

import torch
from torch import nn

from tests.lgeom.permutation.permuted import refused, traced_and_kept


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.head = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        return self.head(h + self.b(h) * self.c(x))  # a, b and c meet: one permutation


def test_elementwise_operations_tie_the_units_they_combine() -> None:
    spec = traced_and_kept(Residual(), (3,))
    assert spec.sizes == {"a": 4}
    assert (
        spec.axes["b.weight"] == ("a", "a")
        and spec.axes["c.weight"] == ("a", None)
        and spec.axes["head.weight"] == (None, "a")
    )


class Scaled(nn.Module):
    """A parameter of the model's own (read by ``get_attr``) scales the hidden units."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.head = nn.Linear(3, 5), nn.Linear(5, 2)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(x) * self.scale)


def test_a_model_tensor_follows_the_units_it_meets() -> None:
    spec = traced_and_kept(Scaled(), (3,))
    assert spec.sizes == {"fc": 5} and spec.axes["scale"] == ("fc",)


def test_the_spec_lists_every_tensor_of_the_model() -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 2))
    spec = traced_and_kept(model, (1, 4, 4))
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    assert set(spec.axes) == set(state)
    assert all(
        len(axes) == (len(spec.views[n]) if n in spec.views else state[n].dim()) for n, axes in spec.axes.items()
    )
    assert spec.axes["1.num_batches_tracked"] == ()


def test_units_of_different_sizes_cannot_meet() -> None:
    class Clash(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) + self.b(x)  # broadcasting one unit over four

    refused(Clash(), "add", "call_function add", "units that cannot share one permutation meet")


def test_operands_with_units_on_different_axes_are_refused() -> None:
    class Crossed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.conv(x)
            return h + h.transpose(1, 3)

    refused(Crossed(), "add", "call_function add", "its operands hold units on different axes")


def test_pooling_the_units_axis_is_refused() -> None:
    class PoolUnits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.pool = nn.Linear(3, 4), nn.MaxPool1d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pool(self.fc(x))  # pools over the hidden units themselves

    refused(PoolUnits(), "pool", "MaxPool1d", "it pools the last 1 axes, the units lie on axis -1")


def test_flattening_twice_is_refused() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).flatten(1).flatten(0)

    refused(Twice(), "flatten_1", "call_method flatten", "it flattens units that are already flattened with other axes")
