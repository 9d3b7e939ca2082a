"""Evaluation at parameter points and the BN policy."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from lgeom.curves import Bezier, Line
from lgeom.data import build_dataset, build_splits, make_loader
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


def _bn_inputs(model: torch.nn.Module, batches: list) -> dict[str, list[torch.Tensor]]:
    """The input of every BatchNorm layer for each batch, in train mode (on a copy of the model)."""
    ref = copy.deepcopy(model).train()
    seen: dict[str, list[torch.Tensor]] = {}
    for name, m in ref.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.register_forward_hook(lambda mod, args, out, name=name: seen.setdefault(name, []).append(args[0].detach()))
    with torch.no_grad():
        for x, _ in batches:
            ref(x)
    return seen


def test_recompute_weights_batches_by_size_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, in_shape=(1, 6, 6), channels=3, batchnorm=True).double().eval()
    model.bn1.momentum = 0.3  # a module's own momentum is restored afterwards
    own = get_buffers(model)
    batches = _batches((1, 6, 6), [64, 36], seed=2)
    new = recompute_bn_stats(model, get_params(model), batches)
    inputs = _bn_inputs(model, batches)
    assert len(inputs) >= 2
    for name, xs in inputs.items():
        dims = [0] + list(range(2, xs[0].dim()))
        sizes = [x.numel() / x.shape[1] for x in xs]
        total = sum(sizes)
        mean = sum(x.sum(dim=dims) for x in xs) / total  # the mean over all samples, as one batch of 100 has it
        var = sum(s / total * x.var(dim=dims, unbiased=True) for s, x in zip(sizes, xs))
        torch.testing.assert_close(new[f"{name}.running_mean"], mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(new[f"{name}.running_var"], var, rtol=1e-12, atol=1e-12)
        assert int(new[f"{name}.num_batches_tracked"]) == 2
    # The first BatchNorm layer sees the same inputs whatever the batching: its mean is the one-batch mean.
    whole = recompute_bn_stats(model, get_params(model), [(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))])
    first = next(iter(inputs))
    torch.testing.assert_close(new[f"{first}.running_mean"], whole[f"{first}.running_mean"], rtol=1e-12, atol=1e-12)
    assert all(torch.equal(own[n], b) for n, b in model.named_buffers())
    assert not model.training and model.bn1.momentum == 0.3
    # With equal batch sizes the weighting is the cumulative average torch's update_bn computes.
    equal = _batches((1, 6, 6), [5, 5, 5], seed=3)
    reference = copy.deepcopy(model)
    torch.optim.swa_utils.update_bn([x for x, _ in equal], reference)
    eq = recompute_bn_stats(model, get_params(model), equal)
    for name, value in reference.state_dict().items():
        if "running" in name:
            torch.testing.assert_close(eq[name], value, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="bn_batches: expected at least one batch"):
        recompute_bn_stats(model, get_params(model), [])
    with pytest.raises(ValueError, match="bn_batches: expected training batches"):
        evaluate_point(model, get_params(model), {"test": batches})


def test_a_ragged_last_bn_batch_does_not_bias_the_statistics() -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).double()
    x = torch.randn(100, 4, dtype=D, generator=torch.Generator().manual_seed(4)) * 3 + 1
    y = torch.zeros(100, dtype=torch.long)
    ragged = recompute_bn_stats(model, get_params(model), [(x[:64], y[:64]), (x[64:], y[64:])])
    whole = recompute_bn_stats(model, get_params(model), [(x, y)])
    torch.testing.assert_close(ragged["1.running_mean"], whole["1.running_mean"], rtol=1e-12, atol=1e-12)
    h = model[0](x).detach()
    within = 0.64 * h[:64].var(dim=0) + 0.36 * h[64:].var(dim=0)
    torch.testing.assert_close(ragged["1.running_var"], within, rtol=1e-12, atol=1e-12)


def test_evaluate_accepts_a_dataset() -> None:
    ds = build_dataset("moons", "test", n_train=64, n_test=600, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=2, in_shape=(2,), width=8)
    res = evaluate(model, ds)
    ref = evaluate(model, make_loader(ds, 7))
    assert res.n == 600 and res.loss == pytest.approx(ref.loss, rel=1e-6) and res.acc == pytest.approx(ref.acc)
    table = evaluate_path(model, Line(get_params(model), get_params(model)), [0.0, 1.0], train=ds, test=ds)
    assert table["test_loss"][0] == pytest.approx(ref.loss, rel=1e-6) and table["train_acc"][1] == pytest.approx(ref.acc)
    point = evaluate_point(model, get_params(model), {"test": ds})["test"]
    assert point.loss == pytest.approx(ref.loss, rel=1e-6)
    with pytest.raises(ValueError, match="data: expected a non-empty dataset"):
        evaluate(model, ds.subset(torch.zeros(0, dtype=torch.long)))


def test_bn_statistics_and_path_from_datasets(bn_endpoints) -> None:
    model, splits, (ra, rb) = bn_endpoints
    params = ra.final_params
    from_ds = recompute_bn_stats(model, params, splits.train)
    from_batches = recompute_bn_stats(model, params, make_loader(splits.train, 512))
    for name, value in from_batches.items():
        torch.testing.assert_close(from_ds[name], value)
    table = evaluate_path(model, Line(ra.final_params, rb.final_params), [0.5], test=splits.test, bn_batches=splits.train)
    mid = {n: v.detach() for n, v in Line(ra.final_params, rb.final_params).point(0.5).items()}
    ref = evaluate_point(model, mid, {"test": make_loader(splits.test, 64)}, bn_batches=make_loader(splits.train, 512))["test"]
    assert table["test_loss"][0] == pytest.approx(ref.loss, rel=1e-5)


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
