"""Evaluate many parameter points per pass over the data.

For models without BatchNorm, points are stacked and evaluated together with ``torch.func.vmap`` over
``functional_call`` (one batched forward per data batch and chunk of points). Models with BatchNorm need
their statistics recomputed at every point (the BN policy), so they fall back to a loop over points, as
does any model ``vmap`` cannot trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from lgeom._checks import check_positive_int, expected
from lgeom.evaluate import evaluate, has_batchnorm, recompute_bn_stats
from lgeom.params import get_buffers

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class PointsEval:
    """Per-point mean cross-entropy ``loss`` and accuracy ``acc`` (percent) over ``n`` samples."""

    loss: np.ndarray
    acc: np.ndarray
    n: int
    method: str


def stack_points(points: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack parameter dicts along a new leading dimension (shape ``(P, *param_shape)``)."""
    if not points:
        raise expected("points", "at least one parameter point", 0)
    return {n: torch.stack([p[n].detach() for p in points]) for n in points[0]}


def evaluate_points(
    model: nn.Module,
    points: Sequence[Mapping[str, torch.Tensor]],
    data: Batches,
    *,
    bn_batches: Batches | None = None,
    chunk_size: int = 64,
    method: str = "auto",
) -> PointsEval:
    """Loss and accuracy of ``model`` at each of ``points`` over ``data``.

    Args:
        model: the architecture (not mutated).
        points: parameter dicts (all with the model's parameter names).
        data: iterable of ``(inputs, targets)`` batches; iterated once per chunk of points with ``vmap``.
        bn_batches: training batches for the BatchNorm recompute (required for BN models).
        chunk_size: points evaluated together in one vmapped forward.
        method: ``"auto"`` (vmap where possible), ``"vmap"`` or ``"loop"``.

    Returns:
        :class:`PointsEval` with one loss and accuracy per point.

    Raises:
        ValueError: no points, empty data, a BN model without ``bn_batches``, or a bad method.
    """
    if method not in ("auto", "vmap", "loop"):
        raise expected("method", "'auto', 'vmap' or 'loop'", method)
    check_positive_int("chunk_size", chunk_size)
    if not points:
        raise expected("points", "at least one parameter point", 0)
    bn = has_batchnorm(model)
    if bn and bn_batches is None:
        raise expected("bn_batches", "training batches to recompute BatchNorm statistics (BN policy)", None)
    data = list(data)
    if method == "vmap" and bn:
        raise expected("method", "'loop' or 'auto' for a model with BatchNorm (statistics differ per point)", method)
    if method == "loop" or bn:
        return _loop(model, points, data, bn_batches if bn else None)
    try:
        return _vmapped(model, points, data, chunk_size)
    except (RuntimeError, NotImplementedError):
        if method == "vmap":
            raise
        return _loop(model, points, data, None)


def _loop(
    model: nn.Module, points: Sequence[Mapping[str, torch.Tensor]], data: list, bn_batches: Batches | None
) -> PointsEval:
    losses, accs, n = [], [], 0
    bn_list = list(bn_batches) if bn_batches is not None else None
    for p in points:
        buffers = recompute_bn_stats(model, p, bn_list) if bn_list is not None else None
        res = evaluate(model, data, params=p, buffers=buffers)
        losses.append(res.loss)
        accs.append(res.acc)
        n = res.n
    return PointsEval(np.asarray(losses), np.asarray(accs), n, "loop")


def _vmapped(model: nn.Module, points: Sequence[Mapping[str, torch.Tensor]], data: list, chunk_size: int) -> PointsEval:
    buffers = get_buffers(model)
    device = next(iter(points[0].values())).device
    buffers = {k: v.to(device) for k, v in buffers.items()}

    def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**params, **buffers}, (x,))

    batched = vmap(forward, in_dims=(0, None))
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros(len(points), dtype=torch.float64, device=device)
    correct = torch.zeros(len(points), dtype=torch.long, device=device)
    n = 0
    try:
        with torch.no_grad():
            for lo in range(0, len(points), chunk_size):
                stacked = stack_points(points[lo : lo + chunk_size])
                m = next(iter(stacked.values())).shape[0]
                for xb, yb in data:
                    xb, yb = xb.to(device), yb.to(device)
                    logits = batched(stacked, xb)  # (m, B, C)
                    ce = F.cross_entropy(
                        logits.reshape(-1, logits.shape[-1]).float(), yb.repeat(m), reduction="none"
                    ).view(m, -1)
                    loss_sum[lo : lo + m] += ce.sum(dim=1).double()
                    correct[lo : lo + m] += (logits.argmax(dim=-1) == yb.unsqueeze(0)).sum(dim=1)
                    if lo == 0:
                        n += int(yb.shape[0])
    finally:
        model.train(was_training)
    if n == 0:
        raise expected("data", "a non-empty dataset", "an empty one (0 samples)")
    return PointsEval((loss_sum / n).cpu().numpy(), (100.0 * correct.double() / n).cpu().numpy(), n, "vmap")
