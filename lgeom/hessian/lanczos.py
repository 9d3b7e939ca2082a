"""The largest eigenvalues of a symmetric operator by Lanczos with full reorthogonalisation.

From a unit start vector ``q_1``, Lanczos builds an orthonormal basis ``Q_m`` of the Krylov space
``span(q_1, A q_1, ..., A^{m-1} q_1)`` in which ``A`` is the tridiagonal ``T_m = Q_m^T A Q_m`` (diagonal
``alpha_j = q_j^T A q_j``, off-diagonal ``beta_j = ||A q_j - alpha_j q_j - beta_{j-1} q_{j-1}||``). The
eigenpairs ``(theta, s)`` of ``T_m`` give Ritz pairs ``(theta, Q_m s)`` with residual
``||A Q_m s - theta Q_m s|| = beta_m |s_m|``; an eigenvalue of ``A`` lies within it. After ``P`` steps the
Ritz values are the whole spectrum:

>>> import torch
>>> from lgeom.reference import DenseOperator
>>> lanczos_eigenvalues(DenseOperator(torch.diag(torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64))), k=2).values
array([3., 2.])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import torch

from lgeom._checks import check_positive, check_positive_int, expected
from lgeom.hessian.operator import SymmetricOperator, random_vectors
from lgeom.progress import Callback, ProgressEvent, emit, resolve_callbacks

__all__ = ["EigenResult", "check_k", "lanczos_eigenvalues", "lanczos_runs", "ritz"]


@dataclass(frozen=True)
class EigenResult:
    """Top eigenvalues of a symmetric operator.

    Attributes:
        values: the ``k`` largest algebraic eigenvalues, descending (float64).
        converged: per value, whether its residual met the tolerance.
        residuals: per value, ``||H v - lambda v||`` of its (Ritz) vector.
        error_bounds: per value, an estimate of ``|lambda - true eigenvalue|``: ``min(r, r^2 / gap)`` for
            Lanczos with ``gap`` the distance to the nearest other Ritz value (it can be optimistic inside a
            cluster not yet resolved), the residual ``r`` for power iteration.
        n_hvp: Hessian-vector products used.
        n_iter: iterations (Lanczos steps, block Lanczos steps, or power iterations over all values).
        method: ``"lanczos"``, ``"block_lanczos"`` or ``"power"``.
        vectors: ``(k, P)`` unit eigenvectors (rows) when asked for, else ``None``.
    """

    values: np.ndarray
    converged: np.ndarray
    residuals: np.ndarray
    error_bounds: np.ndarray
    n_hvp: int
    n_iter: int
    method: str
    vectors: torch.Tensor | None = None

    @property
    def lambda_max(self) -> float:
        """The largest eigenvalue."""
        return float(self.values[0])

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (without vectors)."""
        return {
            "eigenvalues": self.values.tolist(),
            "converged": self.converged.tolist(),
            "residuals": self.residuals.tolist(),
            "error_bounds": self.error_bounds.tolist(),
            "n_hvp": self.n_hvp,
            "n_iter": self.n_iter,
            "method": self.method,
        }


# One Gram-Schmidt pass suffices while it keeps this fraction of the vector's norm (else a second pass runs).
_ONCE_KEEPS = 1.0 / np.sqrt(2.0)
_STEV = scipy.linalg.lapack.get_lapack_funcs("stev", dtype=np.float64)


def _breakdown_tol(dtype: torch.dtype) -> float:
    return 100.0 * torch.finfo(dtype).eps


def lanczos_runs(
    op: SymmetricOperator,
    starts: torch.Tensor,
    max_steps: int,
    *,
    generator: torch.Generator,
    restart: bool,
    should_stop: Callable[[np.ndarray, np.ndarray, int, bool], bool] | None = None,
    callbacks: Sequence[Callback] = (),
    task: str = "lanczos",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
    """Run ``r`` Lanczos processes in lockstep (one ``matmat`` of their current vectors per step).

    Full reorthogonalisation (twice) against each run's own basis. At an invariant subspace (tiny
    ``beta``) a run either restarts from a fresh random vector orthogonal to its basis (``beta = 0``
    there, so ``T`` becomes block diagonal) or stops.

    Returns:
        ``(alphas (r, m), betas (r, m), lengths (r,), basis (r, m, P))``; ``betas[i, j]`` couples steps
        ``j`` and ``j + 1`` of run ``i``.
    """
    r, n = starts.shape
    q = starts / starts.norm(dim=1, keepdim=True)
    # The basis grows in blocks: memory follows the steps actually taken, not max_steps.
    basis = torch.zeros(r, min(max_steps, 32), n, dtype=op.dtype, device=op.device)
    alphas = np.zeros((r, max_steps))
    betas = np.zeros((r, max_steps))
    lengths = np.zeros(r, dtype=int)
    active = np.ones(r, dtype=bool)
    scale = 0.0
    emit(callbacks, ProgressEvent(task, "start", 0, max_steps))
    for j in range(max_steps):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        # Slices while every run is active (the common case): no gathers of the basis per step.
        sel: slice | torch.Tensor = slice(None) if idx.size == r else torch.as_tensor(idx, device=op.device)
        if j == basis.shape[1]:
            grow = torch.zeros(r, min(basis.shape[1], max_steps - j), n, dtype=op.dtype, device=op.device)
            basis = torch.cat([basis, grow], dim=1)
        qs = q if idx.size == r else q[sel]
        basis[sel, j] = qs
        w = op.matmat(qs)
        a = (w * qs).sum(dim=1, dtype=torch.float64)
        # The three-term recurrence, then classical Gram-Schmidt against the whole basis for what rounding left.
        # A second pass only where the first took away more than 1 - 1/sqrt(2) of the norm ("twice is enough":
        # Daniel, Gragg, Kaufman and Stewart, Math. Comp. 30, 1976): reading the basis is most of a step's cost
        # on a large model, and after the recurrence one pass almost always keeps the norm.
        w = w - a.to(w.dtype)[:, None] * qs
        if j > 0:
            w = w - torch.as_tensor(betas[idx, j - 1], dtype=w.dtype, device=w.device)[:, None] * basis[sel, j - 1]
        prev = basis[sel, : j + 1]
        before = torch.linalg.vector_norm(w, dim=1)
        w = w[:, None, :]
        w = torch.baddbmm(w, torch.bmm(w, prev.mT), prev, alpha=-1)
        if bool((torch.linalg.vector_norm(w[:, 0], dim=1) < _ONCE_KEEPS * before).any()):
            w = torch.baddbmm(w, torch.bmm(w, prev.mT), prev, alpha=-1)
        w = w[:, 0]
        ab = torch.stack([a, torch.linalg.vector_norm(w, dim=1, dtype=torch.float64)]).cpu().numpy()
        b = ab[1]
        alphas[idx, j] = ab[0]
        lengths[idx] = j + 1
        scale = max(scale, float(np.abs(ab[0]).max()), float(b.max()))
        broke = False
        fine = b > _breakdown_tol(op.dtype) * max(scale, 1e-30)
        if fine.all():
            # The common case: every run goes on, with one division for all of them.
            betas[idx, j] = b
            step = w / torch.as_tensor(b, dtype=w.dtype, device=w.device)[:, None]
            if idx.size == r:
                q = step
            else:
                q[sel] = step
        else:
            for row, i in enumerate(idx):
                if fine[row]:
                    betas[i, j] = b[row]
                    q[i] = w[row] / float(b[row])
                elif restart and j + 1 < n:
                    broke = True
                    fresh = random_vectors(1, n, generator, op)[0]
                    for _ in range(2):
                        fresh = fresh - basis[i, : j + 1].T @ (basis[i, : j + 1] @ fresh)
                    q[i] = fresh / fresh.norm()
                else:
                    active[i] = False
        emit(callbacks, ProgressEvent(task, "step", j + 1, max_steps))
        if should_stop is not None and should_stop(alphas, betas, j + 1, broke):
            break
    emit(callbacks, ProgressEvent(task, "end", int(lengths.max()), max_steps))
    return alphas, betas, lengths, basis


def ritz(alphas: np.ndarray, betas: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Ritz values (ascending) and the eigenvectors (columns) of the ``m x m`` tridiagonal matrix of one run."""
    if m == 1:
        return alphas[:1].copy(), np.ones((1, 1))
    # LAPACK's dstev directly: scipy's eigh_tridiagonal checks and converts its arguments first, which on
    # a dozen steps costs more than the solve, and Lanczos solves once per step.
    values, vectors, info = _STEV(alphas[:m], betas[: m - 1], compute_v=1)
    if info != 0:
        return scipy.linalg.eigh_tridiagonal(alphas[:m], betas[: m - 1])
    return values, vectors


def check_k(k: int, size: int) -> None:
    """Check that ``k`` eigenvalues can be asked of an operator on ``size`` scalars.

    Raises:
        ValueError: ``k`` not in ``1..size``.
    """
    check_positive_int("k", k)
    if k > size:
        raise expected("k", f"at most the number of parameters ({size})", k)


def _default_max_iter(k: int, size: int) -> int:
    return min(size, max(100, 20 * k))


def lanczos_eigenvalues(
    op: SymmetricOperator,
    k: int = 5,
    *,
    tol: float = 1e-3,
    max_iter: int | None = None,
    seed: int = 0,
    return_vectors: bool = False,
    confirm: bool = False,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = False,
) -> EigenResult:
    """The ``k`` largest algebraic eigenvalues of a symmetric operator by Lanczos with full reorthogonalisation.

    The Krylov space grows one product at a time until each of the top ``k`` Ritz pairs ``(theta, y)`` has
    residual ``r = ||A y - theta y|| <= tol * |theta|`` (an eigenvalue of ``A`` lies within ``r`` of ``theta``;
    once the pair is isolated the error is about ``r^2 / gap``, far smaller: Parlett, The Symmetric
    Eigenvalue Problem, ch. 11), or ``max_iter`` steps. So ``tol`` is a relative accuracy each eigenvalue
    meets with room to spare (values below ``1e-6`` of the spectral-norm estimate are held to
    ``tol * 1e-6 * max|theta|``). Memory: one basis vector of ``P`` scalars per step taken.

    Multiplicity: a Krylov space grown from one start vector holds a single direction of each eigenspace, so
    a copy of an exactly repeated eigenvalue is missed (spectrum ``4, 4, 3, 2, ...`` with ``k = 3`` gives
    ``4, 3, 2``, every value "converged"), and a nearly repeated one is found late. ``confirm=True`` guards
    against this: once the top ``k`` have converged, Lanczos runs again from a fresh random vector on the
    operator deflated by the ``k`` Ritz vectors (``P A P`` with ``P = I - V V^T``, the span of ``V`` moved far
    below the spectrum); while its top value exceeds the current ``k``-th by more than ``tol`` relative, it
    is inserted (vector added to ``V``) and the check repeats. Each check costs about as many products as
    converging one more eigenvalue: on a 67-parameter MLP (``tests/lgeom/cases.py``), ``k = 5``,
    ``tol = 1e-3``, seeds 0-2, 22-25 products plain and 43-47 with the check (``k = 6``: 26-29 and 42-46),
    roughly doubling the cost, hence off by default.

    Args:
        op: the operator (``HessianOperator`` or anything with ``size``, ``dtype``, ``device``, ``matmat``).
        k: how many eigenvalues.
        tol: relative residual per eigenpair (bounds the relative eigenvalue error).
        max_iter: Lanczos steps at most (default ``min(P, max(100, 20 k))``).
        seed: seeds the start vector (and restart vectors).
        return_vectors: also return the Ritz vectors.
        confirm: after convergence, check the deflated operator for eigenvalues a single Krylov space
            missed (repeated eigenvalues), as described above. ``n_hvp`` and ``n_iter`` include the checks.
        callbacks, progress: progress reporting (task ``"lanczos"``); ``progress`` adds a tqdm bar.

    Returns:
        :class:`EigenResult` (values descending; ``converged`` False where ``max_iter`` ran out first).

    Raises:
        ValueError: ``k`` not in ``1..P``, ``tol <= 0``, ``max_iter < k``.
    """
    check_k(k, op.size)
    check_positive("tol", tol)
    m_max = _default_max_iter(k, op.size) if max_iter is None else max_iter
    check_positive_int("max_iter", m_max)
    if m_max < k:
        raise expected("max_iter", f"at least k = {k} Lanczos steps", m_max)
    m_max = min(m_max, op.size)
    gen = torch.Generator().manual_seed(seed)
    start_products = op.n_products

    def converged_top(alphas: np.ndarray, betas: np.ndarray, m: int) -> tuple[np.ndarray, ...]:
        theta, s = ritz(alphas[0], betas[0], m)
        order = np.argsort(theta)[::-1][:k]
        res = np.abs(betas[0, m - 1]) * np.abs(s[-1, order]) if m < op.size else np.zeros(len(order))
        others = np.abs(theta[order][:, None] - theta[None, :])
        others[np.arange(len(order)), order] = np.inf
        gap = others.min(axis=1) if m > 1 else np.full(len(order), np.inf)
        bound = np.minimum(res, np.divide(res**2, gap, out=np.full_like(res, np.inf), where=gap > 0))
        floor = 1e-6 * max(float(np.abs(theta).max()), 1e-300)
        ok = res <= tol * np.maximum(np.abs(theta[order]), floor)
        return theta[order], s[:, order], res, bound, ok

    def stop(alphas: np.ndarray, betas: np.ndarray, m: int, broke: bool) -> bool:
        # Right after a restart the new direction is unexplored: the top k may still lie there.
        if m < k or broke:
            return False
        # converged_top's test alone, checked after every step: the Ritz values come ascending.
        theta, s = ritz(alphas[0], betas[0], m)
        if m >= op.size:
            return True
        res = abs(betas[0, m - 1]) * np.abs(s[-1, -k:])
        floor = 1e-6 * max(abs(theta[0]), abs(theta[-1]), 1e-300)
        return bool((res <= tol * np.maximum(np.abs(theta[-k:]), floor)).all())

    cbs = resolve_callbacks(callbacks, progress, "lanczos")
    start = random_vectors(1, op.size, gen, op)
    alphas, betas, lengths, basis = lanczos_runs(
        op, start, m_max, generator=gen, restart=True, should_stop=stop, callbacks=cbs
    )
    m = int(lengths[0])
    values, s, res, bound, ok = converged_top(alphas, betas, m)
    vectors = None
    if return_vectors or (confirm and bool(ok.all()) and k < op.size):
        vectors = torch.as_tensor(s.T, dtype=op.dtype, device=op.device) @ basis[0, :m]
    if confirm and bool(ok.all()) and k < op.size:
        assert vectors is not None
        values, vectors, res, bound, ok, extra = _confirm_top(
            op, k, values, vectors, res, bound, ok, tol=tol, seed=seed
        )
        m += extra
    return EigenResult(
        values.astype(np.float64),
        ok,
        res,
        bound,
        op.n_products - start_products,
        m,
        "lanczos",
        vectors if return_vectors else None,
    )


class _DeflatedOperator:
    """``P A P - shift V^T V`` with ``P = I - V^T V`` for orthonormal rows ``V``: ``A`` on the complement of
    ``span(V)``, with ``span(V)`` moved to eigenvalue ``-shift`` (below the spectrum, so it is never on top).
    """

    def __init__(self, op: SymmetricOperator, basis: torch.Tensor, shift: float) -> None:
        self.op, self.basis, self.shift = op, basis, shift
        self.size, self.dtype, self.device = op.size, op.dtype, op.device
        self.n_products = 0

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        coeff = vectors @ self.basis.T
        out = self.op.matmat(vectors - coeff @ self.basis)
        out = out - (out @ self.basis.T) @ self.basis - self.shift * (coeff @ self.basis)
        self.n_products += int(vectors.shape[0])
        return out


def _confirm_top(
    op: SymmetricOperator,
    k: int,
    values: np.ndarray,
    vectors: torch.Tensor,
    res: np.ndarray,
    bound: np.ndarray,
    ok: np.ndarray,
    *,
    tol: float,
    seed: int,
) -> tuple[np.ndarray, torch.Tensor, np.ndarray, np.ndarray, np.ndarray, int]:
    """Insert eigenvalues that the single-vector Krylov space missed (see :func:`lanczos_eigenvalues`).

    Returns the top ``k`` ``(values, vectors, residuals, bounds, converged)`` after the checks and the
    Lanczos steps they took.
    """
    vals, vecs = [float(v) for v in values], [v for v in vectors]
    info = [(float(r), float(b), bool(c)) for r, b, c in zip(res, bound, ok)]
    steps, round_ = 0, 0
    while len(vecs) < op.size:
        round_ += 1
        basis = torch.linalg.qr(torch.stack(vecs).T.double()).Q.T.to(op.dtype)
        scale = max(abs(v) for v in vals)
        deflated = _DeflatedOperator(op, basis, 2.0 * scale if scale > 0 else 1.0)
        sub = lanczos_eigenvalues(deflated, 1, tol=tol, seed=seed + 7919 * round_, return_vectors=True)
        steps += sub.n_iter
        kth = sorted(vals, reverse=True)[k - 1]
        floor = 1e-6 * max(scale, 1e-300)
        if not sub.values[0] > kth + tol * max(abs(kth), floor):
            break
        assert sub.vectors is not None
        vals.append(float(sub.values[0]))
        vecs.append(sub.vectors[0])
        info.append((float(sub.residuals[0]), float(sub.error_bounds[0]), bool(sub.converged[0])))
    order = np.argsort(np.asarray(vals))[::-1][:k]
    return (
        np.asarray(vals)[order],
        torch.stack([vecs[i] for i in order]),
        np.asarray([info[i][0] for i in order]),
        np.asarray([info[i][1] for i in order]),
        np.asarray([info[i][2] for i in order]),
        steps,
    )
