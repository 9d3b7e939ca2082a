"""Evaluation at parameter points and the BN policy."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from lgeom.curves import Bezier, Line
from lgeom.data import build_splits, make_loader
from lgeom.evaluate import evaluate, evaluate_path, evaluate_point, recompute_bn_stats
from lgeom.models import build_model
from lgeom.params import get_buffers, get_params
from lgeom.train import TrainSpec, train

D = torch.float64


def _batches(shape: tuple, sizes: list[int], seed: int) -> list:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, *shape, dtype=D, generator=gen), torch.randint(0, 3, (n,), generator=gen)) for n in sizes]


def test_uneven_batches_are_weighted_by_size() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=3, in_shape=(4,), width=5).double()
    batches = _batches((4,), [7, 7, 1], seed=1)
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    res = evaluate(model, batches)
    with torch.no_grad():
        logits = model(x)
    assert res.n == 15
    assert res.loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-13)
    assert res.acc == pytest.approx(100.0 * float((logits.argmax(1) == y).double().mean()))
    # float32 inputs are evaluated in the parameters' dtype (float64 checks stay exact)
    res32 = evaluate(model, [(xb.float(), yb) for xb, yb in batches])
    assert res32.loss == pytest.approx(res.loss, rel=1e-6)


def test_recompute_matches_update_bn_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, in_shape=(1, 6, 6), channels=3, batchnorm=True).double().eval()
    own = get_buffers(model)
    batches = _batches((1, 6, 6), [5, 5, 3], seed=2)
    new = recompute_bn_stats(model, get_params(model), batches)
    reference = copy.deepcopy(model)
    torch.optim.swa_utils.update_bn([x for x, _ in batches], reference)
    for name, value in reference.state_dict().items():
        if "running" in name:
            torch.testing.assert_close(new[name], value, rtol=1e-12, atol=1e-12)
    assert all(torch.equal(own[n], b) for n, b in model.named_buffers())
    assert not model.training
    with pytest.raises(ValueError, match="bn_batches: expected at least one batch"):
        recompute_bn_stats(model, get_params(model), [])
    with pytest.raises(ValueError, match="bn_batches: expected training batches"):
        evaluate_point(model, get_params(model), {"test": batches})


@pytest.fixture(scope="module")
def bn_endpoints():
    """Two small BN CNNs trained a few steps on gaussmix256 (1x16x16) from seeds 0 and 1."""
    splits = build_splits("gaussmix256", n_train=120, n_test=80, classes=3)
    results = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("cnn", num_classes=3, in_shape=(1, 16, 16), channels=4, batchnorm=True)
        results.append(train(model, splits.train, splits.test, TrainSpec(epochs=2, batch_size=30, lr=0.05, seed=seed),
                             progress=False))
    return model, splits, results


def test_path_at_the_endpoints_reproduces_the_trained_models(bn_endpoints) -> None:
    model, splits, (ra, rb) = bn_endpoints
    test = make_loader(splits.test, 32)
    train_eval = make_loader(splits.train, 64)
    bn = [(x, y) for x, y in make_loader(splits.train, 40)]
    curve = Bezier(ra.final_params, rb.final_params)
    table = evaluate_path(model, curve, [0.0, 0.5, 1.0], train_eval, test, bn_batches=bn,
                          endpoint_buffers=(ra.final_buffers, rb.final_buffers))
    for i, res in ((0, ra), (2, rb)):
        assert table["test_acc"][i] == res.final["test"].acc
        assert table["test_loss"][i] == pytest.approx(res.final["test"].loss, rel=1e-6)
        assert table["train_acc"][i] == res.final["train"].acc
    # Interior points follow the BN policy: statistics recomputed on bn_batches, as evaluate_point does.
    mid = {n: v.detach() for n, v in curve.point(0.5).items()}
    ref = evaluate_point(model, mid, {"test": test}, bn_batches=bn)["test"]
    assert table["test_loss"][1] == pytest.approx(ref.loss, rel=1e-5)
    assert table["test_acc"][1] == pytest.approx(ref.acc)


def test_path_without_endpoint_buffers_recomputes_at_the_endpoints(bn_endpoints) -> None:
    model, splits, (ra, rb) = bn_endpoints
    bn = list(make_loader(splits.train, 40))
    test = list(make_loader(splits.test, 80))
    table = evaluate_path(model, Line(ra.final_params, rb.final_params), [0.0], test=iter(test), bn_batches=iter(bn))
    ref = evaluate_point(model, ra.final_params, {"test": test}, bn_batches=bn)["test"]
    assert table["test_loss"][0] == pytest.approx(ref.loss, rel=1e-5)


def test_path_bad_input() -> None:
    model = build_model("mlp", num_classes=3, in_shape=(4,), width=5).double()
    p = get_params(model)
    line = Line(p, p)
    data = _batches((4,), [3], seed=0)
    with pytest.raises(ValueError, match=r"t: expected a value in \[0, 1\], got 1.2"):
        evaluate_path(model, line, [0.0, 1.2], test=data)
    with pytest.raises(ValueError, match="splits: expected train and/or test batches"):
        evaluate_path(model, line, [0.5])
    with pytest.raises(ValueError, match="expected a non-empty dataset"):
        evaluate_path(model, line, [0.5], test=[])
    with pytest.raises(ValueError, match="data: expected a non-empty dataset"):
        evaluate(model, [])
    table = evaluate_path(model, line, None, test=data)
    assert len(table) == 61 and table["t"][0] == 0.0 and table["t"][-1] == 1.0
