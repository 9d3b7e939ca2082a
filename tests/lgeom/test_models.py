"""Shapes, parameter counts, initialisation and bad options of every architecture."""

from __future__ import annotations

import math

import pytest
import torch

from lgeom.models import available_models, build_model
from lgeom.models.resnet import BasicBlock, Bottleneck, PreResNet, valid_depths
from lgeom.params import count_params

IMAGE_SHAPES = [(1, 28, 28), (3, 32, 32), (1, 16, 16), (1, 8, 8)]


def test_registry_lists_every_architecture() -> None:
    assert available_models() == ["cnn", "mlp", "preresnet", "rescnn", "resmlp", "vgg16", "wideresnet"]


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


# The depth study's Table 1 reports ~80k, 370k, 570k, 660k, 1.2M; the issue pins ours near these.
PRERESNET_COUNTS = {8: 78_000, 26: 369_000, 38: 564_000, 65: 683_000, 119: 1_240_000}


@pytest.mark.parametrize("depth", sorted(PRERESNET_COUNTS))
def test_preresnet_depths_build_with_expected_sizes(depth: int) -> None:
    model = build_model("preresnet", num_classes=10, in_shape=(3, 32, 32), depth=depth)
    assert isinstance(model, PreResNet)
    n = count_params(model)
    assert abs(n - PRERESNET_COUNTS[depth]) / PRERESNET_COUNTS[depth] < 0.01, n
    block = model.stages[0][0]
    assert isinstance(block, Bottleneck if depth >= 44 else BasicBlock)
    expected_blocks = (depth - 2) // (9 if depth >= 44 else 6)
    assert all(len(stage) == expected_blocks for stage in model.stages)


def test_preresnet_forward_on_small_and_large_inputs() -> None:
    model = build_model("preresnet", num_classes=100, in_shape=(3, 32, 32), depth=8).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    small = build_model("preresnet", num_classes=10, in_shape=(1, 8, 8), depth=47).eval()
    assert small(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("depth", [10, 44, 45, 7, 0, -4])
def test_preresnet_bad_depth_lists_valid_depths(depth: int) -> None:
    with pytest.raises(
        ValueError, match=r"preresnet depth: expected 6n\+2 below 44 or 9n\+2 .*8, 14, 20, 26, 32, 38, 47, 56, 65"
    ) as err:
        build_model("preresnet", num_classes=10, in_shape=(3, 32, 32), depth=depth)
    assert f"got {depth}" in str(err.value)


def test_valid_depths_contains_the_study_depths() -> None:
    assert {8, 26, 38, 65, 119} <= set(valid_depths(200))


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


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        (
            "transformer",
            {},
            r"model name: expected one of cnn, mlp, preresnet, rescnn, resmlp, vgg16, wideresnet or "
            r"torchvision:<name>, got 'transformer'",
        ),
        ("mlp", {"activation": "swish"}, r"activation: expected one of 'gelu', 'relu', 'tanh', got 'swish'"),
        ("mlp", {"width": 0}, r"mlp width: expected an integer > 0, got 0"),
        ("mlp", {"channels": 3}, r"mlp option: expected one of activation, depth, width, got 'channels'"),
        ("preresnet", {"width": 3}, r"preresnet option: expected one of block, depth, got 'width'"),
    ],
)
def test_bad_model_options_raise_clear_errors(name: str, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        build_model(name, num_classes=10, in_shape=(3, 32, 32), **kwargs)


def test_bad_num_classes_and_shape() -> None:
    with pytest.raises(ValueError, match="num_classes: expected an integer > 0, got 0"):
        build_model("mlp", num_classes=0, in_shape=(2,))
    with pytest.raises(ValueError, match="in_shape: expected a non-empty shape"):
        build_model("mlp", num_classes=2, in_shape=(0, 3))


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
