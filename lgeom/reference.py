"""Slow, dense references that the estimators are tested against (tiny float64 cases only).

Independent of the code under test: the loss here is plain ``torch.func.functional_call`` followed by
``F.cross_entropy`` (never :mod:`lgeom.evaluate` or :class:`lgeom.gradients.Objective`), and parameter
points are flattened here, not by :mod:`lgeom.params`.

* :func:`dense_loss`: the metric contract's loss ``L(theta) = sum_i CE_i(theta) / N`` (eval mode) as a
  function of the flat parameter vector.
* :func:`dense_hessian`: the full ``P x P`` Hessian of that loss, reverse over reverse
  (``torch.func.jacrev`` of ``torch.func.grad``; ``torch.func.hessian``, forward over ``jacrev``, gets
  LayerNorm's second derivatives wrong in torch 2.14).
* :class:`DenseOperator`: a symmetric matrix behind the operator interface of :mod:`lgeom.hessian`.
* :func:`symmetric_with_spectrum`: a random symmetric matrix with given eigenvalues.
* :class:`QuadraticLandscape`: ``L(theta) = 1/2 (theta - c)^T A (theta - c) + b^T (theta - c) + l0`` over a
  parameter dict, with closed-form losses and gradients, for :mod:`lgeom.sharpness`.

>>> op = DenseOperator(torch.diag(torch.tensor([2.0, 3.0], dtype=torch.float64)))
>>> op.matmat(torch.ones(1, 2, dtype=torch.float64))
tensor([[2., 3.]], dtype=torch.float64)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lgeom._checks import expected
from lgeom.data import Batches

Params = dict[str, torch.Tensor]

__all__ = [
    "DenseOperator",
    "QuadraticLandscape",
    "dense_eigenvalues",
    "dense_hessian",
    "dense_loss",
    "flat_params",
    "symmetric_with_spectrum",
]


def flat_params(point: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The tensors of ``point`` flattened and concatenated in its key order (detached)."""
    return torch.cat([v.detach().reshape(-1) for v in point.values()])


def _split(flat: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Params:
    out, offset = {}, 0
    for name, v in like.items():
        out[name] = flat[offset : offset + v.numel()].reshape(v.shape)
        offset += v.numel()
    return out


def dense_loss(
    model: nn.Module,
    data: Batches,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """The mean cross-entropy over ``data`` as a function of the flat parameter vector, and the point itself.

    The model is called through ``torch.func.functional_call`` with ``params`` (default: its trainable
    parameters, in ``named_parameters()`` order) and ``buffers`` (default: its own); call the function with
    the model in eval mode. Floating inputs are cast to the parameters' dtype.

    Returns:
        ``(loss, theta)``: ``loss(flat) -> 0-d tensor`` in nats, and the flat point ``theta``.

    Raises:
        ValueError: empty data.
    """
    point = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad} if params is None else dict(params)
    state_buffers = {n: b.detach() for n, b in model.named_buffers()} if buffers is None else dict(buffers)
    first = next(iter(point.values()))
    batches = [
        (x.to(first.device, first.dtype) if x.is_floating_point() else x.to(first.device), y.to(first.device))
        for x, y in data
    ]
    n = sum(int(y.shape[0]) for _, y in batches)
    if n == 0:
        raise expected("data", "a non-empty dataset", "an empty one (0 samples)")

    def loss(flat: torch.Tensor) -> torch.Tensor:
        state = {**_split(flat, point), **state_buffers}
        total = sum(
            F.cross_entropy(torch.func.functional_call(model, state, (x,)), y, reduction="sum") for x, y in batches
        )
        return total / n  # type: ignore[return-value]

    return loss, flat_params(point)


def dense_hessian(
    model: nn.Module,
    data: Batches,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The ``P x P`` Hessian of the mean cross-entropy over ``data`` (eval mode), symmetrised.

    Rows and columns follow ``params`` order (default: ``model.named_parameters()``). Cost is ``P``
    Hessian-vector products; use only for tiny models. Attention (``F.scaled_dot_product_attention``) runs on
    its math backend, the one with second derivatives.

    Raises:
        ValueError: empty data.
    """
    loss, theta = dense_loss(model, data, params=params, buffers=buffers)
    was_training = model.training
    model.eval()
    try:
        with sdpa_kernel(SDPBackend.MATH):
            h = torch.func.jacrev(torch.func.grad(loss))(theta)
    finally:
        model.train(was_training)
    return (h + h.T) / 2


def dense_eigenvalues(matrix: torch.Tensor) -> np.ndarray:
    """All eigenvalues of a symmetric matrix, descending (float64)."""
    return torch.linalg.eigvalsh(matrix.detach().to("cpu", torch.float64)).flip(0).numpy()


def symmetric_with_spectrum(
    eigenvalues: Sequence[float], *, seed: int = 0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
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
        size = sum(v.numel() for v in self.center.values())
        if tuple(matrix.shape) != (size, size):
            raise expected("matrix", f"shape ({size}, {size})", tuple(matrix.shape))
        self.matrix = matrix.to(torch.float64)
        self.gradient = torch.zeros(size, dtype=torch.float64) if gradient is None else gradient.to(torch.float64)
        self.base_loss = float(base_loss)
        self._c = flat_params(self.center).to(torch.float64)
        self.n_losses = 0

    def _loss(self, x: torch.Tensor) -> float:
        return float(0.5 * x @ self.matrix @ x + self.gradient @ x) + self.base_loss

    def losses(self, points: Sequence[Mapping[str, torch.Tensor]]) -> np.ndarray:
        """Exact loss at each point."""
        self.n_losses += len(points)
        return np.array([self._loss(self._flat(p) - self._c) for p in points])

    def loss_and_grad(self, point: Mapping[str, torch.Tensor]) -> tuple[float, Params]:
        """Exact loss and gradient ``A x + b`` at ``point``."""
        self.n_losses += 1
        x = self._flat(point) - self._c
        g = self.matrix @ x + self.gradient
        like = next(iter(self.center.values()))
        return self._loss(x), _split(g.to(like.dtype), self.center)

    def _flat(self, point: Mapping[str, torch.Tensor]) -> torch.Tensor:
        # In the centre's key order, whatever the order of ``point``.
        return flat_params({n: point[n] for n in self.center}).to(torch.float64)
