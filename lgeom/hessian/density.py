"""The spectral density of the loss Hessian by stochastic Lanczos quadrature.

For a unit start vector ``v``, ``v^T f(A) v = sum_i w_i f(lambda_i)`` with weights ``w_i = (u_i^T v)^2``
(``u_i`` the eigenvectors) summing to 1; ``m`` Lanczos steps from ``v`` give the Gauss quadrature of that sum
with nodes at the Ritz values ``theta_j`` and weights ``s_{1j}^2`` (first components of the tridiagonal's
eigenvectors). Averaged over random ``v`` it is the spectral measure ``(1/P) sum_i delta(x - lambda_i)``,
which a Gaussian kernel smooths into a density. With ``m = P`` and a normalised Rademacher start vector, each
weight is ``1/P`` exactly for a diagonal ``A``, so the density's mean is ``tr(A) / P``:

>>> import torch
>>> from lgeom.reference import DenseOperator
>>> d = slq_density(DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 6.0], dtype=torch.float64))), n_runs=1, grid=4001)
>>> round(d.mean(), 4)
3.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lgeom._checks import check_positive, check_positive_int, expected
from lgeom.data import Batches
from lgeom.hessian.lanczos import lanczos_runs, ritz
from lgeom.hessian.operator import HessianOperator, SymmetricOperator, random_vectors
from lgeom.progress import Callback, resolve_callbacks

__all__ = ["Density", "slq_density", "spectral_density"]


@dataclass(frozen=True)
class Density:
    """Smoothed spectral density from stochastic Lanczos quadrature.

    Attributes:
        grid: eigenvalue axis (nats per squared parameter unit).
        density: values on ``grid``, normalised so that the trapezoid integral is 1.
        nodes: ``(n_runs, steps)`` Ritz values of each run (NaN-padded when a run stopped early).
        weights: matching quadrature weights (each run's sum to 1).
        sigma: Gaussian kernel width.
        n_hvp: Hessian-vector products used.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float
    n_hvp: int

    def integral(self) -> float:
        """Trapezoid integral of the density over the grid (1 up to rounding)."""
        return float(np.trapezoid(self.density, self.grid))

    def mean(self) -> float:
        """Mean eigenvalue under the density (estimates ``tr(H) / P``)."""
        return float(np.trapezoid(self.grid * self.density, self.grid) / self.integral())

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {
            "grid": self.grid.tolist(),
            "density": self.density.tolist(),
            "nodes": [[v for v in row if np.isfinite(v)] for row in self.nodes.tolist()],
            "weights": [[w for w in row if np.isfinite(w)] for row in self.weights.tolist()],
            "sigma": self.sigma,
            "n_hvp": self.n_hvp,
        }


def slq_density(
    op: SymmetricOperator,
    *,
    n_runs: int = 4,
    n_steps: int = 40,
    sigma: float | None = None,
    grid: int | Sequence[float] | np.ndarray = 500,
    seed: int = 0,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = False,
) -> Density:
    """Spectral density by stochastic Lanczos quadrature (Ghorbani et al. 2019; Lin et al. 2016).

    ``n_runs`` Lanczos processes from normalised Rademacher vectors run in lockstep (one pass over the data
    applies all runs' vectors); each yields Gauss quadrature nodes (Ritz values) and weights (squared first
    components of the Ritz vectors). The density is the average of Gaussians of width ``sigma`` at the
    nodes, normalised to integrate to 1 on the grid. Its mean estimates ``tr(A) / P``.

    Args:
        op: the operator.
        n_runs: independent runs (start vectors).
        n_steps: Lanczos steps per run (capped at ``P``).
        sigma: kernel width; default 1 % of the node range.
        grid: number of points spanning the nodes +- 5 sigma, or explicit eigenvalue positions.
        seed: seeds the start vectors.
        callbacks, progress: progress reporting (task ``"slq"``).

    Returns:
        :class:`Density`.

    Raises:
        ValueError: non-positive ``n_runs``, ``n_steps``, ``sigma`` or grid size.
    """
    check_positive_int("n_runs", n_runs)
    check_positive_int("n_steps", n_steps)
    if sigma is not None:
        check_positive("sigma", sigma)
    gen = torch.Generator().manual_seed(seed)
    start_products = op.n_products
    cbs = resolve_callbacks(callbacks, progress, "slq")
    starts = random_vectors(n_runs, op.size, gen, op, "rademacher")
    steps = min(n_steps, op.size)
    alphas, betas, lengths, _ = lanczos_runs(op, starts, steps, generator=gen, restart=False, callbacks=cbs, task="slq")
    nodes = np.full((n_runs, steps), np.nan)
    weights = np.full((n_runs, steps), np.nan)
    for i in range(n_runs):
        theta, s = ritz(alphas[i], betas[i], int(lengths[i]))
        nodes[i, : len(theta)] = theta
        weights[i, : len(theta)] = s[0] ** 2
    finite = np.isfinite(nodes)
    lo, hi = float(nodes[finite].min()), float(nodes[finite].max())
    width = hi - lo
    if sigma is None:
        sigma = 0.01 * width if width > 0 else 1e-3 * max(abs(hi), 1.0)
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        check_positive_int("grid", int(grid))
        if grid < 2:
            raise expected("grid", "at least 2 points", grid)
        x = np.linspace(lo - 5 * sigma, hi + 5 * sigma, int(grid))
    else:
        x = np.asarray(grid, dtype=np.float64).reshape(-1)
        if x.size < 2 or np.any(np.diff(x) <= 0):
            raise expected("grid", "at least 2 increasing eigenvalue positions", x.size)
    kernel = np.exp(-0.5 * ((x[:, None] - nodes[finite][None, :]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    density = (kernel * weights[finite][None, :]).sum(axis=1) / n_runs
    total = float(np.trapezoid(density, x))
    if total <= 0:
        raise expected(
            "grid", "positions covering the spectrum (the density vanishes on it)", (float(x[0]), float(x[-1]))
        )
    return Density(x, density / total, nodes, weights, float(sigma), op.n_products - start_products)


def spectral_density(
    model: nn.Module,
    data: Batches,
    *,
    n_runs: int = 4,
    n_steps: int = 40,
    sigma: float | None = None,
    grid: int | Sequence[float] | np.ndarray = 500,
    seed: int = 0,
    params: Mapping[str, torch.Tensor] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
    bn_batches: Batches | None = None,
    engine: str = "auto",
    progress: bool = False,
) -> Density:
    """Spectral density of the loss Hessian over ``data`` by stochastic Lanczos quadrature.

    ``params``, ``buffers``, ``bn_batches``: the point and its BatchNorm statistics, as in
    :class:`HessianOperator`; the other settings are :func:`slq_density`'s.

    Returns:
        :class:`Density` normalised to integrate to 1 over its grid.

    Raises:
        ValueError: empty data or bad settings (see :func:`slq_density`).
    """
    op = HessianOperator(model, data, params=params, buffers=buffers, bn_batches=bn_batches, engine=engine)
    return slq_density(op, n_runs=n_runs, n_steps=n_steps, sigma=sigma, grid=grid, seed=seed, progress=progress)
