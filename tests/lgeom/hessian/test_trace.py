"""Hutchinson and Hutch++ trace estimates against the exact trace (:mod:`lgeom.hessian.trace`)."""

from __future__ import annotations

import math

import pytest
import torch

from lgeom.hessian import (
    HessianOperator,
    trace,
)
from lgeom.hessian.trace import hutchinson_trace
from tests.lgeom.cases import CASES, Case, get_case

D = torch.float64


def _operator(c: Case, engine: str = "auto") -> HessianOperator:
    """The operator at the case's point under the BN policy (statistics recomputed on its BN batches)."""
    return HessianOperator(c.model, c.data, params=c.params, bn_batches=c.bn_batches, engine=engine)


def test_hutchinson_trace_within_three_standard_errors(case: dict) -> None:
    exact = float(torch.trace(case["h"]))
    est = trace(case["model"], case["data"], n_probes=64, seed=0)
    assert est.n_probes == 64 and est.stderr > 0
    assert abs(est.mean - exact) <= 3 * est.stderr
    plus = trace(case["model"], case["data"], n_probes=30, seed=0, method="hutch++")
    assert abs(plus.mean - exact) <= 3 * plus.stderr
    # With a sketch as large as the space, Hutch++ is exact.
    full = trace(case["model"], case["data"], n_probes=3 * case["h"].shape[0], seed=0, method="hutch++")
    assert full.mean == pytest.approx(exact, rel=1e-10)


def _hutchinson_sd(h: torch.Tensor, n_probes: int) -> float:
    """Standard deviation of the mean of ``n_probes`` Rademacher forms ``z^T H z``: ``sqrt(2 (||H||_F^2 -
    sum_i H_ii^2) / n)``, from the dense reference."""
    return math.sqrt(2.0 * float((h**2).sum() - (torch.diagonal(h) ** 2).sum()) / n_probes)


@pytest.mark.parametrize("name", CASES)
def test_hutchinson_trace_matches_the_exact_trace_on_every_case(name: str) -> None:
    c = get_case(name)
    h = c.hessian()
    exact = float(torch.trace(h))
    est = hutchinson_trace(_operator(c), 64, seed=0)
    # Seed 0, 64 probes; 4 standard deviations of the estimator (from the dense Hessian) is the tolerance.
    assert abs(est.mean - exact) <= 4 * _hutchinson_sd(h, 64)
    if c.size <= 150:  # 3 P products: kept to the small cases for time
        # With a sketch as large as the space, Hutch++ is exact.
        full = hutchinson_trace(_operator(c), 3 * c.size, seed=0, method="hutch++")
        assert full.mean == pytest.approx(exact, rel=1e-8, abs=1e-10)
