"""Hutchinson and Hutch++ trace estimates against the exact trace (:mod:`lgeom.hessian.trace`)."""

from __future__ import annotations

import pytest
import torch

from lgeom.hessian import trace
from lgeom.hessian.trace import hutchinson_trace
from tests.lgeom.cases import CASES, get_case


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


@pytest.mark.parametrize("name", CASES)
def test_hutchinson_trace_matches_the_exact_trace_on_every_case(name: str) -> None:
    c = get_case(name)
    h = c.hessian()
    exact = float(torch.trace(h))
    est = hutchinson_trace(c.operator(), 64, seed=0)
    # Seed 0, 64 probes; 4 standard deviations of the estimator (from the dense Hessian) is the tolerance.
    assert abs(est.mean - exact) <= 4 * c.hutchinson_sd(64)
    if c.size <= 150:  # 3 P products: kept to the small cases for time
        # With a sketch as large as the space, Hutch++ is exact.
        full = hutchinson_trace(c.operator(), 3 * c.size, seed=0, method="hutch++")
        assert full.mean == pytest.approx(exact, rel=1e-8, abs=1e-10)
