"""MLP and ResMLP: any input shape, parameter counts, the stacked forward of several points."""

from __future__ import annotations

import pytest
import torch

from lgeom.models import build_model
from lgeom.params import count_params


@pytest.mark.parametrize("in_shape", [(2,), (1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 16, 16)])
@pytest.mark.parametrize("name", ["mlp", "resmlp"])
def test_fully_connected_models_flatten_any_input(name: str, in_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_shape=in_shape, width=12)
    out = model(torch.randn(5, *in_shape))
    assert out.shape == (5, 7)


def test_mlp_parameter_count_matches_formula() -> None:
    model = build_model("mlp", num_classes=3, in_shape=(2,), depth=3, width=10, activation="tanh")
    expected = (2 * 10 + 10) + 2 * (10 * 10 + 10) + (10 * 3 + 3)
    assert count_params(model) == expected
    assert len(model.hidden) == 3


def test_resmlp_parameter_count_matches_formula() -> None:
    model = build_model("resmlp", num_classes=4, in_shape=(1, 4, 4), blocks=3, width=8)
    expected = (16 * 8 + 8) + 3 * 2 * (8 * 8 + 8) + (8 * 4 + 4)
    assert count_params(model) == expected


@pytest.mark.parametrize(
    ("name", "arch"),
    [
        ("mlp", {"depth": 3, "width": 7, "activation": "tanh"}),
        ("mlp", {"depth": 0}),
        ("resmlp", {"blocks": 2, "width": 5, "activation": "gelu"}),
    ],
)
def test_forward_stacked_equals_functional_call_per_point(name: str, arch: dict) -> None:
    from torch.func import functional_call

    from lgeom.params import stack_points

    model = build_model(name, num_classes=3, in_shape=(1, 2, 2), **arch).double()
    points = []
    for seed in range(4):
        torch.manual_seed(seed)
        points.append({n: torch.randn_like(p) for n, p in model.named_parameters()})
    x = torch.randn(6, 1, 2, 2, dtype=torch.float64)
    expected = torch.stack([functional_call(model, p, (x,)) for p in points])
    torch.testing.assert_close(model.forward_stacked(stack_points(points), x), expected, rtol=1e-12, atol=1e-12)
