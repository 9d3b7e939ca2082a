"""The BatchNorm policy: which running statistics a parameter point is evaluated with, and their recompute.

DESIGN.md (the metric contract): a trained endpoint keeps the running statistics it was trained with; at any
other parameter point (path points, grid points, perturbed points) BatchNorm running statistics are
**recomputed** on a fixed subset of training batches in train mode, each batch weighted by its size, and the
point is then evaluated in eval mode. A model without BatchNorm has nothing to decide.

:func:`bn_statistics` is the one place that decision is taken; every caller in lgeom (single-point and
batched evaluation, the Hessian operator, sharpness, probes) goes through it. :func:`recompute_bn_stats`
recomputes one point's statistics, :func:`recompute_bn_stats_stacked` those of a chunk of stacked points at
once (the batched twin, same weighting). Statistics are never shared between parameter points, not even
neighbouring grid points of a plane: only the first BatchNorm layer's would be exact (see
:mod:`lgeom.surfaces.three_point_plane`).

With running mean ``mu_b`` of a batch of ``b`` samples and ``seen`` samples before it, the momentum
``b / (seen + b)`` makes the running mean the mean over all samples:

>>> bn_batch_momentum(0, 64), bn_batch_momentum(64, 36)
(1.0, 0.36)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

from lgeom._checks import expected
from lgeom.data import Batches, as_batches
from lgeom.params import (
    Params,
    functional_forward,
    get_buffers,
    has_tied_tensors,
    inputs_to,
    point_device,
    point_dtype,
)

__all__ = [
    "BNStatistics",
    "bn_batch_momentum",
    "bn_statistics",
    "has_batchnorm",
    "recompute_bn_stats",
    "recompute_bn_stats_stacked",
    "reset_bn_statistics",
]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` contains BatchNorm layers (whose statistics the BN policy recomputes)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@dataclass(frozen=True)
class BNStatistics:
    """The buffers a parameter point is evaluated with, and where their BatchNorm statistics come from.

    Attributes:
        buffers: the buffer dict to evaluate with; ``None`` means the model's own buffers.
        source: ``"recomputed"`` (on fixed batches at the point), ``"given"`` (a trained endpoint's buffers,
            as passed), ``"model"`` (a trained endpoint with the model's own statistics), or ``None`` for a
            model without BatchNorm.
    """

    buffers: Params | None
    source: str | None


def bn_statistics(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    *,
    endpoint: bool,
    buffers: Mapping[str, torch.Tensor] | None = None,
    bn_batches: Batches | None = None,
    stacked: bool = False,
) -> BNStatistics:
    """Decide, under the BN policy, the BatchNorm statistics ``model`` is evaluated with at ``params``.

    * a model without BatchNorm: ``buffers`` as given (``None``: the model's own), source ``None``;
    * a trained ``endpoint``: its trained ``buffers`` as given (``"given"``), or the model's own statistics
      when ``buffers`` is ``None`` (``"model"``);
    * any other point: statistics recomputed at ``params`` on ``bn_batches`` (``"recomputed"``); the buffers
      that are not BatchNorm statistics come from ``buffers`` (default: the model's own).

    Args:
        model: the architecture (not mutated).
        params: the parameter point; with ``stacked``, a chunk of points stacked along a leading dimension.
        endpoint: whether ``params`` is a trained endpoint whose statistics are kept.
        buffers: the endpoint's trained buffers, or the source of the non-BatchNorm buffers elsewhere.
        bn_batches: fixed training batches (or a map-style ``Dataset``) for the recompute.
        stacked: ``params`` holds stacked points; recomputed statistics are then stacked alike
            (:func:`recompute_bn_stats_stacked`, which needs ``buffers`` on the points' device and dtype).

    Returns:
        :class:`BNStatistics`.

    Raises:
        ValueError: a BatchNorm model at a point that is not an endpoint without ``bn_batches``, or with
            ``bn_batches`` that hold no samples.
    """
    given = None if buffers is None else dict(buffers)
    if not has_batchnorm(model):
        return BNStatistics(given, None)
    if endpoint:
        return BNStatistics(given, "given" if given is not None else "model")
    if bn_batches is None:
        raise expected("bn_batches", "training batches to recompute BatchNorm statistics (BN policy)", None)
    if stacked:
        source = given if given is not None else get_buffers(model)
        return BNStatistics(
            recompute_bn_stats_stacked(model, params, list(as_batches(bn_batches)), source), "recomputed"
        )
    return BNStatistics(recompute_bn_stats(model, params, bn_batches, buffers=buffers), "recomputed")


def reset_bn_statistics(model: nn.Module, buffers: Mapping[str, torch.Tensor]) -> list[tuple[str, nn.Module]]:
    """Reset, in place, the running statistics in ``buffers`` of every BatchNorm layer of ``model`` (mean 0,
    variance 1, batch count 0; tensors may carry a leading dimension of stacked points).

    Returns:
        ``(name, module)`` of every BatchNorm layer, for the caller to set momenta on.
    """
    bns = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for name, m in bns:
        prefix = f"{name}." if name else ""
        if m.running_mean is not None:
            buffers[prefix + "running_mean"].zero_()
            buffers[prefix + "running_var"].fill_(1.0)
            buffers[prefix + "num_batches_tracked"].zero_()
    return bns


def bn_batch_momentum(seen: int, size: int) -> float:
    """BatchNorm momentum that folds a batch of ``size`` samples into statistics averaged over ``seen``
    samples so far with weight proportional to its size: ``size / (seen + size)`` (1 for the first batch).

    Both recomputes (:func:`recompute_bn_stats` and its stacked twin) use it, so that every point is
    evaluated under the same BN policy.
    """
    return size / (seen + size)


def recompute_bn_stats(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    bn_batches: Batches,
    *,
    buffers: Mapping[str, torch.Tensor] | None = None,
) -> Params:
    """BatchNorm running statistics of ``model`` at ``params``, recomputed on ``bn_batches``.

    Running means/variances are reset and accumulated in train mode over the batches, each weighted by its
    number of samples (before a batch of ``b`` samples, with ``seen`` samples before it, every BatchNorm
    layer's momentum is ``b / (seen + b)``; the modules' momenta are restored afterwards and their own
    buffers are never touched). So:

    * ``running_mean`` is the mean over all samples (per channel), exactly the statistic of one batch
      holding them all: batches of 64 and 36 give the mean of the 100;
    * ``running_var`` is the sample-size weighted mean of the per-batch unbiased variances,
      ``sum_i (b_i / N) var_i``: the within-batch variance the layers normalise by in train mode. It equals the
      one-batch variance of all ``N`` samples only up to the spread of the batch means (and the ``b_i - 1``
      vs ``N - 1`` denominators).

    ``torch.optim.swa_utils.update_bn`` (``momentum=None``) instead weights every batch equally, which a
    small ragged last batch would bias.

    Args:
        model: the architecture (not mutated; its momenta and mode are restored).
        params: the parameter point.
        bn_batches: ``(inputs, targets)`` batches (targets unused) or a map-style ``Dataset``.
        buffers: source of the buffers that are not BatchNorm statistics (default: the model's own).

    Returns:
        A fresh buffer dict (keys as ``model.named_buffers()``); for a model without BatchNorm, a copy of
        ``buffers`` or of the model's buffers.

    Raises:
        ValueError: when ``bn_batches`` is empty for a model with BatchNorm.
    """
    bn_batches = as_batches(bn_batches)
    device = point_device(model, params)
    dtype = point_dtype(model, params)
    source = buffers if buffers is not None else get_buffers(model)
    new = {
        n: b.detach().to(device, dtype=dtype if b.is_floating_point() else b.dtype, copy=True)
        for n, b in source.items()
    }
    if not has_batchnorm(model):
        return new
    bns = reset_bn_statistics(model, new)
    momenta = {name: m.momentum for name, m in bns}
    was_training = model.training
    model.train()
    seen = 0
    try:
        with torch.no_grad():
            for xb, _ in bn_batches:
                size = int(xb.shape[0])
                if size == 0:
                    continue
                for _, m in bns:
                    m.momentum = bn_batch_momentum(seen, size)
                functional_forward(model, params, inputs_to(xb, device, dtype), new)
                seen += size
    finally:
        for name, m in bns:
            m.momentum = momenta[name]
        model.train(was_training)
    if seen == 0:
        raise expected("bn_batches", "at least one batch to recompute BatchNorm statistics", "none")
    return new


def recompute_bn_stats_stacked(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    bn_batches: list[tuple[torch.Tensor, torch.Tensor]],
    buffers: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Per-point BatchNorm statistics of a chunk of stacked points, the batched twin of :func:`recompute_bn_stats`.

    One ``torch.func.vmap`` forward per batch serves every point. Batches are averaged weighted by their
    sizes, as there: each BN layer's momentum is set to :func:`bn_batch_momentum` before every batch (a
    Python number, as ``vmap`` cannot read a per-point batch counter). The momenta are restored afterwards;
    the model is left in train mode for the caller (who evaluates next) to restore, and the caller holds
    ``torch.no_grad()``.

    Args:
        model: the architecture.
        params: stacked parameter points (leading dimension = points).
        bn_batches: materialised ``(inputs, targets)`` batches (targets unused).
        buffers: the model's buffers on the points' device and dtype (one copy, not stacked).

    Returns:
        Stacked buffers (leading dimension = points).
    """
    first = next(iter(params.values()))
    device, dtype, m = first.device, first.dtype, first.shape[0]
    stacked = {n: b.unsqueeze(0).expand(m, *b.shape).clone() for n, b in buffers.items()}
    bns = reset_bn_statistics(model, stacked)
    momenta = {name: mod.momentum for name, mod in bns}
    tie = has_tied_tensors(model)
    forward = vmap(lambda p, b, x: functional_call(model, {**p, **b}, (x,), tie_weights=tie), in_dims=(0, 0, None))
    model.train()
    try:
        seen = 0
        for xb, _ in bn_batches:
            for _, mod in bns:
                mod.momentum = bn_batch_momentum(seen, len(xb))
            forward(params, stacked, inputs_to(xb, device, dtype))
            seen += len(xb)
    finally:
        for name, mod in bns:
            mod.momentum = momenta[name]
    return stacked
