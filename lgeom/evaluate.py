"""Loss and accuracy at parameter points, and the one place the BatchNorm policy lives.

Definitions (DESIGN.md, the metric contract):

* **Loss** is the mean cross-entropy over the given data with no weight-decay term; batched sums are
  weighted by batch size, so a smaller last batch does not bias the result.
* **Accuracy** is in percent (0-100).
* **BN policy**: at any parameter point that is not a trained endpoint, BatchNorm running statistics are
  recomputed on a fixed subset of training batches in train mode (cumulative average over the batches),
  then the point is evaluated in eval mode. Trained endpoints keep the running statistics they were
  trained with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lgeom._checks import check_ts, expected
from lgeom.params import Params, functional_forward, get_buffers, get_params
from lgeom.table import Table

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
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
        data: iterable of ``(inputs, targets)`` batches; moved to the parameters' device.
        params: parameter point (``None``: the model's current parameters).
        buffers: BatchNorm statistics to use (``None``: the model's own).

    Returns:
        :class:`EvalResult` with sample-weighted mean loss and accuracy in percent.

    Raises:
        ValueError: when ``data`` holds no samples.
    """
    device = _param_device(model, params)
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    try:
        with torch.no_grad():
            for xb, yb in data:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                if params is None and buffers is None:
                    logits = model(xb)
                else:
                    logits = functional_forward(model, params or get_params(model, detach=False), xb, buffers)
                total_loss += float(F.cross_entropy(logits.float(), yb, reduction="sum"))
                correct += int((logits.argmax(dim=1) == yb).sum())
                n += int(yb.shape[0])
    finally:
        model.train(was_training)
    if n == 0:
        raise expected("data", "a non-empty dataset", "an empty one (0 samples)")
    return EvalResult(loss=total_loss / n, acc=100.0 * correct / n, n=n)


def recompute_bn_stats(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    bn_batches: Batches,
    *,
    buffers: Mapping[str, torch.Tensor] | None = None,
) -> Params:
    """BatchNorm running statistics of ``model`` at ``params``, recomputed on ``bn_batches``.

    Running means/variances are reset and accumulated as a cumulative average over the batches in train
    mode (as ``torch.optim.swa_utils.update_bn`` does), without touching the module's own buffers.

    Returns:
        A fresh buffer dict (keys as ``model.named_buffers()``); for a model without BatchNorm, a copy of
        ``buffers`` or of the model's buffers.

    Raises:
        ValueError: when ``bn_batches`` is empty for a model with BatchNorm.
    """
    new = {n: b.detach().clone() for n, b in (buffers if buffers is not None else get_buffers(model)).items()}
    if not has_batchnorm(model):
        return new
    device = _param_device(model, params)
    bns = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = {name: m.momentum for name, m in bns}
    for name, m in bns:
        prefix = f"{name}." if name else ""
        if m.running_mean is not None:
            new[prefix + "running_mean"].zero_()
            new[prefix + "running_var"].fill_(1.0)
            new[prefix + "num_batches_tracked"].zero_()
        m.momentum = None
    was_training = model.training
    model.train()
    seen = 0
    try:
        with torch.no_grad():
            for xb, _ in bn_batches:
                functional_forward(model, params, xb.to(device, non_blocking=True), new)
                seen += 1
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
        splits: split name -> batches, e.g. ``{"train": ..., "test": ...}``.
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
        train: training batches to evaluate on (unaugmented), or ``None`` to skip.
        test: test batches, or ``None`` to skip.
        bn_batches: fixed training batches for the BatchNorm recompute (BN models).
        endpoint_buffers: the trained running statistics of A and B; with them, t = 0 and t = 1 are
            evaluated as the trained endpoints (no recompute), as the BN policy says.
        progress: called after each point with ``{"index", "t", <columns>}``.

    Returns:
        A :class:`~lgeom.table.Table` with column ``t`` and ``train_loss``, ``train_acc``, ``test_loss``,
        ``test_acc`` for the splits given (accuracy in percent).

    Raises:
        ValueError: t outside [0, 1], no split given, or an empty dataset.
    """
    t_values = check_ts(np.linspace(0.0, 1.0, 61) if ts is None else ts)
    splits = {name: data for name, data in (("train", train), ("test", test)) if data is not None}
    if not splits:
        raise expected("splits", "train and/or test batches", None)
    rows: list[dict[str, float]] = []
    for i, t in enumerate(t_values.tolist()):
        params = path.point(t)
        params = {n: p.detach() for n, p in params.items()}
        endpoint_bufs = None
        if endpoint_buffers is not None and t in (0.0, 1.0):
            endpoint_bufs = endpoint_buffers[0] if t == 0.0 else endpoint_buffers[1]
        results = evaluate_point(
            model,
            params,
            splits,
            bn_batches=bn_batches,
            buffers=endpoint_bufs,
            endpoint=endpoint_bufs is not None,
        )
        row = {"t": t}
        for split, res in results.items():
            row[f"{split}_loss"] = res.loss
            row[f"{split}_acc"] = res.acc
        rows.append(row)
        if progress is not None:
            progress({"index": i, **row})
    return Table.from_rows(rows)
