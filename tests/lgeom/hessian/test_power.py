"""Power-iteration top eigenvalues against eigvalsh of dense references (:mod:`lgeom.hessian.power`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgeom.hessian import (
    HessianOperator,
    power_eigenvalues,
    top_eigenvalues,
)
from tests.lgeom.cases import CASES, Case, get_case

D = torch.float64


def _operator(c: Case, engine: str = "auto") -> HessianOperator:
    """The operator at the case's point under the BN policy (statistics recomputed on its BN batches)."""
    return HessianOperator(c.model, c.data, params=c.params, bn_batches=c.bn_batches, engine=engine)


def test_power_iteration_top5_within_1e_2(case: dict) -> None:
    res = top_eigenvalues(case["model"], case["data"], k=5, method="power", tol=1e-3, max_iter=300, engine="cached")
    np.testing.assert_allclose(res.values, case["ev"][:5], rtol=1e-2)
    assert res.method == "power" and res.n_hvp > 0


def test_power_iteration_defaults_reach_tol_with_negative_eigenvalues(case: dict) -> None:
    ev = case["ev"]
    k = int(np.argmax(ev < abs(ev[-1]))) + 1  # the values past here need the shifted operator
    assert k == 6
    res = top_eigenvalues(case["model"], case["data"], k=k, method="power")  # default tol, max_iter, engine
    assert res.converged.all()
    np.testing.assert_allclose(res.values, ev[:k], rtol=1e-2)


@pytest.mark.parametrize("name", CASES)
def test_power_top3_matches_eigvalsh_on_every_case(name: str) -> None:
    c = get_case(name)
    res = power_eigenvalues(_operator(c), 3, tol=1e-6, max_iter=3000)
    assert res.converged.all()
    np.testing.assert_allclose(res.values, c.eigenvalues()[:3], rtol=1e-4, atol=1e-10)
