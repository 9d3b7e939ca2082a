"""Batched evaluation of many points (:mod:`lgeom.multipoint`): lists, affine grids and paths."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lgeom.batchnorm import recompute_bn_stats
from lgeom.curves import Bezier, Line, PolyChain
from lgeom.data import build_splits, make_loader
from lgeom.evaluate import evaluate, evaluate_point
from lgeom.models import build_model
from lgeom.multipoint import (
    auto_chunk_size,
    evaluate_affine,
    evaluate_path,
    evaluate_points,
    evaluate_points_splits,
)
from lgeom.params import get_params
from lgeom.train import TrainSpec, train
from tests.lgeom.cases import CASES, acb_points, get_case, random_batches, sized_batches


@pytest.mark.parametrize(("arch", "shape", "kw"), [("mlp", (4,), {"width": 6}), ("preresnet", (3, 8, 8), {"depth": 8})])
def test_vmap_and_loop_agree(arch: str, shape: tuple, kw: dict) -> None:
    model, a, c, b = acb_points(arch, shape, **kw)
    points = [PolyChain(a, b, [c]).point(t) for t in (0.1, 0.5, 0.8)]
    points = [{n: v.detach() for n, v in p.items()} for p in points]
    splits = {"x": random_batches(shape, 2, 5, 5), "y": random_batches(shape, 1, 3, 6)}
    bn = random_batches(shape, 2, 4, 7)
    vm = evaluate_points_splits(model, points, splits, bn_batches=bn, method="vmap", chunk_size=2)
    lp = evaluate_points_splits(model, points, splits, bn_batches=bn, method="loop")
    for k in splits:
        assert vm[k].method == "vmap" and lp[k].method == "loop" and vm[k].n == lp[k].n
        np.testing.assert_allclose(vm[k].loss, lp[k].loss, rtol=1e-10)
        np.testing.assert_allclose(vm[k].acc, lp[k].acc)
    single = evaluate_points(model, points, splits["x"], bn_batches=bn)
    np.testing.assert_allclose(single.loss, vm["x"].loss, rtol=1e-10)


def test_affine_points_and_chunking() -> None:
    model, a, c, b = acb_points("mlp", (4,), width=6)
    data = iter(random_batches((4,), 2, 5, 8))  # a one-shot iterator is materialised once
    d = {n: b[n] - a[n] for n in a}
    coords = np.array([[0.0], [0.5], [1.0]])
    res = evaluate_affine(model, a, [d], coords, {"d": data}, chunk_size=2)["d"]
    ref = evaluate_points(
        model, [a, {n: 0.5 * (a[n] + b[n]) for n in a}, b], random_batches((4,), 2, 5, 8), method="loop"
    )
    np.testing.assert_allclose(res.loss, ref.loss, rtol=1e-10)
    assert 1 <= auto_chunk_size(model, a, {"d": random_batches((4,), 1, 5, 9)}) <= 128
    with pytest.raises(ValueError, match=r"coords: expected an array of shape \(P, 1\)"):
        evaluate_affine(model, a, [d], np.zeros((3, 2)), {"d": random_batches((4,), 1, 5, 8)})


class _SharedWeight(torch.nn.Module):
    """Two linear layers sharing one weight tensor: every point must reach both uses."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Linear(3, 3)
        self.dec = torch.nn.Linear(3, 3)
        self.dec.weight = self.enc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.relu(self.enc(x)))


def test_points_reach_weights_shared_across_modules() -> None:
    torch.manual_seed(0)
    model = _SharedWeight().double()
    points = [{n: torch.randn_like(p) for n, p in model.named_parameters()} for _ in range(3)]
    data = random_batches((3,), 2, 5, 1)
    got = evaluate_points(model, points, data, method="vmap")
    for i, p in enumerate(points):
        loss = 0.0
        for x, y in data:
            h = torch.relu(x @ p["enc.weight"].T + p["enc.bias"])
            loss += float(torch.nn.functional.cross_entropy(h @ p["enc.weight"].T + p["dec.bias"], y, reduction="sum"))
        assert got.loss[i] == pytest.approx(loss / 10, rel=1e-12)


def test_grid_errors() -> None:
    model, a, _, _ = acb_points("mlp", (4,), width=6)
    data = random_batches((4,), 1, 5, 0)
    with pytest.raises(ValueError, match="points: expected at least one parameter point"):
        evaluate_points(model, [], data)
    with pytest.raises(ValueError, match="method: expected 'auto', 'vmap' or 'loop'"):
        evaluate_points(model, [a], data, method="fast")
    with pytest.raises(ValueError, match="data: expected a non-empty dataset"):
        evaluate_points(model, [a], [])
    bn_model = build_model("cnn", num_classes=3, in_shape=(1, 4, 4), channels=2, batchnorm=True).double()
    with pytest.raises(ValueError, match="bn_batches: expected training batches"):
        evaluate_points(bn_model, [get_params(bn_model)], random_batches((1, 4, 4), 1, 3, 0))


class _DataDependent(torch.nn.Module):
    """A model whose forward reads a tensor's value in Python: ``vmap`` cannot batch it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return h * 2.0 if float(h.sum()) > 0 else h


def test_auto_falls_back_to_the_loop_where_vmap_fails() -> None:
    torch.manual_seed(0)
    model = _DataDependent().double()
    points = [{n: torch.randn_like(p) for n, p in model.named_parameters()} for _ in range(3)]
    data = random_batches((4,), 2, 5, 3)
    auto = evaluate_points(model, points, data, method="auto")
    loop = evaluate_points(model, points, data, method="loop")
    assert auto.method == "loop"
    np.testing.assert_allclose(auto.loss, loop.loss, rtol=1e-12)
    np.testing.assert_allclose(auto.acc, loop.acc)
    for i, p in enumerate(points):
        assert auto.loss[i] == pytest.approx(evaluate_point(model, p, {"d": data})["d"].loss, rel=1e-12)
    with pytest.raises(RuntimeError):
        evaluate_points(model, points, data, method="vmap")


def test_bn_statistics_and_path_from_datasets(bn_endpoints) -> None:
    model, splits, (ra, rb) = bn_endpoints
    params = ra.final_params
    from_ds = recompute_bn_stats(model, params, splits.train)
    from_batches = recompute_bn_stats(model, params, make_loader(splits.train, 512))
    for name, value in from_batches.items():
        torch.testing.assert_close(from_ds[name], value)
    table = evaluate_path(
        model, Line(ra.final_params, rb.final_params), [0.5], test=splits.test, bn_batches=splits.train
    )
    mid = {n: v.detach() for n, v in Line(ra.final_params, rb.final_params).point(0.5).items()}
    ref = evaluate_point(model, mid, {"test": make_loader(splits.test, 64)}, bn_batches=make_loader(splits.train, 512))[
        "test"
    ]
    assert table["test_loss"][0] == pytest.approx(ref.loss, rel=1e-5)


@pytest.fixture(scope="module")
def bn_endpoints():
    """Two small BN CNNs trained a few steps on gaussmix256 (1x16x16) from seeds 0 and 1."""
    splits = build_splits("gaussmix256", n_train=120, n_test=80, classes=3)
    results = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("cnn", num_classes=3, in_shape=(1, 16, 16), channels=4, batchnorm=True)
        results.append(
            train(
                model, splits.train, splits.test, TrainSpec(epochs=2, batch_size=30, lr=0.05, seed=seed), progress=False
            )
        )
    return model, splits, results


def test_path_at_the_endpoints_reproduces_the_trained_models(bn_endpoints) -> None:
    model, splits, (ra, rb) = bn_endpoints
    test = make_loader(splits.test, 32)
    train_eval = make_loader(splits.train, 64)
    bn = [(x, y) for x, y in make_loader(splits.train, 40)]
    curve = Bezier(ra.final_params, rb.final_params)
    table = evaluate_path(
        model,
        curve,
        [0.0, 0.5, 1.0],
        train_eval,
        test,
        bn_batches=bn,
        endpoint_buffers=(ra.final_buffers, rb.final_buffers),
    )
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
    data = sized_batches((4,), [3], seed=0)
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


@pytest.mark.parametrize("name", CASES)
def test_points_off_the_endpoints_match_the_reference_loss(name: str) -> None:
    c = get_case(name)
    res = evaluate_points(c.model, [c.params], c.data, bn_batches=c.bn_batches)
    assert res.loss[0] == pytest.approx(c.loss(), rel=1e-12)


@pytest.mark.parametrize("name", ["mlp", "bn_cnn"])
def test_one_large_chunk_reports_progress_batch_by_batch_with_the_same_values(name: str) -> None:
    case = get_case(name)
    points = [{n: v + 0.01 * i for n, v in case.params.items()} for i in range(6)]
    events = []
    res = evaluate_points(
        case.model,
        points,
        case.data,
        bn_batches=case.bn_batches,
        chunk_size=6,
        method="vmap",
        callbacks=[events.append],
    )
    steps = [e.step for e in events]
    assert all(e.task == "grid" and e.kind == "step" and e.total == 6 for e in events)
    assert steps[-1] == 6 and len(steps) > 1 and steps == sorted(set(steps))  # rising, before the chunk ends
    quiet = evaluate_points(case.model, points, case.data, bn_batches=case.bn_batches, chunk_size=6, method="vmap")
    np.testing.assert_array_equal(res.loss, quiet.loss)


@pytest.mark.parametrize("fastpath", [True, False])
def test_attention_is_batched_by_vmap_not_looped_inside_it(fastpath: bool) -> None:
    # nn.MultiheadAttention's eval fast path and SDPA's fused CPU kernel have no vmap batching rule: torch would
    # warn "performance drop ... batching rule" and loop over the points inside the vmapped forward.
    case = get_case("vit")
    points = [{n: v + 0.01 * i for n, v in case.params.items()} for i in range(5)]
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fastpath)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            batched = evaluate_points(case.model, points, case.data, method="vmap")
        assert torch.backends.mha.get_fastpath_enabled() is fastpath  # the user's setting is restored
    finally:
        torch.backends.mha.set_fastpath_enabled(before)
    assert batched.method == "vmap"
    assert not [str(w.message) for w in seen if "batching rule" in str(w.message)]
    looped = evaluate_points(case.model, points, case.data, method="loop")  # the fast path, one point at a time
    np.testing.assert_allclose(batched.loss, looped.loss, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(batched.acc, looped.acc)
