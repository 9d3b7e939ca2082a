"""Weight matching: function preservation on every supported architecture, recovery of a known
permutation, a lower linear barrier on moons, and bad input.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from lgeom.align import apply_permutation, permutation_spec, weight_matching
from lgeom.curves import Line
from lgeom.data import build_splits, make_loader
from lgeom.models import build_model
from lgeom.multipoint import evaluate_path
from lgeom.params import get_buffers, get_params
from lgeom.path import loss_barrier
from lgeom.train import TrainSpec, train
from tests.lgeom.cases import randomize_bn_state

D = torch.float64
ARCHS = [
    ("mlp", (5,), {"depth": 3, "width": 8}),
    ("resmlp", (5,), {"blocks": 2, "width": 8}),
    ("cnn", (3, 8, 8), {"channels": 4}),
    ("cnn", (3, 8, 8), {"channels": 4, "batchnorm": True}),
    ("rescnn", (3, 8, 8), {"channels": 4}),
    ("rescnn", (3, 8, 8), {"channels": 4, "batchnorm": True}),
    ("preresnet", (3, 8, 8), {"depth": 8}),
    ("preresnet", (3, 8, 8), {"depth": 47}),  # bottleneck blocks
]


def _model(arch: str, shape: tuple, kw: dict, seed: int) -> torch.nn.Module:
    """A float64 model in eval mode with random biases, BN affine parameters and running statistics."""
    torch.manual_seed(seed)
    return randomize_bn_state(build_model(arch, num_classes=3, in_shape=shape, **kw).double())


@pytest.mark.parametrize(("arch", "shape", "kw"), ARCHS, ids=lambda v: str(v))
def test_alignment_keeps_the_function(arch: str, shape: tuple, kw: dict) -> None:
    model_b = _model(arch, shape, kw, seed=1)
    a = get_params(_model(arch, shape, kw, seed=0))
    al = weight_matching(model_b, a, get_params(model_b), buffers_b=get_buffers(model_b))
    x = torch.randn(4, *shape, dtype=D, generator=torch.Generator().manual_seed(2))
    before = model_b(x)
    after = functional_call(model_b, {**al.params, **al.buffers}, (x,))
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-10)
    changed = [p for p, idx in al.perms.items() if not torch.equal(idx, torch.arange(len(idx)))]
    assert changed, "weight matching of two random networks should move some units"
    assert all(torch.equal(torch.sort(idx).values, torch.arange(len(idx))) for idx in al.perms.values())
    assert al.similarity_after >= al.similarity_before
    if any(n.endswith("running_mean") for n in al.buffers):
        assert any(
            not torch.equal(al.buffers[n], v) for n, v in get_buffers(model_b).items() if n.endswith("running_mean")
        )


@pytest.mark.parametrize(("arch", "shape", "kw"), [ARCHS[0], ARCHS[5], ARCHS[6]], ids=lambda v: str(v))
def test_a_permuted_copy_is_matched_back(arch: str, shape: tuple, kw: dict) -> None:
    model = _model(arch, shape, kw, seed=0)
    spec = permutation_spec(model)
    gen = torch.Generator().manual_seed(5)
    perms = {p: torch.randperm(n, generator=gen) for p, n in spec.sizes.items()}
    a, buffers = get_params(model), get_buffers(model)
    shuffled = apply_permutation(spec, perms, a)
    assert any(not torch.equal(shuffled[n], a[n]) for n in a)
    al = weight_matching(model, a, shuffled, buffers_b=apply_permutation(spec, perms, buffers))
    for n in a:
        torch.testing.assert_close(al.params[n], a[n], rtol=0, atol=0)
    for n in buffers:
        torch.testing.assert_close(al.buffers[n], buffers[n], rtol=0, atol=0)


def test_alignment_lowers_the_linear_barrier_on_moons() -> None:
    splits = build_splits("moons", n_train=300, n_test=300, noise=0.2)
    results = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("mlp", num_classes=2, in_shape=(2,), width=16)
        results.append(
            train(model, splits.train, None, TrainSpec(epochs=15, batch_size=50, lr=0.05, seed=seed), progress=False)
        )
    a, b = results[0].final_params, results[1].final_params
    al = weight_matching(model, a, b)
    test = make_loader(splits.test, 300)
    ts = torch.linspace(0, 1, 21)
    plain = loss_barrier(evaluate_path(model, Line(a, b), ts, test=test)["test_loss"])
    aligned = evaluate_path(model, Line(a, al.params), ts, test=test)
    # t = 1 of the aligned line is B itself, as a function
    end = evaluate_path(model, Line(a, b), [1.0], test=test)
    assert aligned["test_loss"][-1] == pytest.approx(end["test_loss"][0], rel=1e-5)
    assert loss_barrier(aligned["test_loss"]) < 0.6 * plain


def test_bad_input() -> None:
    model = build_model("mlp", num_classes=2, in_shape=(4,), width=8)
    a = get_params(model)
    wider = get_params(build_model("mlp", num_classes=2, in_shape=(4,), width=9))
    with pytest.raises(ValueError, match=r"parameter 'hidden.0.weight': expected shape \(8, 4\)"):
        weight_matching(model, a, wider)
    bn = build_model("cnn", num_classes=2, in_shape=(1, 4, 4), channels=2, batchnorm=True)
    with pytest.raises(ValueError, match="buffers_b: expected B's BatchNorm running statistics"):
        weight_matching(bn, get_params(bn), get_params(bn))
    # Models without a hand-written spec get one traced from their graph; see permutation/test_fx_trace.py.
    assert permutation_spec(torch.nn.Linear(2, 2)).sizes == {}
    with pytest.raises(ValueError, match="max_iter: expected an integer > 0"):
        weight_matching(model, a, a, max_iter=0)
