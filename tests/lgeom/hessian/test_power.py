"""Power-iteration top eigenvalues against eigvalsh of dense references (:mod:`lgeom.hessian.power`)."""

from __future__ import annotations

import numpy as np
import pytest

from lgeom.hessian import power_eigenvalues, top_eigenvalues
from tests.lgeom.cases import CASES, get_case


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
    res = power_eigenvalues(c.operator(), 3, tol=1e-6, max_iter=3000)
    assert res.converged.all()
    np.testing.assert_allclose(res.values, c.eigenvalues()[:3], rtol=1e-4, atol=1e-10)
