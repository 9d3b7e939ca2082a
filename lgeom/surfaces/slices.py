"""Filter-normalised random 1-D and 2-D slices of the loss surface through a parameter point (Li et al. 2018).

``slice_1d`` evaluates ``L(theta + a d)`` and ``slice_2d`` ``L(theta + a d1 + b d2)`` on a grid of
coefficients (default 51 points on [-1, 1]). Directions are Gaussian with every output filter rescaled to the
norm of the matching weight filter (1-D parameters left out; filters lie along axis 0 of any parameter, whatever
its layer: :func:`lgeom.params.filter_normalized_direction` spells out the rule for embeddings, attention and
norm layers); for 2-D the second direction is
Gram-Schmidt orthogonalised against the first and rescaled to its pre-projection norm. Points are evaluated
many per pass over the data by :func:`lgeom.multipoint.evaluate_affine`, which applies the BN policy (BatchNorm
statistics recomputed at every grid point on ``bn_batches``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lgeom._checks import check_positive_int, expected
from lgeom.data import Batches, as_batches
from lgeom.multipoint import evaluate_affine
from lgeom.params import Params, dot, filter_normalized_direction, get_params
from lgeom.progress import ProgressEvent, emit, resolve_callbacks

__all__ = ["SliceResult", "grid_losses", "slice_1d", "slice_2d"]


@dataclass(frozen=True)
class SliceResult:
    """Loss and accuracy on a 1-D or 2-D slice through a point.

    Attributes:
        alphas: coefficients along the first direction.
        betas: coefficients along the second direction (``None`` for a 1-D slice).
        loss: mean cross-entropy (nats): shape ``(len(alphas),)``, or ``(len(alphas), len(betas))`` with
            ``loss[i, j]`` at ``theta + alphas[i] d1 + betas[j] d2``.
        acc: accuracy in percent, shaped like ``loss``.
        directions: the direction(s) used, as parameter dicts.
    """

    alphas: np.ndarray
    betas: np.ndarray | None
    loss: np.ndarray
    acc: np.ndarray
    directions: tuple[Params, ...]

    @property
    def ndim(self) -> int:
        """1 or 2."""
        return 1 if self.betas is None else 2

    @property
    def center_loss(self) -> float | None:
        """Loss at the slice's origin when 0 is one of the coefficients, else ``None``."""
        i = np.flatnonzero(np.isclose(self.alphas, 0.0, atol=1e-12))
        if i.size == 0:
            return None
        if self.betas is None:
            return float(self.loss[i[0]])
        j = np.flatnonzero(np.isclose(self.betas, 0.0, atol=1e-12))
        return float(self.loss[i[0], j[0]]) if j.size else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready arrays (without the directions)."""
        return {
            "alphas": self.alphas.tolist(),
            "betas": None if self.betas is None else self.betas.tolist(),
            "loss": self.loss.tolist(),
            "acc": self.acc.tolist(),
        }


def _coefficients(n_points: int, span: tuple[float, float]) -> np.ndarray:
    check_positive_int("n_points", n_points)
    lo, hi = float(span[0]), float(span[1])
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise expected("span", "(low, high) with low < high", span)
    return np.linspace(lo, hi, n_points)


def grid_losses(
    model: nn.Module,
    origin: Mapping[str, torch.Tensor],
    directions: Sequence[Mapping[str, torch.Tensor]],
    coords: np.ndarray,
    data: Batches,
    *,
    bn_batches: Batches | None = None,
    progress: bool = False,
    task: str = "grid",
) -> tuple[np.ndarray, np.ndarray]:
    """Loss and accuracy at ``origin + sum_k coords[i, k] directions[k]`` for every row of ``coords``.

    Points are built and evaluated chunk by chunk by :func:`lgeom.multipoint.evaluate_affine` (many points per
    pass over the data; BatchNorm statistics recomputed per point for BN models). ``data`` and
    ``bn_batches`` may be batches or map-style ``Dataset`` objects (:func:`lgeom.data.as_batches`).

    Returns:
        ``(loss, acc)``: one value per row of ``coords`` (nats, percent).

    Raises:
        ValueError: a BN model without ``bn_batches``, empty data, or ``coords`` not ``(n, len(directions))``.
    """
    data = as_batches(data)
    bn_batches = None if bn_batches is None else as_batches(bn_batches)
    cbs = resolve_callbacks(None, progress, task)
    total = len(coords)
    emit(cbs, ProgressEvent(task, "start", 0, total))
    bridge = [lambda e: emit(cbs, ProgressEvent(task, "step", e.step, total))] if cbs else None
    res = evaluate_affine(model, origin, directions, coords, {"data": data}, bn_batches=bn_batches, callbacks=bridge)[
        "data"
    ]
    emit(cbs, ProgressEvent(task, "end", total, total))
    return np.asarray(res.loss, dtype=np.float64), np.asarray(res.acc, dtype=np.float64)


def _check_direction(d: Mapping[str, torch.Tensor], center: Params, what: str) -> Params:
    for n, v in center.items():
        if n not in d or tuple(d[n].shape) != tuple(v.shape):
            raise expected(
                what,
                f"a parameter dict shaped like the model (entry {n!r} of shape {tuple(v.shape)})",
                None if n not in d else tuple(d[n].shape),
            )
    return {n: d[n].detach().to(v.device, v.dtype) for n, v in center.items()}


def slice_1d(
    model: nn.Module,
    data: Batches,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    direction: Mapping[str, torch.Tensor] | None = None,
    n_points: int = 51,
    span: tuple[float, float] = (-1.0, 1.0),
    bn_batches: Batches | None = None,
    seed: int = 0,
    progress: bool = False,
) -> SliceResult:
    """Loss along ``theta + a d`` for ``n_points`` values of ``a`` in ``span``.

    Args:
        model: the architecture (not mutated).
        data: batches to evaluate on (or a map-style ``Dataset``).
        params: the point ``theta`` (default: the model's parameters).
        direction: ``d`` (default: a seeded filter-normalised Gaussian direction).
        n_points: grid size.
        span: ``(low, high)`` coefficient range.
        bn_batches: training batches for the BatchNorm recompute (required for BN models).
        seed: seeds the random direction.
        progress: tqdm bar.

    Returns:
        :class:`SliceResult` with ``betas=None``.

    Raises:
        ValueError: bad ``n_points``/``span``/``direction``, a BN model without ``bn_batches``, empty data.
    """
    center = {n: p.detach() for n, p in (get_params(model) if params is None else params).items()}
    alphas = _coefficients(n_points, span)
    if direction is None:
        d = filter_normalized_direction(center, generator=torch.Generator().manual_seed(seed))
    else:
        d = _check_direction(direction, center, "direction")
    loss, acc = grid_losses(
        model, center, [d], alphas[:, None], data, bn_batches=bn_batches, progress=progress, task="slice_1d"
    )
    return SliceResult(alphas, None, loss, acc, (d,))


def slice_2d(
    model: nn.Module,
    data: Batches,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    directions: tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
    n_points: int = 51,
    span: tuple[float, float] = (-1.0, 1.0),
    bn_batches: Batches | None = None,
    seed: int = 0,
    progress: bool = False,
) -> SliceResult:
    """Loss on the plane ``theta + a d1 + b d2`` over an ``n_points x n_points`` grid of ``span``.

    Random directions (default) are filter-normalised Gaussians; ``d2`` is orthogonalised against ``d1``
    and rescaled to its norm before the projection. Given directions are used as they are.

    Returns:
        :class:`SliceResult` with ``loss[i, j]`` at ``alphas[i]``, ``betas[j]``.

    Raises:
        ValueError: as :func:`slice_1d`, or directions that are not two parameter dicts.
    """
    center = {n: p.detach() for n, p in (get_params(model) if params is None else params).items()}
    coeffs = _coefficients(n_points, span)
    if directions is None:
        gen = torch.Generator().manual_seed(seed)
        d1 = filter_normalized_direction(center, generator=gen)
        raw = filter_normalized_direction(center, generator=gen)
        raw_norm = float(dot(raw, raw)) ** 0.5
        proj = float(dot(raw, d1) / dot(d1, d1))
        d2 = {n: raw[n] - proj * d1[n] for n in raw}
        scale = raw_norm / max(float(dot(d2, d2)) ** 0.5, 1e-30)
        d2 = {n: v * scale for n, v in d2.items()}
    else:
        if len(directions) != 2:
            raise expected("directions", "two parameter dicts", len(directions))
        d1 = _check_direction(directions[0], center, "directions[0]")
        d2 = _check_direction(directions[1], center, "directions[1]")
    grid = np.stack(np.meshgrid(coeffs, coeffs, indexing="ij"), axis=-1).reshape(-1, 2)
    loss, acc = grid_losses(
        model, center, [d1, d2], grid, data, bn_batches=bn_batches, progress=progress, task="slice_2d"
    )
    shape = (len(coeffs), len(coeffs))
    return SliceResult(coeffs, coeffs.copy(), loss.reshape(shape), acc.reshape(shape), (d1, d2))
