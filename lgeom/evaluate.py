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

On the CPU a batch with large activations is evaluated in slices of it
(:func:`cpu_slices`): eval mode treats every sample on its own and the sums are the same (to rounding),
while a 1,000-image batch of the MNIST CNN (50 MB of activations) ran 2.3x slower than the same batch in 13
slices of 77 (``bench/conv_layout.py``).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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


# Activations a slice of a CPU evaluation batch may take (four times the largest layer output, as in
# :func:`lgeom.multipoint.auto_chunk_size`): a working set at which the MNIST CNN, ResCNN and PreResNet-8 ran
# fastest (slices of 64-250 samples, ``bench/conv_layout.py``). 0 turns slicing off.
CPU_SLICE_BYTES = 16 * 2**20
# Fewest samples per slice: below this, per-call overhead outweighs the smaller working set.
MIN_SLICE = 32
_LARGEST_OUTPUT: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], int]] = weakref.WeakKeyDictionary()


def largest_output_per_sample(
    model: nn.Module, inputs: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
) -> int:
    """Elements of the largest layer output (leaf modules' forward hooks) for one sample of ``inputs``, in
    eval mode without autograd; remembered per model, input shape and dtype. 0 when a forward of one sample
    fails (then nothing is sliced).
    """
    key = (tuple(inputs.shape[1:]), inputs.dtype, inputs.device.type)
    known = _LARGEST_OUTPUT.setdefault(model, {})
    if key in known:
        return known[key]
    largest = [0]

    def hook(_: nn.Module, __: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel())

    handles = [mod.register_forward_hook(hook) for mod in model.modules() if not list(mod.children())]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if params is None:
                model(inputs[:1])
            else:
                functional_forward(model, params, inputs[:1], None)
    except Exception:  # noqa: BLE001 - sizing is a heuristic; an unsliced batch is always correct
        largest[0] = 0
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    known[key] = largest[0]
    return largest[0]


def cpu_slices(model: nn.Module, inputs: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> int:
    """Into how many slices to cut the CPU batch ``inputs`` so that each slice's activations stay about
    :data:`CPU_SLICE_BYTES`: as few as fit, sizes differing by at most one sample, none below
    :data:`MIN_SLICE` samples. 1 (the batch whole) on CUDA, where the batch already fits, and with
    ``CPU_SLICE_BYTES = 0``.
    """
    n = int(inputs.shape[0])
    if CPU_SLICE_BYTES <= 0 or inputs.device.type != "cpu" or n < 2 * MIN_SLICE:
        return 1
    per_sample = 4 * largest_output_per_sample(model, inputs, params) * inputs.element_size()
    return slice_count(n, per_sample, CPU_SLICE_BYTES)


def slice_count(n: int, per_sample_bytes: float, budget: float) -> int:
    """Into how many slices of (nearly) equal size to cut a batch of ``n`` samples that take
    ``per_sample_bytes`` each, so that a slice holds about ``budget`` bytes: 1 when the batch fits (or
    ``budget <= 0``), else as few as fit, and never so many that a slice falls below :data:`MIN_SLICE` samples.
    Shared by :func:`cpu_slices` and the Hessian operator's split batches.
    """
    if budget <= 0 or n * per_sample_bytes <= budget or n < 2 * MIN_SLICE:
        return 1
    cap = max(MIN_SLICE, int(budget // max(per_sample_bytes, 1)))
    return max(1, min(math.ceil(n / cap), n // MIN_SLICE))


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
            point = None if params is None and buffers is None else (params or get_params(model, detach=False))
            for xb, yb in data:
                xb, yb = inputs_to(xb, device, dtype), yb.to(device, non_blocking=True)
                pieces = cpu_slices(model, xb, point)
                for xs, ys in zip(xb.tensor_split(pieces), yb.tensor_split(pieces)) if pieces > 1 else ((xb, yb),):
                    logits = model(xs) if point is None else functional_forward(model, point, xs, buffers)
                    if logits.dtype not in (torch.float32, torch.float64):
                        logits = logits.float()
                    loss_sum += F.cross_entropy(logits, ys, reduction="sum").double()
                    correct_sum += (logits.argmax(dim=1) == ys).sum()
                    n += int(ys.shape[0])
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
