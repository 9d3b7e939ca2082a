"""Loss and accuracy of a model at one parameter point.

Definitions (DESIGN.md, the metric contract):

* **Loss** is the mean cross-entropy over the given data with no weight-decay term; batched sums are
  weighted by batch size, so a smaller last batch does not bias the result:
  ``L = sum_b sum_{i in b} CE_i / N``.
* **Accuracy** is in percent (0-100).
* **BN policy**: the statistics a point is evaluated with are decided by :func:`lgeom.batchnorm.bn_statistics`
  (trained endpoints keep theirs, every other point recomputes them on fixed training batches).

Many points at once (paths, grids): :mod:`lgeom.multipoint`. Wherever ``data`` (or ``bn_batches``) is
expected, a map-style torch ``Dataset`` is accepted too and read in batches of
:data:`lgeom.data.EVAL_BATCH_SIZE` (:func:`lgeom.data.as_batches`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lgeom._checks import expected
from lgeom.batchnorm import bn_statistics
from lgeom.data import Batches, as_batches
from lgeom.params import (
    functional_forward,
    get_params,
    inputs_to,
    point_device,
    point_dtype,
)


@dataclass(frozen=True)
class EvalResult:
    """Mean cross-entropy ``loss``, accuracy ``acc`` in percent, and the number of samples ``n``."""

    loss: float
    acc: float
    n: int


def evaluate(
    model: nn.Module,
    data: Batches,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
) -> EvalResult:
    """Loss and accuracy of ``model`` in eval mode at ``params`` (default: its own) over ``data``.

    Args:
        model: the architecture; it is not mutated (its train/eval mode is restored).
        data: iterable of ``(inputs, targets)`` batches, or a map-style ``Dataset`` (read in batches of
            :data:`~lgeom.data.EVAL_BATCH_SIZE`); moved to the parameters' device.
        params: parameter point (``None``: the model's current parameters).
        buffers: BatchNorm statistics to use (``None``: the model's own).

    Returns:
        :class:`EvalResult` with sample-weighted mean loss and accuracy in percent.

    Raises:
        ValueError: when ``data`` holds no samples.
    """
    data = as_batches(data)
    device = point_device(model, params)
    dtype = point_dtype(model, params)
    was_training = model.training
    model.eval()
    # Sums stay on the device: reading them back per batch would force a sync on every batch.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct_sum = torch.zeros((), dtype=torch.long, device=device)
    n = 0
    try:
        with torch.no_grad():
            for xb, yb in data:
                xb, yb = inputs_to(xb, device, dtype), yb.to(device, non_blocking=True)
                if params is None and buffers is None:
                    logits = model(xb)
                else:
                    logits = functional_forward(model, params or get_params(model, detach=False), xb, buffers)
                if logits.dtype not in (torch.float32, torch.float64):
                    logits = logits.float()
                loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
                correct_sum += (logits.argmax(dim=1) == yb).sum()
                n += int(yb.shape[0])
    finally:
        model.train(was_training)
    if n == 0:
        raise expected("data", "a non-empty dataset", "an empty one (0 samples)")
    total_loss, correct = float(loss_sum), int(correct_sum)
    return EvalResult(loss=total_loss / n, acc=100.0 * correct / n, n=n)


def evaluate_point(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    splits: Mapping[str, Batches],
    *,
    bn_batches: Batches | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
    endpoint: bool = False,
) -> dict[str, EvalResult]:
    """Evaluate one parameter point on several splits under the BN policy.

    Args:
        model: the architecture.
        params: the parameter point.
        splits: split name -> batches (or a map-style ``Dataset``), e.g. ``{"train": ..., "test": ...}``.
        bn_batches: fixed training batches for the BatchNorm recompute (needed for BN models unless
            ``endpoint``).
        buffers: the trained running statistics of an endpoint (used as-is when ``endpoint``).
        endpoint: whether ``params`` is a trained endpoint whose ``buffers`` are kept.

    Returns:
        Split name -> :class:`EvalResult`.

    Raises:
        ValueError: a BN model at a non-endpoint point without ``bn_batches``.
    """
    splits = {name: as_batches(data) for name, data in splits.items()}
    use_buffers = bn_statistics(model, params, endpoint=endpoint, buffers=buffers, bn_batches=bn_batches).buffers
    return {name: evaluate(model, data, params=params, buffers=use_buffers) for name, data in splits.items()}
