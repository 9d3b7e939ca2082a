"""The BN policy (:mod:`lgeom.batchnorm`): which statistics a point gets, and their recompute."""

from __future__ import annotations

import copy

import pytest
import torch

from lgeom.batchnorm import (
    bn_statistics,
    recompute_bn_stats,
    recompute_bn_stats_stacked,
)
from lgeom.evaluate import evaluate_point
from lgeom.models import build_model
from lgeom.params import get_buffers, get_params, stack_points
from tests.lgeom.cases import CASES, get_case, sized_batches

D = torch.float64


def _bn_inputs(model: torch.nn.Module, batches: list) -> dict[str, list[torch.Tensor]]:
    """The input of every BatchNorm layer for each batch, in train mode (on a copy of the model)."""
    ref = copy.deepcopy(model).train()
    seen: dict[str, list[torch.Tensor]] = {}
    for name, m in ref.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.register_forward_hook(
                lambda mod, args, out, name=name: seen.setdefault(name, []).append(args[0].detach())
            )
    with torch.no_grad():
        for x, _ in batches:
            ref(x)
    return seen


def test_recompute_weights_batches_by_size_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, in_shape=(1, 6, 6), channels=3, batchnorm=True).double().eval()
    model.bn1.momentum = 0.3  # a module's own momentum is restored afterwards
    own = get_buffers(model)
    batches = sized_batches((1, 6, 6), [64, 36], seed=2)
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
    whole = recompute_bn_stats(
        model, get_params(model), [(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))]
    )
    first = next(iter(inputs))
    torch.testing.assert_close(new[f"{first}.running_mean"], whole[f"{first}.running_mean"], rtol=1e-12, atol=1e-12)
    assert all(torch.equal(own[n], b) for n, b in model.named_buffers())
    assert not model.training and model.bn1.momentum == 0.3
    # With equal batch sizes the weighting is the cumulative average torch's update_bn computes.
    equal = sized_batches((1, 6, 6), [5, 5, 5], seed=3)
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
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.ReLU(), torch.nn.Linear(5, 3)
    ).double()
    x = torch.randn(100, 4, dtype=D, generator=torch.Generator().manual_seed(4)) * 3 + 1
    y = torch.zeros(100, dtype=torch.long)
    ragged = recompute_bn_stats(model, get_params(model), [(x[:64], y[:64]), (x[64:], y[64:])])
    whole = recompute_bn_stats(model, get_params(model), [(x, y)])
    torch.testing.assert_close(ragged["1.running_mean"], whole["1.running_mean"], rtol=1e-12, atol=1e-12)
    h = model[0](x).detach()
    within = 0.64 * h[:64].var(dim=0) + 0.36 * h[64:].var(dim=0)
    torch.testing.assert_close(ragged["1.running_var"], within, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_policy_recomputes_off_endpoints_as_torch_batchnorm_does(name: str) -> None:
    c = get_case(name)
    stats = bn_statistics(c.model, c.params, endpoint=False, bn_batches=c.bn_batches)
    if c.bn_batches is None:
        assert stats.source is None and stats.buffers is None
        return
    assert stats.source == "recomputed"
    assert set(stats.buffers) == set(c.buffers)
    for n, ref in c.buffers.items():
        torch.testing.assert_close(stats.buffers[n], ref, rtol=1e-12, atol=1e-12)


def test_policy_keeps_endpoint_statistics_and_needs_batches_elsewhere() -> None:
    c = get_case("bn_cnn")
    trained = {n: b + 1.0 for n, b in get_buffers(c.model).items()}
    given = bn_statistics(c.model, c.params, endpoint=True, buffers=trained)
    assert given.source == "given" and all(torch.equal(given.buffers[n], trained[n]) for n in trained)
    own = bn_statistics(c.model, c.params, endpoint=True)
    assert own.source == "model" and own.buffers is None
    with pytest.raises(ValueError, match="bn_batches: expected training batches to recompute BatchNorm statistics"):
        bn_statistics(c.model, c.params, endpoint=False, buffers=trained)
    plain = get_case("mlp")
    assert bn_statistics(plain.model, plain.params, endpoint=False).source is None


def test_stacked_twin_matches_the_single_point_recompute() -> None:
    c = get_case("bn_cnn")
    points = [c.params, {n: v * 0.9 for n, v in c.params.items()}]
    bn = sized_batches((3, 4, 4), [6, 3], seed=5)  # a ragged last batch: both weight by size
    stacked = bn_statistics(c.model, stack_points(points), endpoint=False, bn_batches=bn, stacked=True)
    for i, p in enumerate(points):
        single = recompute_bn_stats(c.model, p, bn)
        for n, v in single.items():
            torch.testing.assert_close(stacked.buffers[n][i], v.to(stacked.buffers[n].dtype), rtol=1e-12, atol=1e-12)
    direct = recompute_bn_stats_stacked(c.model, stack_points(points), bn, get_buffers(c.model))
    for n, v in direct.items():
        torch.testing.assert_close(stacked.buffers[n], v, rtol=0, atol=0)
