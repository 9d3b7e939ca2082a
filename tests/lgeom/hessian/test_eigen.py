"""Top eigenvalues at a model point, by either method (:mod:`lgeom.hessian.eigen`)."""

from __future__ import annotations

import numpy as np
import pytest

from lgeom.hessian import top_eigenvalues
from tests.lgeom.cases import CASES, get_case


def test_model_hessian_with_negative_curvature_gives_algebraic_top_k(case: dict) -> None:
    ev = case["ev"]
    assert ev[-1] < 0
    k = int(np.argmax(ev < abs(ev[-1]))) + 1  # the first top-k list that largest-magnitude order would get wrong
    assert 2 <= k <= 20
    lanczos = top_eigenvalues(case["model"], case["data"], k=k, tol=1e-6)
    np.testing.assert_allclose(lanczos.values, ev[:k], rtol=1e-4)
    power = top_eigenvalues(case["model"], case["data"], k=k, method="power", tol=1e-4, max_iter=1000, engine="cached")
    np.testing.assert_allclose(power.values, ev[:k], rtol=1e-2)


@pytest.mark.parametrize("name", CASES)
def test_top_eigenvalues_at_a_model_point_match_eigvalsh(name: str) -> None:
    c = get_case(name)
    res = top_eigenvalues(c.model, c.data, k=3, params=c.params, bn_batches=c.bn_batches, tol=1e-6)
    np.testing.assert_allclose(res.values, c.eigenvalues()[:3], rtol=1e-5, atol=1e-10)
