"""The trace's rules for layers (``call_module``): each layer's tensors get the axes of its units and random
permutations keep the function; a layer called twice ties its inputs; layers that would mix units raise
naming the layer and the reason.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.lgeom.permutation.permuted import refused, traced_and_kept


def test_linear_layers_make_groups_and_read_their_inputs() -> None:
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Dropout(0.0), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    spec = traced_and_kept(model, (3,))
    assert spec.sizes == {"0": 5, "3": 4}
    assert spec.axes["0.weight"] == ("0", None) and spec.axes["0.bias"] == ("0",)
    assert (
        spec.axes["3.weight"] == ("3", "0") and spec.axes["5.weight"] == (None, "3") and spec.axes["5.bias"] == (None,)
    )


def test_convolutions_batchnorm_pooling_and_a_channel_major_flatten() -> None:
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 3, 3, padding=1, groups=3),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(12, 2),
    )
    spec = traced_and_kept(model, (2, 4, 4))
    assert spec.sizes == {"0": 3}
    assert spec.axes["0.weight"] == ("0", None, None, None) and spec.axes["1.running_var"] == ("0",)
    assert spec.axes["4.weight"] == ("0", None, None, None)  # depthwise: keeps its input's channels
    assert spec.axes["7.weight"] == (None, "0", None) and spec.views["7.weight"] == (2, 3, 4)


def test_conv1d_batchnorm1d_and_prelu_per_channel() -> None:
    model = nn.Sequential(
        nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.PReLU(4), nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    spec = traced_and_kept(model, (2, 6))
    assert (
        spec.axes["2.weight"] == ("0",)
        and spec.axes["1.weight"] == ("0",)
        and spec.axes["5.weight"] == (None, "0", None)
    )


def test_embedding_and_layer_norm() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(7, 4)
            self.ln = nn.LayerNorm(4)
            self.fc = nn.Linear(4, 6)
            self.head = nn.Linear(6, 2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            h = self.fc(self.ln(self.embed(ids))).mean(dim=-2)  # (N, 6)
            return self.head(h)

    spec = traced_and_kept(Net(), (3,), inputs=torch.tensor([[0, 3, 6], [1, 1, 2]]))
    assert spec.sizes == {"embed": 4, "fc": 6}
    assert spec.axes["embed.weight"] == (None, "embed") and spec.axes["ln.weight"] == ("embed",)
    assert spec.axes["fc.weight"] == ("fc", "embed")


@pytest.mark.parametrize("groups", [1, 4])
def test_group_norm_with_one_group_or_one_per_channel(groups: int) -> None:
    spec = traced_and_kept(nn.Sequential(nn.Conv2d(1, 4, 1), nn.GroupNorm(groups, 4), nn.Conv2d(4, 2, 1)), (1, 3, 3))
    assert (
        spec.sizes == {"0": 4} and spec.axes["1.weight"] == ("0",) and spec.axes["2.weight"] == (None, "0", None, None)
    )


def test_a_layer_called_twice_ties_its_inputs() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(3, 4)
            self.shared = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.shared(torch.relu(self.a(x))) + self.shared(torch.tanh(self.b(x)))

    spec = traced_and_kept(Shared(), (3,))
    assert spec.sizes == {"a": 4} and spec.axes["b.weight"] == ("a", None) and spec.axes["shared.weight"] == (None, "a")


def test_grouped_convolution_of_permuted_channels_is_refused() -> None:
    refused(
        nn.Sequential(nn.Conv2d(1, 4, 1), nn.Conv2d(4, 4, 1, groups=2)),
        "1",
        "Conv2d",
        "a grouped convolution (2 groups) mixes units within groups",
    )


def test_group_norm_with_several_groups_is_refused() -> None:
    refused(
        nn.Sequential(nn.Conv2d(1, 4, 1), nn.GroupNorm(2, 4)), "1", "GroupNorm", "2 groups of channels would be mixed"
    )


def test_a_layer_reading_the_wrong_axis_is_refused() -> None:
    class Wrong(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 3, 1), nn.Linear(5, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x))  # reads the last (spatial) axis, the units lie on axis -3

    refused(Wrong(), "fc", "Linear", "it reads axis -1 of a tensor whose units lie on axis -3")


def test_batchnorm_on_the_wrong_axis_is_refused() -> None:
    class Wrong(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 3, 1), nn.BatchNorm2d(5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x).permute(0, 3, 2, 1))

    refused(Wrong(), "bn", "BatchNorm2d", "it normalises axis 1, the units lie on axis -1")


def test_an_unknown_layer_is_refused() -> None:
    refused(
        nn.Sequential(nn.Linear(2, 3), nn.Bilinear(3, 3, 2)),
        "1",
        "Bilinear",
        "a layer whose units this module cannot follow",
    )
