"""Lanczos top eigenvalues against eigvalsh of dense references (:mod:`lgeom.hessian.lanczos`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgeom.hessian import (
    HessianOperator,
    lanczos_eigenvalues,
    power_eigenvalues,
    top_eigenvalues,
)
from lgeom.reference import DenseOperator, symmetric_with_spectrum
from tests.lgeom.cases import CASES, get_case


def test_lanczos_top5_within_1e_4_relative(case: dict) -> None:
    res = top_eigenvalues(case["model"], case["data"], k=5, method="lanczos", tol=1e-3, return_vectors=True)
    np.testing.assert_allclose(res.values, case["ev"][:5], rtol=1e-4)
    assert res.converged.all() and res.method == "lanczos"
    assert res.n_hvp < case["h"].shape[0]  # cheaper than forming the Hessian
    # Ritz vectors are unit eigenvectors of the dense Hessian.
    vec = res.vectors.to(torch.float64)
    torch.testing.assert_close(vec @ vec.T, torch.eye(5, dtype=torch.float64), atol=1e-8, rtol=0)
    resid = (vec @ case["h"] - torch.as_tensor(res.values)[:, None] * vec).norm(dim=1).numpy()
    np.testing.assert_allclose(resid, res.residuals, rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("tol", [1e-2, 1e-3, 1e-5])
def test_lanczos_stops_at_tol_with_errors_inside_the_residuals(case: dict, tol: float) -> None:
    res = top_eigenvalues(case["model"], case["data"], k=5, tol=tol)
    err = np.abs(res.values - case["ev"][:5])
    assert res.converged.all() and np.all(res.residuals <= tol * np.abs(res.values))
    assert np.all(err <= res.residuals * (1 + 1e-6) + 1e-14)
    assert np.all(err <= res.error_bounds * (1 + 1e-6) + 1e-14)  # the gap estimate holds for these isolated values
    assert np.all(err <= tol * np.abs(case["ev"][:5]))


def test_largest_algebraic_eigenvalues_when_negative_ones_dominate() -> None:
    spectrum = [-10.0, -9.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5] + [0.1] * 22
    op = DenseOperator(symmetric_with_spectrum(spectrum, seed=1))
    for solver, kw in ((lanczos_eigenvalues, {}), (power_eigenvalues, {"tol": 1e-6, "max_iter": 2000})):
        res = solver(op, 3, **kw)
        np.testing.assert_allclose(res.values, [5.0, 4.0, 3.0], rtol=1e-4, err_msg=solver.__name__)
    # All negative: the largest algebraic are the ones nearest zero.
    op = DenseOperator(symmetric_with_spectrum([-1.0, -2.0, -3.0, -4.0, -8.0, -9.0], seed=2))
    for solver in (lanczos_eigenvalues, power_eigenvalues):
        res = solver(op, 2, tol=1e-8, max_iter=3000)
        np.testing.assert_allclose(res.values, [-1.0, -2.0], rtol=1e-4, err_msg=solver.__name__)


def test_exhausting_the_krylov_space_gives_the_exact_spectrum() -> None:
    op = DenseOperator(symmetric_with_spectrum([4.0, 4.0, 2.0, 1.0, 1.0, -3.0], seed=3))
    res = lanczos_eigenvalues(op, 6, tol=1e-12, max_iter=6)
    np.testing.assert_allclose(res.values, [4.0, 4.0, 2.0, 1.0, 1.0, -3.0], atol=1e-10)


def test_lanczos_misses_a_repeated_top_eigenvalue_unless_confirming() -> None:
    spectrum = [4.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5] + [0.1] * 20 + [-1.0]
    op = DenseOperator(symmetric_with_spectrum(spectrum, seed=3))
    plain = lanczos_eigenvalues(op, 3, tol=1e-8)
    np.testing.assert_allclose(plain.values, [4.0, 3.0, 2.0], rtol=1e-6)  # the documented single-vector limit
    assert plain.converged.all()
    checked = lanczos_eigenvalues(op, 3, tol=1e-8, confirm=True, return_vectors=True)
    np.testing.assert_allclose(checked.values, [4.0, 4.0, 3.0], rtol=1e-6)
    assert checked.converged.all() and checked.n_hvp > plain.n_hvp
    vec = checked.vectors.to(torch.float64)
    torch.testing.assert_close(vec @ vec.T, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(vec @ op.matrix, torch.as_tensor(checked.values)[:, None] * vec, atol=1e-6, rtol=0)
    # A triple top value needs two insertions.
    triple = DenseOperator(symmetric_with_spectrum([5.0, 5.0, 5.0, 1.0, 0.5, 0.2, -0.3] + [0.0] * 10, seed=4))
    np.testing.assert_allclose(
        lanczos_eigenvalues(triple, 4, tol=1e-8, confirm=True).values, [5.0, 5.0, 5.0, 1.0], rtol=1e-6
    )


def test_confirmation_keeps_distinct_values_and_reports_its_cost(case: dict) -> None:
    op = HessianOperator(case["model"], case["data"], engine="cached")
    plain = lanczos_eigenvalues(op, 5)
    checked = lanczos_eigenvalues(op, 5, confirm=True)
    np.testing.assert_allclose(checked.values, case["ev"][:5], rtol=1e-4)
    np.testing.assert_array_equal(checked.values, plain.values)
    assert plain.n_hvp < checked.n_hvp <= 3 * plain.n_hvp and checked.converged.all()


@pytest.mark.parametrize("name", CASES)
def test_lanczos_top5_matches_eigvalsh_on_every_case(name: str) -> None:
    c = get_case(name)
    res = lanczos_eigenvalues(c.operator(), 5, tol=1e-6, confirm=True)
    # Residuals below 1e-6 relative bound each value's error by as much (Parlett, ch. 11).
    assert res.converged.all()
    np.testing.assert_allclose(res.values, c.eigenvalues()[:5], rtol=1e-5, atol=1e-10)
