"""The largest eigenvalues of a symmetric operator by block Lanczos with full reorthogonalisation.

From ``b`` orthonormal start vectors (the rows of ``Q_1``), block Lanczos builds an orthonormal basis
``Q = [Q_1; ...; Q_j]`` of the block Krylov space ``span(Q_1, A Q_1, ..., A^{j-1} Q_1)``, applying ``A`` to a
whole block per step (one :meth:`~lgeom.hessian.operator.SymmetricOperator.matmat`, i.e. one pass over the data
for a Hessian). The projection ``T = Q A Q^T`` is read off the products themselves (the coefficients of
``A Q_j`` on the basis), and its eigenpairs ``(theta, s)`` give Ritz pairs ``(theta, Q^T s)`` whose residual is
``||A Q^T s - theta Q^T s|| = ||s_j^T R_j||`` with ``R_j`` the part of ``A Q_j`` outside ``span(Q)`` and ``s_j``
the last block of ``s``; an eigenvalue of ``A`` lies within it (Parlett, The Symmetric Eigenvalue Problem,
ch. 11 and 13). ``R_j``, orthonormalised, is the next block.

A space grown from ``b`` vectors holds up to ``b`` directions of every eigenspace, so an eigenvalue repeated
up to ``b`` times is found with its multiplicity, which single-vector Lanczos misses:

>>> import torch
>>> from lgeom.reference import DenseOperator
>>> op = DenseOperator(torch.diag(torch.tensor([4.0, 4.0, 3.0, 1.0, -2.0, 0.5], dtype=torch.float64)))
>>> block_lanczos_eigenvalues(op, k=3, block_size=2, tol=1e-10).values
array([4., 4., 3.])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from lgeom._checks import check_positive, check_positive_int, expected
from lgeom.hessian.lanczos import EigenResult, check_k
from lgeom.hessian.operator import SymmetricOperator, random_vectors
from lgeom.progress import Callback, ProgressEvent, emit, resolve_callbacks

__all__ = ["block_lanczos_eigenvalues"]


def _rank_tol(dtype: torch.dtype) -> float:
    return 100.0 * torch.finfo(dtype).eps


def _orthogonalise(vectors: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``vectors`` (rows) with their components along the orthonormal rows of ``basis`` removed (twice:
    one classical Gram-Schmidt pass leaves errors of the order of the rounding times the removed part).
    """
    for _ in range(2):
        vectors = vectors - (vectors @ basis.T) @ basis
    return vectors


def _fresh_rows(count: int, basis: torch.Tensor, generator: torch.Generator, op: SymmetricOperator) -> torch.Tensor:
    """Up to ``count`` random orthonormal rows orthogonal to ``basis`` (fewer only when the complement of
    ``basis`` is smaller).
    """
    fresh = _orthogonalise(random_vectors(count, op.size, generator, op), basis)
    u, sigma, _ = torch.linalg.svd(fresh.T.double(), full_matrices=False)
    # Gaussian rows keep singular values of order sqrt(P) in the complement; directions outside it keep only
    # rounding noise, of order eps * sqrt(P).
    keep = sigma > 1e4 * torch.finfo(op.dtype).eps * math.sqrt(op.size)
    rows = u[:, keep].T.to(op.dtype)
    return _orthogonalise(rows, basis) if basis.shape[0] else rows


def block_lanczos_eigenvalues(
    op: SymmetricOperator,
    k: int = 5,
    *,
    block_size: int | None = None,
    tol: float = 1e-3,
    max_iter: int | None = None,
    seed: int = 0,
    return_vectors: bool = False,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = False,
) -> EigenResult:
    """The ``k`` largest algebraic eigenvalues of a symmetric operator by block Lanczos (full reorthogonalisation).

    Each step applies the operator to a block of ``block_size`` vectors at once (one ``matmat``: one pass over
    the data for a :class:`~lgeom.hessian.operator.HessianOperator`) and grows the basis by that block. The
    accuracy contract is :func:`~lgeom.hessian.lanczos.lanczos_eigenvalues`': the steps stop once each of the
    top ``k`` Ritz pairs ``(theta, y)`` has residual ``r = ||A y - theta y|| <= tol * |theta|`` (an eigenvalue
    lies within ``r`` of ``theta``, within about ``r^2 / gap`` once isolated; values below ``1e-6`` of the
    spectral-norm estimate are held to ``tol * 1e-6 * max|theta|``), or after ``max_iter`` steps.

    Rank deficiency: when the new block's directions outside the basis are (numerically) dependent, e.g. the
    space has become invariant under ``A``, the dependent ones (singular values below ``100 eps`` times the
    spectral-norm estimate) are dropped (deflation) and replaced by random vectors orthogonal to the basis, so
    the block keeps its size; a step that deflated does not stop the iteration (the fresh directions are
    still unexplored) unless the block it applied already held such fresh vectors (a random probe of the
    rest of the space has then been applied: with probability one it reaches every eigenvalue there).
    Multiplicity: an eigenvalue repeated up to ``block_size`` times is found with every copy. A copy beyond
    the first ``block_size`` is found only if the space becomes exactly invariant before the top ``k``
    converge (the restart vectors then reach it), and is otherwise missed, as single-vector Lanczos misses a
    second copy.

    Cost: ``block_size`` products per step, more products in all than single-vector Lanczos for the same
    ``k`` and ``tol`` but fewer passes over the data (top 5 at ``tol = 1e-3`` of the MLP in
    ``bench/hessian.py``: 11 products for Lanczos; 16 in 8 passes with ``block_size = 2``, 21 in 7 with 3, 30 in
    6 with 5). It pays where a pass, not a product, dominates, i.e. where ``matmat`` of ``b`` vectors costs much
    less than ``b`` single products: the ``forward`` engine (each pass recomputes the forward and backward);
    the ``stream`` engine only where building a chunk's graph costs well over the double backward that each
    vector adds (with ``b = 2``: over 5/3 of it). On a CPU the ``cached`` engine's products are arithmetic,
    not overhead, so a shared pass saves little (``bench/RESULTS.md``). Memory: the basis, ``P`` scalars per
    product, and the ``m x m`` projection for ``m`` products.

    Args:
        op: the operator (anything with ``size``, ``dtype``, ``device``, ``n_products``, ``matmat``).
        k: how many eigenvalues.
        block_size: vectors per step, ``1..P`` (default ``k``). Any size finds the top ``k``; a block at least
            as large as the multiplicity of a repeated eigenvalue finds all its copies.
        tol: relative residual per eigenpair (bounds the relative eigenvalue error).
        max_iter: block steps at most (default: enough for ``min(P, max(100, 20 k))`` products, the
            Lanczos default, plus one block).
        seed: seeds the start block and the restart vectors.
        return_vectors: also return the Ritz vectors as ``(k, P)`` unit rows.
        callbacks, progress: progress reporting (task ``"block_lanczos"``, one step per block); ``progress``
            adds a tqdm bar.

    Returns:
        :class:`~lgeom.hessian.lanczos.EigenResult` with method ``"block_lanczos"``: values descending (in the
        operator's units; nats per squared parameter unit for a Hessian), ``converged`` False where
        ``max_iter`` ran out first, ``n_hvp`` the products applied (``block_size`` per step), ``n_iter`` the
        block steps.

    Raises:
        ValueError: ``k`` not in ``1..P``, ``block_size`` not in ``1..P``, ``tol <= 0``, ``max_iter`` not a
            positive integer or too few steps to build ``k`` basis vectors.
    """
    check_k(k, op.size)
    b = k if block_size is None else block_size
    check_positive_int("block_size", b)
    if b > op.size:
        raise expected("block_size", f"at most the number of parameters ({op.size})", b)
    check_positive("tol", tol)
    steps = math.ceil(min(op.size, max(100, 20 * k)) / b) + 1 if max_iter is None else max_iter
    check_positive_int("max_iter", steps)
    if steps * b < k:
        raise expected("max_iter", f"at least ceil(k / block_size) = {math.ceil(k / b)} block steps", steps)
    n = op.size
    gen = torch.Generator().manual_seed(seed)
    start_products = op.n_products
    cbs = resolve_callbacks(callbacks, progress, "block_lanczos")
    emit(cbs, ProgressEvent("block_lanczos", "start", 0, steps))

    capacity = min(n, max(4 * b, 32))
    basis = torch.zeros(capacity, n, dtype=op.dtype, device=op.device)
    proj = np.zeros((capacity, capacity))  # T = Q A Q^T, filled block row by block row
    block = _fresh_rows(b, basis[:0], gen, op)
    m, scale, step, restarted = 0, 0.0, 0, False
    values = res = bound = ok = s_top = np.zeros(0)
    for step in range(1, steps + 1):
        r = block.shape[0]
        if m + r > capacity:
            capacity = min(n, max(2 * capacity, m + r))
            basis = torch.cat([basis, basis.new_zeros(capacity - basis.shape[0], n)])
            grown = np.zeros((capacity, capacity))
            grown[:m, :m] = proj[:m, :m]
            proj = grown
        basis[m : m + r] = block
        products = op.matmat(basis[m : m + r])  # contiguous rows (the SVD's are strided)
        # Row a of coeff is q_a^T A Q^T: block row of T, exact to rounding (A Q_i for older blocks i lies in
        # span(Q), so these entries are the only ones the new block adds).
        coeff = products @ basis[: m + r].T
        c = coeff.double().cpu().numpy()
        proj[m : m + r, : m + r] = c
        proj[: m + r, m : m + r] = c.T
        proj[m : m + r, m : m + r] = (c[:, m : m + r] + c[:, m : m + r].T) / 2
        remainder = _orthogonalise(products - coeff @ basis[: m + r], basis[: m + r])
        m += r
        # Remainder rows = V diag(sigma) U^T: the next block is U^T, and a Ritz vector Q^T s has residual
        # ||s_last^T V diag(sigma)|| (s_last: its coefficients on the block just applied).
        u, sigma, vh = torch.linalg.svd(remainder.T.double(), full_matrices=False)
        sig, v = sigma.cpu().numpy(), vh.T.cpu().numpy()

        # torch's LAPACK (it follows torch's thread setting): numpy's threaded BLAS stalled this small solve
        # for milliseconds per step on a loaded machine (bench/RESULTS.md).
        theta_t, s_t = torch.linalg.eigh(torch.from_numpy(np.ascontiguousarray(proj[:m, :m])))
        theta, s = theta_t.numpy(), s_t.numpy()
        scale = max(scale, float(np.abs(theta).max()), float(sig.max(initial=0.0)))
        order = np.argsort(theta)[::-1][:k]
        values, s_top = theta[order], s[:, order]
        res = np.linalg.norm((s_top[m - r :].T @ v) * sig[None, :], axis=1) if m < n else np.zeros(len(order))
        others = np.abs(values[:, None] - theta[None, :])
        others[np.arange(len(order)), order] = np.inf
        gap = others.min(axis=1) if m > 1 else np.full(len(order), np.inf)
        bound = np.minimum(res, np.divide(res**2, gap, out=np.full_like(res, np.inf), where=gap > 0))
        floor = 1e-6 * max(float(np.abs(theta).max()), 1e-300)
        ok = res <= tol * np.maximum(np.abs(values), floor)
        emit(cbs, ProgressEvent("block_lanczos", "step", step, steps, metrics={"lambda": float(values[0])}))

        keep = sig > _rank_tol(op.dtype) * max(scale, 1e-30)
        deflated = bool(not keep.all()) and m < n
        block = u[:, torch.as_tensor(keep, device=u.device)].T.to(op.dtype)
        # Fresh vectors added now are unexplored, so a step that deflated does not stop; but when the block
        # just applied held fresh vectors and deflated again, the restart has already probed the complement
        # (e.g. a null space, where every fresh vector deflates at once).
        if m >= n or (m >= k and bool(ok.all()) and (not deflated or restarted)):
            break
        room = min(b, n - m)
        block = block[:room]
        restarted = block.shape[0] < room
        if restarted:
            fresh = _fresh_rows(room - block.shape[0], torch.cat([basis[:m], block]), gen, op)
            block = torch.cat([block, fresh])
        if block.shape[0] == 0:
            break
    emit(cbs, ProgressEvent("block_lanczos", "end", step, steps))
    vectors = None
    if return_vectors:
        vectors = torch.as_tensor(s_top.T, dtype=op.dtype, device=op.device) @ basis[:m]
    return EigenResult(
        values.astype(np.float64), ok, res, bound, op.n_products - start_products, step, "block_lanczos", vectors
    )
