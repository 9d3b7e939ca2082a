"""Gradients of the metric contract's loss, and the effective dimensionality of training gradients.

:class:`Objective` is the loss of DESIGN.md as a function of a parameter point: mean cross-entropy over a
fixed set of batches (sums weighted by batch size, so a ragged last batch does not bias anything), the model
in eval mode with given buffers. The Hessian operators (:mod:`lgeom.hessian`) and the worst-case sharpness
ascent (:mod:`lgeom.sharpness`) are built on it.

:func:`effective_dimensionality` is the PCA of gradient vectors collected during training
(``TrainResult.grad_snapshots``): how many principal components explain a share (90 %) of their variance,
and that number's ratio to the parameter count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from lgeom._checks import expected
from lgeom.batchnorm import has_batchnorm
from lgeom.data import Batches, as_batches
from lgeom.params import (
    ParamLayout,
    Params,
    functional_forward,
    get_buffers,
    get_params,
)

__all__ = [
    "EffectiveDimensionality",
    "EvalBatchNormAsAffine",
    "Objective",
    "effective_dimensionality",
    "loss_and_gradient",
]

_BATCH_NORM_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")


class EvalBatchNormAsAffine(TorchFunctionMode):
    """Compute eval-mode ``F.batch_norm`` as the per-channel affine map it is: ``x * scale + shift`` with
    ``scale = weight / sqrt(running_var + eps)`` and ``shift = bias - running_mean * scale``.

    The value and every derivative are the same; the graph is two elementwise ops whose higher derivatives
    are cheap, where PyTorch's ``native_batch_norm_backward`` double-backward formula handles the general
    training-mode case (measured: a PreResNet-8 Hessian-vector product 2.96x -> 2.27x a gradient). Calls in
    training mode, or without running statistics, are left alone.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is F.batch_norm:
            a = {**dict(zip(_BATCH_NORM_ARGS, args)), **kwargs}
            if not a.get("training", False) and a.get("running_mean") is not None and a.get("running_var") is not None:
                x = a["input"]
                scale = torch.rsqrt(a["running_var"] + a.get("eps", 1e-5))
                if a.get("weight") is not None:
                    scale = scale * a["weight"]
                shift = -a["running_mean"] * scale
                if a.get("bias") is not None:
                    shift = shift + a["bias"]
                shape = (1, -1) + (1,) * (x.dim() - 2)
                return x * scale.reshape(shape) + shift.reshape(shape)
        return func(*args, **kwargs)


class Objective:
    """The loss of the metric contract at parameter points near ``params``, over fixed batches.

    The batches (or a map-style ``Dataset``, read in batches of :data:`lgeom.data.EVAL_BATCH_SIZE`) are
    materialised once (moved to the parameters' device, floating inputs cast to their dtype) so that every
    pass sees the same data; the loss is ``sum_b sum_i CE_i / N`` over all ``N``
    samples. The model is evaluated in eval mode through ``torch.func.functional_call`` with
    ``buffers`` (BatchNorm statistics), so it is never mutated.

    Attributes:
        model: the architecture.
        params: the parameter point (detached), in ``model.named_parameters()`` order.
        buffers: the buffers used in every forward pass (default: the model's own).
        batches: the materialised ``(inputs, targets)`` batches (empty batches dropped).
        n_samples: ``N``, the number of samples over all batches.
        layout: names/shapes of ``params``, to go between dicts and flat vectors.

    Raises:
        ValueError: ``data`` holds no samples, or ``params`` names parameters the model lacks.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Batches,
        *,
        params: Mapping[str, torch.Tensor] | None = None,
        buffers: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        own = get_params(model, detach=False)
        source = own if params is None else params
        unknown = [n for n in source if n not in own]
        if unknown:
            raise expected("params", "names of the model's trainable parameters", unknown[0])
        self.params: Params = {n: source[n].detach() for n in own if n in source}
        if not self.params:
            raise expected("params", "at least one trainable parameter", 0)
        first = next(iter(self.params.values()))
        self.device, self.dtype = first.device, first.dtype
        bufs = get_buffers(model) if buffers is None else buffers
        self.buffers: Params = {n: b.detach().to(self.device) for n, b in bufs.items()}
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        for xb, yb in as_batches(data):
            if int(yb.shape[0]) == 0:
                continue
            xb = xb.to(self.device, dtype=self.dtype) if xb.is_floating_point() else xb.to(self.device)
            self.batches.append((xb, yb.to(self.device)))
        self.n_samples = sum(int(y.shape[0]) for _, y in self.batches)
        if self.n_samples == 0:
            raise expected("data", "a non-empty dataset", "an empty one (0 samples)")
        self.layout = ParamLayout.of(self.params)
        self.has_batchnorm = has_batchnorm(model)

    @property
    def size(self) -> int:
        """Number of scalars in the parameter point."""
        return self.layout.size

    def batch_loss_sum(
        self, params: Mapping[str, torch.Tensor], inputs: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Summed (not averaged) cross-entropy of one batch at ``params`` (a 0-d tensor, differentiable)."""
        logits = functional_forward(self.model, params, inputs, self.buffers)
        return F.cross_entropy(logits, targets, reduction="sum")

    @contextlib.contextmanager
    def eval_mode(self, *, second_order: bool = True) -> Iterator[None]:
        """Put the model in eval mode for the duration (restoring its mode afterwards); BatchNorm layers are
        computed as their affine maps (:class:`EvalBatchNormAsAffine`).

        With ``second_order`` (the default: the Hessian operators differentiate twice inside it), attention
        through ``F.scaled_dot_product_attention`` (``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``,
        hand-written attention calling it) runs on its math backend: the fused kernels (flash attention on the
        CPU, flash and memory-efficient on CUDA) have no forward-mode derivative and no double backward, while
        the math backend is plain differentiable operations. Values agree to rounding. :meth:`loss` and
        :meth:`loss_and_grad` differentiate at most once and leave the choice of kernel to torch.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            with (
                EvalBatchNormAsAffine() if self.has_batchnorm else contextlib.nullcontext(),
                sdpa_kernel(SDPBackend.MATH) if second_order else contextlib.nullcontext(),
            ):
                yield
        finally:
            self.model.train(was_training)

    def loss(self, params: Mapping[str, torch.Tensor] | None = None) -> float:
        """Mean cross-entropy at ``params`` (default: the objective's point)."""
        p = self.params if params is None else params
        total = 0.0
        with self.eval_mode(second_order=False), torch.no_grad():
            for xb, yb in self.batches:
                total += float(self.batch_loss_sum(p, xb, yb))
        return total / self.n_samples

    def loss_and_grad(self, params: Mapping[str, torch.Tensor] | None = None) -> tuple[float, Params]:
        """Mean cross-entropy at ``params`` and its gradient (a dict shaped like ``params``, detached)."""
        base = self.params if params is None else params
        leaves = {n: base[n].detach().requires_grad_(True) for n in self.layout.names}
        grads = {n: torch.zeros_like(v) for n, v in leaves.items()}
        total = 0.0
        with self.eval_mode(second_order=False):
            for xb, yb in self.batches:
                loss = self.batch_loss_sum(leaves, xb, yb)
                parts = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
                for (n, _), g in zip(leaves.items(), parts):
                    if g is not None:
                        grads[n] += g
                total += float(loss.detach())
        return total / self.n_samples, {n: g / self.n_samples for n, g in grads.items()}


def loss_and_gradient(
    model: nn.Module,
    data: Batches,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
) -> tuple[float, torch.Tensor]:
    """Mean cross-entropy over ``data`` and its gradient w.r.t. all trainable parameters, in eval mode.

    Args:
        model: the architecture (not mutated).
        data: iterable of ``(inputs, targets)`` batches or a map-style ``Dataset``; sums are weighted by
            batch size.
        params: the parameter point (default: the model's own).
        buffers: BatchNorm statistics to use (default: the model's own; apply the BN policy first).

    Returns:
        ``(loss, gradient)``: the loss in nats and the gradient as one flat vector in
        ``model.named_parameters()`` order, on the parameters' device.

    Raises:
        ValueError: empty data.
    """
    obj = Objective(model, data, params=params, buffers=buffers)
    loss, grads = obj.loss_and_grad()
    return loss, obj.layout.flatten(grads)


# --- effective dimensionality ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EffectiveDimensionality:
    """PCA of gradient vectors.

    Attributes:
        n_components: principal components needed to explain ``threshold`` of the variance.
        ratio: ``n_components / n_params``.
        threshold: the explained-variance share asked for (0-1).
        explained_variance_ratio: every component's share of the variance, descending (sums to 1).
        n_params: dimension of the gradient vectors.
        n_samples: number of gradient vectors.
    """

    n_components: int
    ratio: float
    threshold: float
    explained_variance_ratio: np.ndarray
    n_params: int
    n_samples: int

    @property
    def cumulative(self) -> np.ndarray:
        """Cumulative explained-variance share of the first 1, 2, ... components."""
        return np.cumsum(self.explained_variance_ratio)


def effective_dimensionality(
    gradients: Sequence[torch.Tensor] | torch.Tensor,
    *,
    threshold: float = 0.9,
    center: bool = True,
) -> EffectiveDimensionality:
    """Number of principal components of training gradients that explain ``threshold`` of their variance.

    The PCA is computed from the ``n x n`` Gram matrix of the (centred) gradients in float64, so memory is
    ``O(n * P)`` for ``n`` vectors of ``P`` parameters. At most ``n - 1`` components (``n`` without
    centring) carry variance, so collect more gradients than the dimension you expect to resolve.

    Args:
        gradients: flat gradient vectors (``TrainResult.grad_snapshots``), a list of 1-D tensors or an
            ``(n, P)`` tensor.
        threshold: explained-variance share in (0, 1].
        center: subtract the mean gradient first (standard PCA).

    Returns:
        :class:`EffectiveDimensionality`.

    Raises:
        ValueError: fewer than two vectors, vectors of different lengths, a threshold outside (0, 1], or
            gradients without variance.
    """
    if not (isinstance(threshold, (int, float)) and 0.0 < float(threshold) <= 1.0):
        raise expected("threshold", "a number in (0, 1]", threshold)
    if isinstance(gradients, torch.Tensor):
        if gradients.dim() != 2:
            raise expected("gradients", "an (n, P) tensor or a list of 1-D tensors", tuple(gradients.shape))
        g = gradients.detach().to("cpu", torch.float64)
    else:
        rows = [t.detach().reshape(-1).to("cpu", torch.float64) for t in gradients]
        if len({r.numel() for r in rows}) > 1:
            raise expected("gradients", "vectors of equal length", sorted({r.numel() for r in rows}))
        g = torch.stack(rows) if rows else torch.empty(0, 0, dtype=torch.float64)
    n, p = g.shape
    if n < 2:
        raise expected("gradients", "at least 2 gradient vectors (set train.grad_snapshot_every > 0)", n)
    if center:
        g = g - g.mean(dim=0, keepdim=True)
    variances = torch.linalg.eigvalsh(g @ g.T).flip(0).clamp_min(0.0).numpy()
    total = float(variances.sum())
    if total <= 0.0:
        raise expected("gradients", "vectors that vary (PCA of identical vectors is undefined)", "no variance")
    share = variances / total
    # The tiny slack keeps a share that reaches the threshold up to rounding from needing one more component.
    k = int(np.searchsorted(np.cumsum(share), float(threshold) - 1e-12) + 1)
    k = min(k, len(share))
    return EffectiveDimensionality(k, k / p, float(threshold), share, p, n)
