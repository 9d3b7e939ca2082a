"""Loss and accuracy at parameter points, and the one place the BatchNorm policy lives.

Definitions (DESIGN.md, the metric contract):

* **Loss** is the mean cross-entropy over the given data with no weight-decay term; batched sums are
  weighted by batch size, so a smaller last batch does not bias the result.
* **Accuracy** is in percent (0-100).
* **BN policy**: at any parameter point that is not a trained endpoint, BatchNorm running statistics are
  recomputed on a fixed subset of training batches in train mode (each batch weighted by its size, so a
  smaller last batch does not bias them), then the point is evaluated in eval mode. Trained endpoints keep the running statistics they were
  trained with.

Wherever ``data`` (or ``bn_batches``) is expected, a map-style torch ``Dataset`` is accepted too and read in
batches of :data:`lgeom.data.EVAL_BATCH_SIZE` (:func:`lgeom.data.as_batches`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lgeom import names
from lgeom._checks import check_ts, expected
from lgeom.data import as_batches
from lgeom.params import Params, functional_forward, get_buffers, get_params
from lgeom.table import Table

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
"""``(inputs, targets)`` batches; the functions below also accept a map-style ``Dataset`` in their place."""
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class EvalResult:
    """Mean cross-entropy ``loss``, accuracy ``acc`` in percent, and the number of samples ``n``."""

    loss: float
    acc: float
    n: int


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` contains BatchNorm layers (whose statistics the BN policy recomputes)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _param_device(model: nn.Module, params: Mapping[str, torch.Tensor] | None) -> torch.device:
    if params:
        return next(iter(params.values())).device
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _param_dtype(model: nn.Module, params: Mapping[str, torch.Tensor] | None) -> torch.dtype:
    if params:
        return next(iter(params.values())).dtype
    for p in model.parameters():
        return p.dtype
    return torch.get_default_dtype()


def _to_device(xb: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Move a batch of inputs to ``device``; floating inputs take the parameters' dtype (float64 checks)."""
    xb = xb.to(device, non_blocking=True)
    return xb.to(dtype) if xb.is_floating_point() and dtype.is_floating_point and xb.dtype != dtype else xb


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
    device = _param_device(model, params)
    dtype = _param_dtype(model, params)
    was_training = model.training
    model.eval()
    # Sums stay on the device: reading them back per batch would force a sync on every batch.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct_sum = torch.zeros((), dtype=torch.long, device=device)
    n = 0
    try:
        with torch.no_grad():
            for xb, yb in data:
                xb, yb = _to_device(xb, device, dtype), yb.to(device, non_blocking=True)
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

    Every recompute of running statistics (here and the batched twin in :mod:`lgeom.grid`) should use it, so
    that all points are evaluated under the same BN policy.
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
    device = _param_device(model, params)
    dtype = _param_dtype(model, params)
    source = buffers if buffers is not None else get_buffers(model)
    new = {
        n: b.detach().to(device, dtype=dtype if b.is_floating_point() else b.dtype, copy=True) for n, b in source.items()
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
                functional_forward(model, params, _to_device(xb, device, dtype), new)
                seen += size
    finally:
        for name, m in bns:
            m.momentum = momenta[name]
        model.train(was_training)
    if seen == 0:
        raise expected("bn_batches", "at least one batch to recompute BatchNorm statistics", "none")
    return new


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
    use_buffers = buffers
    splits = {name: as_batches(data) for name, data in splits.items()}
    if has_batchnorm(model) and not endpoint:
        if bn_batches is None:
            raise expected("bn_batches", "training batches to recompute BatchNorm statistics (BN policy)", None)
        use_buffers = recompute_bn_stats(model, params, bn_batches, buffers=buffers)
    return {name: evaluate(model, data, params=params, buffers=use_buffers) for name, data in splits.items()}


def evaluate_path(
    model: nn.Module,
    path: Any,
    ts: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    train: Batches | None = None,
    test: Batches | None = None,
    *,
    bn_batches: Batches | None = None,
    endpoint_buffers: tuple[Mapping[str, torch.Tensor] | None, Mapping[str, torch.Tensor] | None] | None = None,
    progress: Progress | None = None,
) -> Table:
    """Train/test loss and accuracy along a path ``phi(t)``.

    Args:
        model: the architecture the path's parameters belong to.
        path: any object with ``point(t) -> dict of parameters`` (``Line``, ``Bezier``, ``PolyChain``).
        ts: values of t in [0, 1] (default: 61 evenly spaced points).
        train: training batches to evaluate on (unaugmented; batches or a map-style ``Dataset``), or ``None``
            to skip.
        test: test batches (or a ``Dataset``), or ``None`` to skip.
        bn_batches: fixed training batches (or a ``Dataset``) for the BatchNorm recompute (BN models).
        endpoint_buffers: the trained running statistics of A and B; with them, t = 0 and t = 1 are
            evaluated as the trained endpoints (no recompute), as the BN policy says.
        progress: called for each point, in order, with ``{"index", "t", <columns>}`` once its values are
            known (points are evaluated in batched chunks, see :mod:`lgeom.grid`).

    Returns:
        A :class:`~lgeom.table.Table` with column ``t`` and ``train_loss``, ``train_acc``, ``test_loss``,
        ``test_acc`` for the splits given (accuracy in percent).

    Raises:
        ValueError: t outside [0, 1], no split given, or an empty dataset.
    """
    t_values = check_ts(np.linspace(0.0, 1.0, 61) if ts is None else ts).tolist()
    splits = {name: as_batches(data) for name, data in (("train", train), ("test", test)) if data is not None}
    if not splits:
        raise expected("splits", "train and/or test batches", None)
    # One-shot iterators would be exhausted after the first point.
    splits = {name: list(data) if isinstance(data, Iterator) else data for name, data in splits.items()}
    if bn_batches is not None:
        bn_batches = as_batches(bn_batches)
    if isinstance(bn_batches, Iterator):
        bn_batches = list(bn_batches)

    # Trained endpoints of a BN model keep their own statistics (the BN policy); every other point is
    # evaluated in chunks by the batched engine, which recomputes statistics per point.
    endpoint_rows: dict[int, dict[str, EvalResult]] = {}
    if endpoint_buffers is not None and has_batchnorm(model):
        for i, t in enumerate(t_values):
            bufs = endpoint_buffers[0] if t == 0.0 else endpoint_buffers[1] if t == 1.0 else None
            if bufs is not None:
                params = {n: p.detach() for n, p in path.point(t).items()}
                endpoint_rows[i] = evaluate_point(model, params, splits, buffers=bufs, endpoint=True)
    rest = [i for i in range(len(t_values)) if i not in endpoint_rows]
    batched: dict[str, Any] = {}
    if rest:
        from lgeom.grid import evaluate_chunks, stack_points  # grid builds on this module

        def chunk(lo: int, hi: int) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                return stack_points([path.point(t_values[i]) for i in rest[lo:hi]])

        batched = evaluate_chunks(model, len(rest), chunk, splits, bn_batches=bn_batches)
    position = {i: j for j, i in enumerate(rest)}
    rows: list[dict[str, float]] = []
    for i, t in enumerate(t_values):
        row = {"t": t}
        for split in splits:
            if i in endpoint_rows:
                row[names.split_column(split, "loss")] = endpoint_rows[i][split].loss
                row[names.split_column(split, "acc")] = endpoint_rows[i][split].acc
            else:
                row[names.split_column(split, "loss")] = float(batched[split].loss[position[i]])
                row[names.split_column(split, "acc")] = float(batched[split].acc[position[i]])
        rows.append(row)
        if progress is not None:
            progress({"index": i, **row})
    return Table.from_rows(rows)
