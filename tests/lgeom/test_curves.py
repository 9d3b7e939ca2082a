"""Curves: values against hand computation, gradients, fitting, errors, save/load; fitting and path evaluation
on CUDA (skipped without CUDA).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from lgeom.curves import (
    Bezier,
    CurveFitSpec,
    Line,
    PolyChain,
    build_curve,
    fit_curve,
    load_curve,
    save_curve,
)
from lgeom.data import ArrayDataset, build_dataset, build_splits, make_loader
from lgeom.models import build_model
from lgeom.multipoint import evaluate_path
from lgeom.optim import lr_factor
from lgeom.params import get_buffers, get_params, has_tied_tensors
from lgeom.path import loss_barrier
from lgeom.train import NonFiniteLossError, TrainSpec, train

D = torch.float64


def _pts() -> tuple[dict, dict, dict]:
    """A = 0, B = (4, 0), C = (2, 2) in the first tensor; a second tensor of another shape."""
    a = {"w": torch.tensor([0.0, 0.0], dtype=D), "m": torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=D)}
    b = {"w": torch.tensor([4.0, 0.0], dtype=D), "m": torch.tensor([[5.0, 6.0], [7.0, 8.0]], dtype=D)}
    c = {"w": torch.tensor([2.0, 2.0], dtype=D), "m": torch.tensor([[0.0, 0.0], [0.0, 0.0]], dtype=D)}
    return a, b, c


def _close(got: dict, want: dict) -> None:
    for name, value in want.items():
        torch.testing.assert_close(got[name].detach(), torch.as_tensor(value, dtype=D), rtol=0, atol=1e-12)


def test_bends_start_on_the_segment() -> None:
    a, b, _ = _pts()
    curve = Bezier(a, b)
    _close(curve.bends[0], {"w": [2.0, 0.0], "m": [[3.0, 4.0], [5.0, 6.0]]})
    two = PolyChain(a, b, bends=2)
    _close(two.bends[0], {"w": [4 / 3, 0.0], "m": [[1 + 4 / 3, 2 + 4 / 3], [3 + 4 / 3, 4 + 4 / 3]]})
    assert all(t.requires_grad and t.is_leaf for t in two.parameters())


def test_bezier_values_by_hand() -> None:
    a, b, c = _pts()
    curve = Bezier(a, b, [c])
    _close(curve.point(0.0), a)
    _close(curve.point(1.0), b)
    # t = 1/2: A/4 + C/2 + B/4
    _close(curve.point(0.5), {"w": [2.0, 1.0], "m": [[1.5, 2.0], [2.5, 3.0]]})
    # t = 1/4: (9/16) A + (6/16) C + (1/16) B
    _close(curve.point(0.25), {"w": [1.0, 0.75], "m": [[14 / 16, 24 / 16], [34 / 16, 44 / 16]]})


def test_cubic_bezier_weights() -> None:
    a, b, _ = _pts()
    c1 = {"w": torch.tensor([0.0, 8.0], dtype=D), "m": torch.zeros(2, 2, dtype=D)}
    c2 = {"w": torch.tensor([8.0, 0.0], dtype=D), "m": torch.zeros(2, 2, dtype=D)}
    curve = Bezier(a, b, [c1, c2])
    # t = 1/2: (A + 3 C1 + 3 C2 + B) / 8
    _close(
        curve.point(0.5), {"w": [(0 + 0 + 24 + 4) / 8, (0 + 24 + 0 + 0) / 8], "m": [[6 / 8, 8 / 8], [10 / 8, 12 / 8]]}
    )


def test_polychain_values_by_hand() -> None:
    a, b, c = _pts()
    curve = PolyChain(a, b, [c])
    _close(curve.point(0.0), a)
    _close(curve.point(1.0), b)
    _close(curve.point(0.5), c)
    # t = 1/4: A + 2t (C - A) = (A + C) / 2
    _close(curve.point(0.25), {"w": [1.0, 1.0], "m": [[0.5, 1.0], [1.5, 2.0]]})
    # t = 3/4: C + (2t - 1)(B - C) = (C + B) / 2
    _close(curve.point(0.75), {"w": [3.0, 1.0], "m": [[2.5, 3.0], [3.5, 4.0]]})


def test_line_values_by_hand() -> None:
    a, b, _ = _pts()
    line = Line(a, b)
    assert line.bends == [] and line.parameters() == []
    _close(line.point(0.25), {"w": [1.0, 0.0], "m": [[2.0, 3.0], [4.0, 5.0]]})
    with pytest.raises(ValueError, match="line bends: expected 0"):
        Line(a, b, 1)
    with pytest.raises(ValueError, match="line bends"):
        line.apex()


def test_gradients_reach_only_the_bends() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=3, in_shape=(4,), depth=1, width=5).double()
    a = get_params(model)
    b = {n: v + torch.randn_like(v) for n, v in a.items()}
    curve = PolyChain(a, b, bends=2)
    x, y = torch.randn(6, 4, dtype=D), torch.tensor([0, 1, 2, 0, 1, 2])
    loss = F.cross_entropy(functional_call(model, curve.point(0.4), (x,)), y)
    loss.backward()
    assert all(v.grad is None and not v.requires_grad for v in list(curve.start.values()) + list(curve.end.values()))
    assert all(p.grad is None for p in model.parameters())
    first, second = curve.bends
    # t = 0.4 lies on the segment bend 0 -> bend 1 (knots at 1/3, 2/3): both get gradient, scaled by weight.
    assert all(float(g.grad.abs().sum()) > 0 for g in first.values())
    w0, w1 = curve.coefficients(0.4)[1:3]
    for n in first:
        torch.testing.assert_close(first[n].grad * w1, second[n].grad * w0, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("t", [-0.01, 1.5, math.nan])
def test_t_outside_unit_interval(t: float) -> None:
    a, b, _ = _pts()
    with pytest.raises(ValueError, match=r"t: expected a value in \[0, 1\]"):
        Bezier(a, b).point(t)


def test_endpoints_of_different_architectures() -> None:
    a, b, _ = _pts()
    wider = {**b, "m": torch.zeros(2, 3, dtype=D)}
    with pytest.raises(ValueError, match=r"parameter 'm': expected shape \(2, 2\).*got \(2, 3\)"):
        Bezier(a, wider)
    renamed = {"w": b["w"], "other": b["m"]}
    with pytest.raises(ValueError, match="has 'm'"):
        build_curve("polychain", a, renamed)
    with pytest.raises(ValueError, match="curve kind: expected one of"):
        build_curve("spline", a, b)


def test_save_and_load_roundtrip(tmp_path) -> None:
    a, b, c = _pts()
    curve = Bezier(a, b, [c])
    path = save_curve(tmp_path / "c.pt", curve, model={"arch": "mlp"}, num_classes=3)
    loaded, extra = load_curve(path)
    assert type(loaded) is Bezier and extra == {"model": {"arch": "mlp"}, "num_classes": 3}
    for t in (0.0, 0.3, 1.0):
        _close(loaded.point(t), {n: v.tolist() for n, v in curve.point(t).items()})
    with pytest.raises(FileNotFoundError):
        load_curve(tmp_path / "missing.pt")


# --- fitting -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moons_pair():
    """Two 2x16 MLPs trained on moons from seeds 0 and 1 (float32), and the data."""
    splits = build_splits("moons", n_train=300, n_test=300, noise=0.2)
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("mlp", num_classes=2, in_shape=(2,), width=16)
        res = train(
            model, splits.train, splits.test, TrainSpec(epochs=15, batch_size=50, lr=0.05, seed=seed), progress=False
        )
        out.append(res)
    return model, splits, out[0], out[1]


def _barrier(model, curve, splits) -> float:
    table = evaluate_path(model, curve, torch.linspace(0, 1, 21), test=make_loader(splits.test, 300))
    return loss_barrier(table["test_loss"])


def test_fitted_bezier_lowers_the_barrier_on_moons(moons_pair) -> None:
    model, splits, ra, rb = moons_pair
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    line = Line(ra.final_params, rb.final_params)
    curve = Bezier(ra.final_params, rb.final_params)
    events = []
    res = fit_curve(
        model,
        curve,
        splits.train,
        CurveFitSpec(epochs=8, batch_size=50, seed=0),
        progress=False,
        callbacks=[events.append],
    )
    line_barrier, curve_barrier = _barrier(model, line, splits), _barrier(model, curve, splits)
    assert line_barrier > 0.05
    assert curve_barrier < 0.6 * line_barrier
    # Model untouched; schedule followed; progress reported.
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert res.steps == 8 * 6 and len(res.history) == 8
    spec = CurveFitSpec(epochs=8, batch_size=50)
    assert res.history["lr"][-1] == pytest.approx(spec.lr * lr_factor(spec, (res.steps - 1) / res.steps))
    assert [e.kind for e in events][:2] == ["start", "step"] and events[-1].kind == "end"
    assert sum(e.kind == "step" for e in events) == res.steps


def test_fit_is_deterministic_and_weight_decay_acts_on_phi(moons_pair) -> None:
    model, splits, ra, rb = moons_pair
    small = ArrayDataset(splits.train.inputs[:100], splits.train.targets[:100], 2)

    def fitted(wd: float, k: int) -> dict:
        curve = PolyChain(ra.final_params, rb.final_params)
        fit_curve(
            model,
            curve,
            small,
            CurveFitSpec(epochs=3, batch_size=25, weight_decay=wd, t_per_batch=k, seed=3),
            progress=False,
        )
        return curve.apex()

    one, again = fitted(0.0, 2), fitted(0.0, 2)
    assert all(torch.equal(one[n], again[n]) for n in one)
    decayed = fitted(0.5, 2)
    norm = lambda d: math.sqrt(sum(float(v.square().sum()) for v in d.values()))  # noqa: E731
    assert norm(decayed) < 0.95 * norm(one)


def test_fit_with_batchnorm_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = build_model("preresnet", num_classes=3, in_shape=(3, 8, 8), depth=8)
    a = get_params(model)
    b = {n: v + 0.1 * torch.randn_like(v) for n, v in a.items()}
    buffers = get_buffers(model)
    data = ArrayDataset(torch.randn(17, 3, 8, 8), torch.randint(0, 3, (17,)), 3)
    curve = Bezier(a, b)
    start = {n: v.clone() for n, v in curve.bends[0].items()}
    res = fit_curve(model, curve, data, CurveFitSpec(epochs=1, batch_size=8), progress=False)
    # 17 = 2 * 8 + 1: the single-sample batch that would break BatchNorm is dropped.
    assert res.steps == 2
    assert any(not torch.equal(start[n], v) for n, v in curve.bends[0].items())
    assert all(torch.equal(buffers[n], v) for n, v in model.named_buffers())
    assert model.training


def test_fit_rejects_bad_input() -> None:
    a, b, _ = _pts()
    model = build_model("mlp", num_classes=2, in_shape=(2,), depth=0)
    params = get_params(model)
    empty = ArrayDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="train_data: expected a non-empty dataset"):
        fit_curve(model, Bezier(params, params), empty, progress=False)
    with pytest.raises(ValueError, match="line bends: expected at least one trainable control point"):
        fit_curve(model, Line(params, params), empty, progress=False)
    data = ArrayDataset(torch.randn(8, 2), torch.randint(0, 2, (8,)), 2)
    with pytest.raises(ValueError, match="parameters of model and curve differ"):
        fit_curve(model, Bezier(a, b), data, progress=False)
    with pytest.raises(ValueError, match="t_per_batch: expected an integer > 0"):
        CurveFitSpec(t_per_batch=0)


def test_fit_raises_on_non_finite_loss() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=2, in_shape=(2,), width=8)
    a = get_params(model)
    b = {n: v + 1.0 for n, v in a.items()}
    data = ArrayDataset(torch.randn(40, 2), torch.randint(0, 2, (40,)), 2)
    with pytest.raises(NonFiniteLossError, match="curve fitting loss became"):
        fit_curve(
            model, Bezier(a, b), data, CurveFitSpec(epochs=5, batch_size=10, lr=1e25, momentum=0.0), progress=False
        )


class _SharedModule(torch.nn.Module):
    """One linear layer registered under two names and applied twice."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Linear(3, 3)
        self.dec = self.enc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.relu(self.enc(x)))


class _SharedWeight(_SharedModule):
    """Two linear layers sharing one weight tensor (tied across modules), separate biases."""

    def __init__(self) -> None:
        super().__init__()
        self.dec = torch.nn.Linear(3, 3)
        self.dec.weight = self.enc.weight


def test_tied_tensors_are_detected() -> None:
    assert has_tied_tensors(_SharedWeight())
    assert not has_tied_tensors(_SharedModule())  # one module under two names: nothing to untie
    assert not has_tied_tensors(build_model("preresnet", num_classes=2, in_shape=(3, 8, 8), depth=8))


@pytest.mark.parametrize("cls", [_SharedModule, _SharedWeight])
def test_fit_with_shared_weights_leaves_the_model_alone(cls: type) -> None:
    torch.manual_seed(0)
    model = cls()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # a use of a weight that phi(t) did not reach would output zeros
    a = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    b = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    data = ArrayDataset(torch.randn(60, 3), torch.randint(0, 3, (60,)), 3)
    curve = Bezier(a, b)
    res = fit_curve(model, curve, data, CurveFitSpec(epochs=2, batch_size=20), progress=False)
    assert abs(res.history["loss"][0] - math.log(3.0)) > 1e-3
    assert all(isinstance(p, torch.nn.Parameter) and float(p.detach().abs().sum()) == 0.0 for p in model.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_curve_fit_and_path_on_cuda() -> None:
    tr = build_dataset("gaussmix256", "train", n_train=256, n_test=128)
    te = build_dataset("gaussmix256", "test", n_train=256, n_test=128)
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, in_shape=(1, 16, 16), batchnorm=True)
    a = train(model, tr, te, TrainSpec(epochs=2, device="cuda"), progress=False)
    torch.manual_seed(1)
    b = train(
        build_model("cnn", num_classes=10, in_shape=(1, 16, 16), batchnorm=True),
        tr,
        te,
        TrainSpec(epochs=2, seed=1, device="cuda"),
        progress=False,
    )
    model.cuda()
    curve = Bezier({k: v.cuda() for k, v in a.final_params.items()}, {k: v.cuda() for k, v in b.final_params.items()})
    fit_curve(model, curve, tr, CurveFitSpec(epochs=1, batch_size=64), progress=False)
    assert all(t.device.type == "cuda" for t in curve.parameters())
    loader = list(make_loader(te, 64))
    table = evaluate_path(
        model,
        curve,
        [0.0, 0.5, 1.0],
        loader,
        loader,
        bn_batches=list(make_loader(tr, 64))[:2],
        endpoint_buffers=(
            {k: v.cuda() for k, v in a.final_buffers.items()},
            {k: v.cuda() for k, v in b.final_buffers.items()},
        ),
    )
    assert table["test_acc"][0] == pytest.approx(a.final["test"].acc)
