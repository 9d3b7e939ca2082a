"""Optimisers and learning-rate schedules: the factor at known points of training, the optimiser each name
builds, the weight-decay override, setting the rate, and bad values reported together.
"""

from __future__ import annotations

import math

import pytest
import torch

from lgeom.optim import OptimSpec, build_optimizer, lr_factor, set_lr
from lgeom.specs import SpecError


@pytest.mark.parametrize(
    ("schedule", "progress", "factor"),
    [
        ("constant", 0.7, 1.0),
        ("piecewise", 0.0, 1.0),
        ("piecewise", 0.5, 1.0),
        ("piecewise", 0.7, 1.0 - 0.5 * 0.99),
        ("piecewise", 0.9, 0.01),
        ("piecewise", 0.95, 0.01),
        ("step", 0.49, 1.0),
        ("step", 0.5, 0.1),
        ("step", 0.8, 0.01),
        ("cosine", 0.5, 0.5),
        ("cosine", 1.0, 0.0),
    ],
)
def test_learning_rate_schedules(schedule: str, progress: float, factor: float) -> None:
    assert lr_factor(OptimSpec(schedule=schedule), progress) == pytest.approx(factor, abs=1e-12)


def test_step_schedule_follows_its_own_milestones_and_gamma() -> None:
    spec = OptimSpec(schedule="step", milestones=(0.2, 0.6), gamma=0.5)
    assert [lr_factor(spec, p) for p in (0.0, 0.19, 0.2, 0.59, 0.6, 1.0)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


@pytest.mark.parametrize("schedule", ["constant", "step", "piecewise", "cosine"])
def test_progress_outside_0_1_is_clamped(schedule: str) -> None:
    spec = OptimSpec(schedule=schedule)
    assert lr_factor(spec, -0.5) == lr_factor(spec, 0.0) and lr_factor(spec, 1.5) == lr_factor(spec, 1.0)


def test_cosine_is_monotone_from_one_to_zero() -> None:
    factors = [lr_factor(OptimSpec(schedule="cosine"), i / 20) for i in range(21)]
    assert factors[0] == 1.0 and factors[-1] == pytest.approx(0.0, abs=1e-15)
    assert all(a > b for a, b in zip(factors, factors[1:], strict=False))
    assert factors[5] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


@pytest.mark.parametrize(
    ("name", "kind"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
)
def test_each_name_builds_its_optimiser_with_the_spec_values(name: str, kind: type) -> None:
    w = torch.zeros(3, requires_grad=True)
    opt = build_optimizer([w], OptimSpec(optimizer=name, lr=0.3, weight_decay=0.01, betas=(0.8, 0.9)))
    assert type(opt) is kind
    group = opt.param_groups[0]
    assert group["lr"] == 0.3 and group["weight_decay"] == 0.01 and group["params"] == [w]
    if name == "sgd":
        assert group["momentum"] == 0.9 and group["nesterov"] is False
    else:
        assert group["betas"] == (0.8, 0.9)


def test_weight_decay_override_and_nesterov_only_with_momentum() -> None:
    w = torch.zeros(2, requires_grad=True)
    assert build_optimizer([w], OptimSpec(weight_decay=0.5), weight_decay=0.0).param_groups[0]["weight_decay"] == 0.0
    assert build_optimizer([w], OptimSpec(nesterov=True)).param_groups[0]["nesterov"] is True
    assert build_optimizer([w], OptimSpec(nesterov=True, momentum=0.0)).param_groups[0]["nesterov"] is False


def test_sgd_step_matches_the_update_rule() -> None:
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = build_optimizer([w], OptimSpec(lr=0.1, momentum=0.0))
    (w**2).sum().backward()  # gradient 2w
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.8, -1.6]))


def test_set_lr_sets_every_group() -> None:
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.2}])
    set_lr(opt, 0.05)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.05]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "rmsprop"}, "optimizer: expected one of sgd, adam, adamw, got 'rmsprop'"),
        ({"lr": 0.0}, "lr: expected a finite number > 0, got 0.0"),
        ({"lr": float("nan")}, "lr: expected a finite number > 0, got nan"),
        ({"lr": True}, "lr: expected a finite number > 0, got True"),
        ({"momentum": 1.0}, r"momentum: expected a number in \[0, 1\), got 1.0"),
        ({"weight_decay": -1e-4}, "weight_decay: expected a finite number >= 0, got -0.0001"),
        ({"schedule": "linear"}, "schedule: expected one of constant, step, piecewise, cosine, got 'linear'"),
        ({"betas": (0.9,)}, r"betas: expected two numbers in \[0, 1\), got \(0.9,\)"),
        ({"betas": (0.9, 1.0)}, r"betas: expected two numbers in \[0, 1\), got \(0.9, 1.0\)"),
        ({"milestones": (0.5, 1.0)}, r"milestones: expected fractions of training in \(0, 1\), got \(0.5, 1.0\)"),
        ({"gamma": 0.0}, r"gamma: expected a number in \(0, 1\], got 0.0"),
    ],
)
def test_bad_values_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        OptimSpec(**kwargs)


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as err:
        OptimSpec(optimizer="x", lr=-1.0, gamma=2.0)
    assert [p.field for p in err.value.problems] == ["optimizer", "lr", "gamma"]
    assert str(err.value).startswith("invalid OptimSpec: optimizer: expected")
