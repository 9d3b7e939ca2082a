"""Block Lanczos top eigenvalues against eigvalsh of dense references (:mod:`lgeom.hessian.block_lanczos`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgeom.hessian import HessianOperator, block_lanczos_eigenvalues, lanczos_eigenvalues, top_eigenvalues
from lgeom.reference import DenseOperator, symmetric_with_spectrum
from tests.lgeom.cases import CASES, get_case


class CountingOperator(DenseOperator):
    """A dense symmetric matrix that records the number of rows of every ``matmat`` call (one call: one pass)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__(matrix)
        self.calls: list[int] = []

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        self.calls.append(int(vectors.shape[0]))
        return super().matmat(vectors)


def assert_eigenpairs(res, matrix: torch.Tensor, atol: float) -> None:
    """The returned vectors are orthonormal eigenvectors of ``matrix`` whose residuals are the reported ones."""
    vec = res.vectors.to(torch.float64)
    torch.testing.assert_close(vec @ vec.T, torch.eye(len(res.values), dtype=torch.float64), atol=1e-8, rtol=0)
    resid = (vec @ matrix - torch.as_tensor(res.values)[:, None] * vec).norm(dim=1).numpy()
    np.testing.assert_allclose(resid, res.residuals, rtol=1e-3, atol=atol)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("block_size", [2, 5])
def test_block_lanczos_top5_matches_eigvalsh_on_every_case(name: str, block_size: int) -> None:
    c = get_case(name)
    res = block_lanczos_eigenvalues(c.operator(), 5, block_size=block_size, tol=1e-6, return_vectors=True)
    # Residuals below 1e-6 relative bound each value's error by as much (Parlett, ch. 11).
    assert res.converged.all() and res.method == "block_lanczos"
    np.testing.assert_allclose(res.values, c.eigenvalues()[:5], rtol=1e-5, atol=1e-10)
    assert_eigenpairs(res, c.hessian(), atol=1e-10)
    assert res.n_iter == -(-res.n_hvp // block_size)  # full blocks, the last one possibly cut to the room left


@pytest.mark.parametrize("tol", [1e-2, 1e-3, 1e-5])
def test_block_lanczos_stops_at_tol_with_errors_inside_the_residuals(case: dict, tol: float) -> None:
    res = top_eigenvalues(
        case["model"], case["data"], k=5, method="block_lanczos", block_size=3, tol=tol, engine="cached"
    )
    err = np.abs(res.values - case["ev"][:5])
    assert res.converged.all() and np.all(res.residuals <= tol * np.abs(res.values))
    assert np.all(err <= res.residuals * (1 + 1e-6) + 1e-14)
    assert np.all(err <= tol * np.abs(case["ev"][:5]))
    # Residual-based stopping: one step fewer had not converged yet.
    if res.n_iter > 1:
        early = top_eigenvalues(
            case["model"],
            case["data"],
            k=5,
            method="block_lanczos",
            block_size=3,
            tol=tol,
            max_iter=res.n_iter - 1,
            engine="cached",
        )
        assert not early.converged.all()


def test_one_matmat_per_block_step() -> None:
    op = CountingOperator(
        symmetric_with_spectrum([6.0, 5.0, 4.0, 3.5, 3.0] + list(np.linspace(2.0, -1.0, 195)), seed=5)
    )
    res = block_lanczos_eigenvalues(op, 4, block_size=4, tol=1e-8)
    np.testing.assert_allclose(res.values, [6.0, 5.0, 4.0, 3.5], rtol=1e-7)
    assert res.n_hvp < op.size and op.calls == [4] * res.n_iter and res.n_hvp == op.n_products == 4 * res.n_iter


def test_block_lanczos_finds_a_repeated_top_eigenvalue_that_lanczos_misses() -> None:
    spectrum = [4.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5] + [0.1] * 20 + [-1.0]
    op = DenseOperator(symmetric_with_spectrum(spectrum, seed=3))
    single = lanczos_eigenvalues(op, 3, tol=1e-8)
    np.testing.assert_allclose(single.values, [4.0, 3.0, 2.0], rtol=1e-6)  # single-vector Lanczos' documented limit
    block = block_lanczos_eigenvalues(op, 3, block_size=2, tol=1e-8, return_vectors=True)
    np.testing.assert_allclose(block.values, [4.0, 4.0, 3.0], rtol=1e-6)
    assert block.converged.all()
    assert_eigenpairs(block, op.matrix, atol=1e-8)
    # A triple top value with a block of three.
    triple = DenseOperator(symmetric_with_spectrum([5.0, 5.0, 5.0, 1.0] + list(np.linspace(-0.3, 0.9, 30)), seed=4))
    np.testing.assert_allclose(
        block_lanczos_eigenvalues(triple, 4, block_size=3, tol=1e-8).values, [5.0, 5.0, 5.0, 1.0], rtol=1e-6
    )


def test_clustered_top_eigenvalues_are_resolved() -> None:
    spectrum = [3.0, 3.0 - 1e-4, 3.0 - 2e-4, 2.9, 1.0] + list(np.linspace(0.8, -0.5, 60))
    op = DenseOperator(symmetric_with_spectrum(spectrum, seed=6))
    res = block_lanczos_eigenvalues(op, 4, block_size=3, tol=1e-9, return_vectors=True)
    assert res.converged.all()
    np.testing.assert_allclose(res.values, spectrum[:4], rtol=1e-9, atol=0)
    assert_eigenpairs(res, op.matrix, atol=1e-10)


def test_largest_algebraic_eigenvalues_of_indefinite_spectra() -> None:
    spectrum = [-10.0, -9.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5] + [0.1] * 22
    res = block_lanczos_eigenvalues(DenseOperator(symmetric_with_spectrum(spectrum, seed=1)), 3, block_size=2, tol=1e-8)
    np.testing.assert_allclose(res.values, [5.0, 4.0, 3.0], rtol=1e-7)
    # All negative: the largest algebraic are the ones nearest zero.
    op = DenseOperator(symmetric_with_spectrum([-1.0, -2.0, -3.0, -4.0, -8.0, -9.0], seed=2))
    np.testing.assert_allclose(
        block_lanczos_eigenvalues(op, 2, block_size=2, tol=1e-10).values, [-1.0, -2.0], rtol=1e-9
    )


def test_rank_deficient_blocks_are_deflated_and_refilled() -> None:
    # Rank 2: A Q_1 spans at most two directions, so a block of four deflates two at the first step (and the
    # space is invariant after it); fresh vectors keep the block at four until the spectrum is exhausted.
    u = torch.linalg.qr(torch.randn(12, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)).Q
    op = CountingOperator(u @ torch.diag(torch.tensor([3.0, -2.0], dtype=torch.float64)) @ u.T)
    res = block_lanczos_eigenvalues(op, 3, block_size=4, tol=1e-10, return_vectors=True)
    np.testing.assert_allclose(res.values, [3.0, 0.0, 0.0], atol=1e-12)
    assert res.converged.all() and all(c <= 4 for c in op.calls)
    assert_eigenpairs(res, op.matrix, atol=1e-12)
    # Exhausting the space (blocks shrink to the room left) gives the whole spectrum.
    spectrum = [4.0, 4.0, 2.0, 1.0, 1.0, -3.0]
    op = CountingOperator(symmetric_with_spectrum(spectrum, seed=3))
    res = block_lanczos_eigenvalues(op, 6, block_size=4, tol=1e-12)
    np.testing.assert_allclose(res.values, spectrum, atol=1e-10)
    assert sum(op.calls) == 6


def test_running_out_of_steps_reports_unconverged_values(case: dict) -> None:
    res = top_eigenvalues(
        case["model"], case["data"], k=5, method="block_lanczos", tol=1e-10, max_iter=1, engine="cached"
    )
    assert res.n_iter == 1 and res.n_hvp == 5 and len(res.values) == 5 and not res.converged.all()


def test_bad_arguments_raise_expected_messages(case: dict) -> None:
    op = DenseOperator(symmetric_with_spectrum([3.0, 2.0, 1.0, 0.0], seed=0))
    with pytest.raises(ValueError, match=r"k: expected an integer > 0, got 0"):
        block_lanczos_eigenvalues(op, 0)
    with pytest.raises(ValueError, match=r"k: expected at most the number of parameters \(4\), got 5"):
        block_lanczos_eigenvalues(op, 5)
    with pytest.raises(ValueError, match=r"block_size: expected an integer > 0, got 0"):
        block_lanczos_eigenvalues(op, 2, block_size=0)
    with pytest.raises(ValueError, match=r"block_size: expected at most the number of parameters \(4\), got 5"):
        block_lanczos_eigenvalues(op, 2, block_size=5)
    with pytest.raises(ValueError, match=r"tol: expected a finite number > 0, got 0"):
        block_lanczos_eigenvalues(op, 2, tol=0.0)
    with pytest.raises(ValueError, match=r"max_iter: expected an integer > 0, got 0"):
        block_lanczos_eigenvalues(op, 2, max_iter=0)
    with pytest.raises(ValueError, match=r"max_iter: expected at least ceil\(k / block_size\) = 2 block steps, got 1"):
        block_lanczos_eigenvalues(op, 3, block_size=2, max_iter=1)
    with pytest.raises(ValueError, match=r"block_size: expected None unless method='block_lanczos', got 2"):
        top_eigenvalues(case["model"], case["data"], k=2, block_size=2)


def test_block_lanczos_gives_the_same_values_on_every_engine(case: dict) -> None:
    # The engines differ only in rounding (graph kept, rebuilt per pass, or forward-over-reverse; vectors one
    # after another or batched), so from the same start block the iterations agree.
    model, data = case["model"], case["data"]
    ops = {
        "cached": HessianOperator(model, data, engine="cached"),
        "stream": HessianOperator(model, data, engine="stream", merge_bytes=1),
        "batched": HessianOperator(model, data, engine="stream", batch_vectors=True),
        "forward": HessianOperator(model, data, engine="forward"),
    }
    res = {name: block_lanczos_eigenvalues(op, 5, block_size=3, tol=1e-8) for name, op in ops.items()}
    for name, r in res.items():
        assert r.converged.all() and r.n_iter == res["cached"].n_iter, name
        np.testing.assert_allclose(r.values, case["ev"][:5], rtol=1e-7, err_msg=name)
        np.testing.assert_allclose(r.values, res["cached"].values, rtol=1e-10, err_msg=name)
