"""Permutation specs traced from the fx graph (:mod:`lgeom.permutation.fx_trace`): random permutations keep
every model's function (lgeom's models, the zoo, torchvision, models defined here), the traced spec equals
the hand-written ones, concatenations permute by segments, weight matching with it lowers the barrier
between two MLPs trained on digits, and operations that mix units raise PermutationSpecError naming the
module and the operation.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.func import functional_call

from lgeom.align import apply_permutation, permutation_spec, weight_matching
from lgeom.curves import Line
from lgeom.data import build_dataset, make_loader
from lgeom.models import build_model
from lgeom.multipoint import evaluate_path
from lgeom.params import get_buffers, get_params
from lgeom.path import loss_barrier
from lgeom.permutation import PermutationSpecError, traced_permutation_spec
from lgeom.train import TrainSpec, train
from tests.lgeom.cases import randomize_bn_state

D = torch.float64
TOL = 1e-10  # float64: permuting only reorders sums, so outputs agree to rounding


# --- models defined by a user, not registered anywhere -------------------------------------------------


class ResidualConvNet(nn.Module):
    """conv-bn-relu stem, a residual block added onto it, max-pool, flatten into a linear head."""

    def __init__(self, channels: int = 4, size: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(channels * (size // 2) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.relu(h + self.block(h))
        return self.head(self.pool(h).view(h.size(0), -1))


class NormsNet(nn.Module):
    """Depthwise and pointwise convolutions, GroupNorm, PReLU, a gate, a shared layer called twice,
    channels-last LayerNorm through permute, and a concatenation along the batch axis.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.gn = nn.GroupNorm(1, 6)
        self.act = nn.PReLU(6)
        self.depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.gate = nn.Conv2d(6, 6, 1)
        self.ln = nn.LayerNorm(6)
        self.shared = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.gn(self.conv(x)))
        h = h - h.mean()  # a scalar broadcast over the units leaves them free
        h = self.depthwise(h) * torch.sigmoid(self.gate(h.mean(dim=(2, 3), keepdim=True)))
        h = self.ln(h.permute(0, 2, 3, 1))  # (N, H, W, C)
        h = torch.cat([h, 2 * h], dim=0).mean(dim=(1, 2))
        h = self.shared(torch.tanh(self.shared(h)))
        return self.head(h)


class DenseConcatNet(nn.Module):
    """DenseNet-style: two branches concatenated with the stem along channels, BN over the concatenation,
    a 1x1 transition, a second (nested) concatenation, and a flatten into the head.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 3, 3, padding=1)
        self.branch_a = nn.Conv2d(3, 2, 1)
        self.branch_b = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(9)
        self.transition = nn.Conv2d(9, 5, 1)
        self.head = nn.Linear((9 + 5) * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.cat([h, self.branch_a(h), self.branch_b(h)], dim=1)
        h = torch.relu(self.bn(h))
        h = torch.cat([h, self.transition(h)], 1)
        return self.head(nn.functional.avg_pool2d(h, 2).flatten(1))


class DigitsMLP(nn.Module):
    """Flatten, two hidden layers, linear head (no registered permutation spec)."""

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, width)
        self.fc2 = nn.Linear(width, width)
        self.out = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))))


def _registered(arch: str, kw: dict) -> Callable[[tuple[int, ...]], nn.Module]:
    return lambda shape: build_model(arch, num_classes=3, in_shape=shape, **kw)


MODELS = {
    "mlp": ((5,), _registered("mlp", {"depth": 3, "width": 8})),
    "resmlp": ((5,), _registered("resmlp", {"blocks": 2, "width": 8})),
    "cnn": ((3, 8, 8), _registered("cnn", {"channels": 4})),
    "cnn-bn": ((3, 8, 8), _registered("cnn", {"channels": 4, "batchnorm": True})),
    "rescnn-bn": ((3, 8, 8), _registered("rescnn", {"channels": 4, "batchnorm": True})),
    "preresnet8": ((3, 8, 8), _registered("preresnet", {"depth": 8})),
    "preresnet11-bottleneck": ((3, 8, 8), _registered("preresnet", {"depth": 11, "block": "bottleneck"})),
    "vgg16": ((3, 32, 32), _registered("vgg16", {"width": 2})),
    "vgg16-bn": ((3, 32, 32), _registered("vgg16", {"width": 2, "batchnorm": True})),
    "wideresnet10-1": ((3, 8, 8), _registered("wideresnet", {"depth": 10, "widen_factor": 1})),
    "torchvision-resnet18": ((3, 8, 8), _registered("torchvision:resnet18", {"cifar_stem": True})),
    "user-residual-conv": ((3, 8, 8), lambda shape: ResidualConvNet()),
    "user-norms": ((2, 5, 5), lambda shape: NormsNet()),
    "user-concat": ((2, 4, 4), lambda shape: DenseConcatNet()),
}
HAND_WRITTEN = ["mlp", "resmlp", "cnn", "cnn-bn", "rescnn-bn", "preresnet8", "preresnet11-bottleneck"]


def _model(name: str, seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    """A float64 model in eval mode with random 1-D parameters (biases, norm affines) and BN statistics."""
    shape, make = MODELS[name]
    torch.manual_seed(seed)
    return randomize_bn_state(make(shape).double()), shape


def _partition(spec) -> list[list[tuple[str, int]]]:
    """The spec's permutations as sets of (tensor, axis), independent of their names."""
    return sorted(sorted(axes) for axes in spec.perm_to_axes().values())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_random_permutations_from_the_traced_spec_keep_the_function(name: str) -> None:
    model, shape = _model(name, seed=0)
    spec = traced_permutation_spec(model)
    assert spec.sizes, "every model here has hidden units to permute"
    gen = torch.Generator().manual_seed(1)
    perms = {p: torch.randperm(n, generator=gen) for p, n in spec.sizes.items()}
    state = {**get_params(model), **get_buffers(model)}
    permuted = apply_permutation(spec, perms, state)
    assert sum(not torch.equal(permuted[n], state[n]) for n in state) >= len(spec.sizes)
    x = torch.randn(3, *shape, dtype=D, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(functional_call(model, permuted, (x,)), model(x), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_traced_spec_equals_the_hand_written_one(name: str) -> None:
    model, _ = _model(name, seed=0)
    hand, traced = permutation_spec(model), traced_permutation_spec(model)
    assert _partition(traced) == _partition(hand)
    assert traced.views == hand.views


def test_user_models_get_the_traced_spec() -> None:
    model, _ = _model("user-residual-conv", seed=0)
    spec = permutation_spec(model)
    # The residual addition ties the stem's and the block's output channels into one permutation.
    assert _partition(spec) == _partition(traced_permutation_spec(model))
    stream = [p for p, axes in spec.perm_to_axes().items() if ("block.3.weight", 0) in axes]
    assert stream == ["stem.0"] and ("stem.1.running_mean", 0) in spec.perm_to_axes()["stem.0"]
    assert spec.views["head.weight"] == (3, 4, 16)  # channel-major blocks of the flattened input
    assert permutation_spec(nn.Linear(2, 2)).sizes == {}  # nothing hidden to permute
    # The gate, the depthwise convolution and the shared layer all act on the first layer's units.
    norms = permutation_spec(NormsNet())
    assert norms.sizes == {"conv": 6}
    assert norms.axes["shared.weight"] == ("conv", "conv") and norms.axes["depthwise.weight"] == (
        "conv",
        None,
        None,
        None,
    )
    assert norms.axes["head.weight"] == (None, "conv") and norms.axes["ln.weight"] == ("conv",)


def test_concatenations_permute_by_segments_and_are_matched_back() -> None:
    model, _ = _model("user-concat", seed=0)
    spec = traced_permutation_spec(model)
    assert spec.sizes == {"branch_a": 2, "branch_b": 4, "stem": 3, "transition": 5}
    assert spec.concats == {
        "cat:cat": (("stem", 3), ("branch_a", 2), ("branch_b", 4)),
        "cat:cat_1": (("stem", 3), ("branch_a", 2), ("branch_b", 4), ("transition", 5)),
    }
    assert spec.axes["bn.running_mean"] == ("cat:cat",) and spec.axes["head.weight"] == (None, "cat:cat_1", None)
    gen = torch.Generator().manual_seed(4)
    perms = {p: torch.randperm(n, generator=gen) for p, n in spec.sizes.items()}
    a, buffers = get_params(model), get_buffers(model)
    al = weight_matching(model, a, apply_permutation(spec, perms, a), buffers_b=apply_permutation(spec, perms, buffers))
    for n in a:
        torch.testing.assert_close(al.params[n], a[n], rtol=0, atol=0)
    for n in buffers:
        torch.testing.assert_close(al.buffers[n], buffers[n], rtol=0, atol=0)


def test_weight_matching_with_the_traced_spec_lowers_the_barrier_on_digits() -> None:
    train_set, test_set = build_dataset("digits", "train"), build_dataset("digits", "test")
    ends = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = DigitsMLP()
        ends.append(
            train(
                model, train_set, None, TrainSpec(epochs=6, batch_size=64, lr=0.05, seed=seed), progress=False
            ).final_params
        )
    a, b = ends
    al = weight_matching(model, a, b, seed=0)  # no registered spec: traced from the graph
    assert set(al.perms) == {"fc1", "fc2"}
    test = make_loader(test_set, 512)
    ts = torch.linspace(0, 1, 11)
    plain = evaluate_path(model, Line(a, b), ts, test=test)["test_loss"]
    aligned = evaluate_path(model, Line(a, al.params), ts, test=test)["test_loss"]
    assert aligned[-1] == pytest.approx(plain[-1], rel=1e-5)  # permuted B computes B's function
    assert loss_barrier(plain) > 0.05
    assert loss_barrier(aligned) < 0.6 * loss_barrier(plain)


# --- operations that mix units ---------------------------------------------------------------------------


class TinyAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h, _ = self.attn(h, h, h)
        return self.head(h.mean(dim=1))


class ChannelSplit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).reshape(x.shape[0], 2, 2, -1)
        return self.head(h.mean(dim=(2, 3)))


class InputConcat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 1)
        self.head = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The input's width is unknown to the trace, so the segments' places are too.
        return self.head(torch.cat([x, self.a(x)], dim=1).mean(dim=(2, 3)))


class ConcatPlusLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 3, 1), nn.Conv2d(1, 5, 1)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One layer's 5 units would have to follow the two permutations of the concatenation.
        h = torch.cat([self.a(x), self.b(x)], dim=1) + self.c(x)
        return self.head(h.mean(dim=(2, 3)))


class CumulativeSum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cumsum(self.fc(x), dim=-1))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


@pytest.mark.parametrize(
    ("model", "where", "op"),
    [
        (TinyAttention(), "attn", "MultiheadAttention"),
        (ChannelSplit(), "reshape", "call_method reshape"),
        (InputConcat(), "cat", "call_function cat"),
        (ConcatPlusLayer(), "add", "call_function add"),
        (CumulativeSum(), "cumsum", "call_function cumsum"),
        (DataDependent(), "forward", "torch.fx tracing"),
    ],
    ids=["attention", "reshape", "concat-input", "concat-plus-layer", "unknown-function", "untraceable"],
)
def test_operations_that_mix_units_raise_naming_module_and_op(model: nn.Module, where: str, op: str) -> None:
    with pytest.raises(PermutationSpecError) as err:
        permutation_spec(model)
    assert (err.value.where, err.value.op) == (where, op)
    assert str(err.value).startswith(
        f"permutation spec of {type(model).__name__}: expected operations that keep "
        f"hidden units apart, got {op} at {where!r}"
    )
    # Callers that skip alignment catch it; it is a ValueError like the library's other errors.
    params = get_params(model)
    with pytest.raises(ValueError, match="permutation spec of"):
        weight_matching(model, params, params)


def test_attention_error_says_why() -> None:
    with pytest.raises(
        PermutationSpecError, match=r"got MultiheadAttention at 'attn' \(attention mixes units across heads\)"
    ):
        traced_permutation_spec(TinyAttention())
