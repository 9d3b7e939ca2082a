"""The trace of the loss Hessian by Hutchinson's estimator (and Hutch++).

For random probes ``z`` with ``E[z z^T] = I`` (Rademacher: entries +-1), ``E[z^T A z] = tr(A)``; the mean over
``n`` probes has variance ``2 (||A||_F^2 - sum_i A_ii^2) / n``. A diagonal ``A`` has no off-diagonal mass, so
every Rademacher probe gives the trace exactly:

>>> import torch
>>> from lgeom.reference import DenseOperator
>>> hutchinson_trace(DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))), 4).mean
6.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lgeom._checks import check_choice, check_positive_int, expected
from lgeom.data import Batches
from lgeom.hessian.operator import HessianOperator, SymmetricOperator, random_vectors

TRACE_METHODS = ("hutchinson", "hutch++")

__all__ = ["TRACE_METHODS", "TraceResult", "hutchinson_trace", "trace"]


@dataclass(frozen=True)
class TraceResult:
    """Stochastic trace estimate.

    Attributes:
        mean: the estimate of ``tr(H)``.
        stderr: its standard error (NaN with fewer than two random samples).
        n_probes: Hessian-vector products spent.
        method: ``"hutchinson"`` or ``"hutch++"``.
        samples: the random quadratic forms ``z^T H z`` (Hutch++: of the deflated residual).
    """

    mean: float
    stderr: float
    n_probes: int
    method: str = "hutchinson"
    samples: np.ndarray | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {"mean": self.mean, "stderr": self.stderr, "n_probes": self.n_probes, "method": self.method}


def hutchinson_trace(
    op: SymmetricOperator,
    n_probes: int = 32,
    *,
    seed: int = 0,
    method: str = "hutchinson",
    chunk_size: int = 8,
) -> TraceResult:
    """Stochastic estimate of ``tr(A)`` from Rademacher probes.

    ``"hutchinson"``: the mean of ``z^T A z`` over ``n_probes`` probes, standard error from their spread.
    ``"hutch++"`` (Meyer et al. 2021): a third of the products sketch the top range ``Q`` of ``A``, a third
    give ``tr(Q^T A Q)`` exactly, and the rest estimate the trace of the deflated remainder by Hutchinson
    (the standard error is that part's).

    Args:
        op: the operator.
        n_probes: products to spend (>= 3 for Hutch++).
        seed: seeds the probes.
        method: ``"hutchinson"`` or ``"hutch++"``.
        chunk_size: probes applied per pass over the data.

    Returns:
        :class:`TraceResult`.

    Raises:
        ValueError: bad ``n_probes`` or ``method``.
    """
    check_positive_int("n_probes", n_probes)
    check_choice("trace method", method, TRACE_METHODS)
    check_positive_int("chunk_size", chunk_size)
    gen = torch.Generator().manual_seed(seed)

    def apply(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([op.matmat(z[lo : lo + chunk_size]) for lo in range(0, z.shape[0], chunk_size)])

    def summarise(samples: np.ndarray, offset: float, used: int) -> TraceResult:
        stderr = float(samples.std(ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else math.nan
        return TraceResult(offset + float(samples.mean()), stderr, used, method, samples)

    if method == "hutchinson":
        z = random_vectors(n_probes, op.size, gen, op, "rademacher")
        samples = (z.double() * apply(z).double()).sum(dim=1).cpu().numpy()
        return summarise(samples, 0.0, n_probes)
    if n_probes < 3:
        raise expected("n_probes", "at least 3 for hutch++", n_probes)
    s = min(n_probes // 3, op.size)
    sketch = apply(random_vectors(s, op.size, gen, op, "rademacher"))
    q = torch.linalg.qr(sketch.double().T).Q  # (P, s) orthonormal basis of the sketched range
    exact = float((q * apply(q.T.to(op.dtype).contiguous()).double().T).sum())
    rest = n_probes - 2 * s
    if rest == 0:
        return TraceResult(exact, 0.0, 2 * s, method, np.zeros(0))
    z = random_vectors(rest, op.size, gen, op, "rademacher").double()
    z = z - (z @ q) @ q.T
    samples = (z * apply(z.to(op.dtype)).double()).sum(dim=1).cpu().numpy()
    return summarise(samples, exact, n_probes)


def trace(
    model: nn.Module,
    data: Batches,
    *,
    n_probes: int = 32,
    seed: int = 0,
    params: Mapping[str, torch.Tensor] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
    bn_batches: Batches | None = None,
    method: str = "hutchinson",
    engine: str = "auto",
) -> TraceResult:
    """Hutchinson (or Hutch++) estimate of the loss Hessian's trace over ``data``.

    ``params``, ``buffers``, ``bn_batches``: the point and its BatchNorm statistics, as in
    :class:`HessianOperator`; see :func:`hutchinson_trace` for ``n_probes``, ``seed`` and ``method``.

    Returns:
        :class:`TraceResult` (nats per squared parameter unit).

    Raises:
        ValueError: empty data, bad ``n_probes`` or ``method``.
    """
    op = HessianOperator(model, data, params=params, buffers=buffers, bn_batches=bn_batches, engine=engine)
    return hutchinson_trace(op, n_probes, seed=seed, method=method)
