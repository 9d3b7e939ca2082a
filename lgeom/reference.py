"""Slow, dense references that the estimators are tested against (tiny float64 cases only).

* :func:`dense_hessian`: the full ``P x P`` Hessian of the metric contract's loss by ``torch.func.hessian``.
* :class:`DenseOperator`: a symmetric matrix behind the operator interface of :mod:`lgeom.hessian`.
* :func:`symmetric_with_spectrum`: a random symmetric matrix with given eigenvalues.
* :class:`QuadraticLandscape`: ``L(theta) = 1/2 (theta - c)^T A (theta - c) + b^T (theta - c) + l0`` over a
  parameter dict, with closed-form losses and gradients, for :mod:`lgeom.sharpness`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from lgeom._checks import expected
from lgeom.gradients import Objective
from lgeom.params import ParamLayout, Params

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

__all__ = ["DenseOperator", "QuadraticLandscape", "dense_eigenvalues", "dense_hessian", "symmetric_with_spectrum"]


def dense_hessian(
    model: nn.Module,
    data: Batches,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The ``P x P`` Hessian of the mean cross-entropy over ``data`` (eval mode), symmetrised.

    Rows and columns follow ``model.named_parameters()`` order. Cost is ``P`` Hessian-vector products; use
    only for tiny models.

    Raises:
        ValueError: empty data.
    """
    obj = Objective(model, data, params=params, buffers=buffers)
    layout = obj.layout

    def loss(flat: torch.Tensor) -> torch.Tensor:
        p = layout.unflatten(flat)
        return sum(obj.batch_loss_sum(p, x, y) for x, y in obj.batches) / obj.n_samples  # type: ignore[return-value]

    with obj.eval_mode():
        h = torch.func.hessian(loss)(layout.flatten(obj.params).detach())
    return (h + h.T) / 2


def dense_eigenvalues(matrix: torch.Tensor) -> np.ndarray:
    """All eigenvalues of a symmetric matrix, descending (float64)."""
    return torch.linalg.eigvalsh(matrix.detach().to("cpu", torch.float64)).flip(0).numpy()


def symmetric_with_spectrum(eigenvalues: Sequence[float], *, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A symmetric matrix ``Q diag(eigenvalues) Q^T`` with a random orthogonal ``Q`` (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    m = q @ torch.diag(torch.as_tensor(eigenvalues, dtype=torch.float64)) @ q.T
    return ((m + m.T) / 2).to(dtype)


class DenseOperator:
    """A symmetric matrix with the operator interface (``size``, ``dtype``, ``device``, ``matmat``).

    Raises:
        ValueError: a non-square or non-symmetric matrix.
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise expected("matrix", "a square matrix", tuple(matrix.shape))
        if not torch.allclose(matrix, matrix.T, atol=1e-10 * float(matrix.abs().max().clamp_min(1.0))):
            raise expected("matrix", "a symmetric matrix", "an asymmetric one")
        self.matrix = matrix
        self.size = int(matrix.shape[0])
        self.dtype = matrix.dtype
        self.device = matrix.device
        self.n_products = 0

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """``A v`` for every row of ``vectors``."""
        self.n_products += int(vectors.shape[0])
        return vectors.to(self.dtype) @ self.matrix


class QuadraticLandscape:
    """A quadratic loss over a parameter dict with closed forms, implementing ``lgeom.sharpness.Landscape``.

    ``L(theta) = 1/2 x^T A x + b^T x + base_loss`` with ``x = flat(theta) - flat(center)``.

    Args:
        center: the parameter point ``c`` (its layout defines the flat order).
        matrix: symmetric ``A`` (``P x P``).
        gradient: ``b`` (default 0: ``c`` is a critical point).
        base_loss: the loss at ``c``.
    """

    def __init__(
        self,
        center: Mapping[str, torch.Tensor],
        matrix: torch.Tensor,
        gradient: torch.Tensor | None = None,
        base_loss: float = 1.0,
    ) -> None:
        self.center: Params = {n: v.detach() for n, v in center.items()}
        self.layout = ParamLayout.of(self.center)
        if tuple(matrix.shape) != (self.layout.size, self.layout.size):
            raise expected("matrix", f"shape ({self.layout.size}, {self.layout.size})", tuple(matrix.shape))
        self.matrix = matrix.to(torch.float64)
        self.gradient = torch.zeros(self.layout.size, dtype=torch.float64) if gradient is None else gradient.to(torch.float64)
        self.base_loss = float(base_loss)
        self._c = self.layout.flatten(self.center).to(torch.float64)
        self.n_losses = 0

    def _loss(self, x: torch.Tensor) -> float:
        return float(0.5 * x @ self.matrix @ x + self.gradient @ x) + self.base_loss

    def losses(self, points: Sequence[Mapping[str, torch.Tensor]]) -> np.ndarray:
        """Exact loss at each point."""
        self.n_losses += len(points)
        return np.array([self._loss(self.layout.flatten(p).to(torch.float64) - self._c) for p in points])

    def loss_and_grad(self, point: Mapping[str, torch.Tensor]) -> tuple[float, Params]:
        """Exact loss and gradient ``A x + b`` at ``point``."""
        self.n_losses += 1
        x = self.layout.flatten(point).to(torch.float64) - self._c
        g = self.matrix @ x + self.gradient
        like = self.layout.flatten(self.center)
        return self._loss(x), self.layout.unflatten(g.to(like.dtype))
