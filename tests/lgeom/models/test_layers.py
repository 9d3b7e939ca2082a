"""The shared layers: activations by name and the initialisation that suits each."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

import lgeom.models._layers as layers
from lgeom.models import build_model
from lgeom.models._layers import conv_layout, init_weights, make_activation


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


def _conv_input_layouts(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[bool]]:
    """The model's logits for ``x`` and, per convolution with more than one input channel, whether its input
    was channels-last.
    """
    layouts: list[bool] = []
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1]
    handles = [
        c.register_forward_pre_hook(lambda _, a: layouts.append(a[0].is_contiguous(memory_format=torch.channels_last)))
        for c in convs
    ]
    try:
        return model(x), layouts
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize(
    ("arch", "options", "shape"),
    [
        ("cnn", {}, (1, 12, 12)),
        ("rescnn", {}, (1, 12, 12)),
        ("cnn", {"batchnorm": True}, (3, 12, 12)),
        ("preresnet", {"depth": 8}, (3, 16, 16)),
        ("wideresnet", {"depth": 10, "widen_factor": 1}, (3, 16, 16)),
        ("vgg16", {"width": 4, "dropout": 0.0}, (3, 32, 32)),
    ],
)
def test_cpu_evaluation_runs_convolutions_channels_last_with_the_same_logits(
    monkeypatch: pytest.MonkeyPatch, arch: str, options: dict, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=3, in_shape=shape, **options).double().eval()
    x = torch.randn(5, *shape, dtype=torch.float64)
    with torch.no_grad():
        fast, layouts = _conv_input_layouts(model, x)
    assert layouts and all(layouts)  # every convolution past a one-channel input reads NHWC
    logits, grad_layouts = _conv_input_layouts(model, x)  # autograd on: torch's layout, untouched
    assert not any(grad_layouts) and logits.requires_grad
    monkeypatch.setattr(layers, "CPU_CHANNELS_LAST", False)
    with torch.no_grad():
        plain, off = _conv_input_layouts(model, x)
    assert not any(off)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast, logits.detach(), rtol=1e-12, atol=1e-12)


def test_conv_layout_leaves_other_tensors_vmap_and_traces_alone() -> None:
    images = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert conv_layout(images).is_contiguous(memory_format=torch.channels_last)
        flat = torch.randn(2, 3)
        assert conv_layout(flat) is flat  # not 4-D
        # Inside vmap the batched tensor cannot change layout: returned as it is, and vmap still works.
        out = torch.func.vmap(lambda t: conv_layout(t) * 2)(torch.randn(3, 2, 3, 4, 4))
        assert out.shape == (3, 2, 3, 4, 4)
    assert conv_layout(images) is images  # autograd on
    # torch.fx tracing (the permutation spec) sees no layout operation.
    graph = torch.fx.symbolic_trace(build_model("cnn", num_classes=3, in_shape=(1, 8, 8), channels=2)).graph
    assert not any("conv_layout" in str(n.target) or n.target == "contiguous" for n in graph.nodes)


@pytest.mark.parametrize(("arch", "shape"), [("cnn", (1, 12, 12)), ("preresnet", (3, 16, 16))])
def test_training_steps_run_channels_last_with_the_same_gradients(arch: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=3, in_shape=shape).double()
    x, y = torch.randn(6, *shape, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    grads = []
    for inside in (False, True):
        model.zero_grad()
        with layers.channels_last_steps() if inside else contextlib.nullcontext():
            logits, layouts = _conv_input_layouts(model, x)
        assert layouts and all(layouts) == inside and any(layouts) == inside
        torch.nn.functional.cross_entropy(logits, y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain, fast in zip(*grads):
        torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-12)
    assert not layers._IN_STEPS.get()  # the context is left as it was


def test_train_and_fit_curve_run_their_steps_channels_last(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both loops wrap their forward in channels_last_steps: a conv model's layer sees NHWC with autograd on.
    from lgeom.curves import Bezier, CurveFitSpec, fit_curve
    from lgeom.params import get_params
    from lgeom.train import TrainSpec, train

    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, in_shape=(2, 6, 6), channels=2)
    data = torch.utils.data.TensorDataset(torch.randn(16, 2, 6, 6), torch.randint(0, 3, (16,)))
    seen: list[bool] = []
    model.conv2.register_forward_pre_hook(
        lambda _, a: seen.append(torch.is_grad_enabled() and a[0].is_contiguous(memory_format=torch.channels_last))
    )
    train(model, data, spec=TrainSpec(epochs=1, batch_size=8, lr=0.01), progress=False)
    assert any(seen)
    seen.clear()
    a = get_params(model)
    curve = Bezier(a, {n: v + 0.1 for n, v in a.items()})
    fit_curve(model, curve, data, CurveFitSpec(epochs=1, batch_size=8), progress=False)
    assert any(seen)
