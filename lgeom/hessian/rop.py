"""Exact Hessian-vector products of lgeom's plain MLP written out by hand (Pearlmutter's R-operator), with no
autograd graph: the ``"rop"`` engine of :class:`~lgeom.hessian.operator.HessianOperator`.

For :class:`lgeom.models.mlp.MLP` (linear layers, one elementwise activation among ReLU, tanh and exact GELU, a
linear head) and the summed cross-entropy of integer labels, one pass over a chunk of ``n`` samples keeps

* ``h_l``: the input of layer ``l`` (``h_0`` the flattened inputs),
* ``s_l = act'(z_l)`` and, unless the activation is piecewise linear, ``c_l = (delta_{l+1} W_{l+1}) act''(z_l)``,
* ``delta_l = dL/dz_l`` (``delta_L = softmax(z_L) - onehot(y)`` at the head),
* ``p = softmax(z_L)``,

and a product ``H v`` for a direction ``v = (V_l, b_l)`` is then the R-forward pass
``Rz_l = Rh_{l-1} W_l^T + h_{l-1} V_l^T + b_l``, ``Rh_l = s_l Rz_l``, the head's
``R delta_L = p (Rz_L - <p, Rz_L>)`` and the R-backward pass
``(H v)_{W_l} = R delta_l^T h_{l-1} + delta_l^T Rh_{l-1}``, ``(H v)_{b_l} = sum_i R delta_l``,
``R delta_{l-1} = (R delta_l W_l + delta_l V_l) s_{l-1} + c_{l-1} Rz_{l-1}``: about twice a gradient's matrix
products, as autograd's double backward, but without its per-call overhead and the graph it must build and
keep. ReLU's derivative is taken as autograd takes it (``act'(0) = 0``, ``act'' = 0``), so the products equal
the other engines' to rounding (tested against the dense Hessian in float64).

On the CPU of ``bench/hessian.py`` (MLP 2-32-32-2, 1000 samples, one thread) a product costs 0.4 ms against the
cached engine's 0.7 ms, and setting up a point 0.4 ms against the 1.8 ms graph build; on a 4 x 250 MLP at 512
samples, where the products are arithmetic, 10.0 ms against 11.8 ms (``bench/RESULTS.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lgeom.params import ParamLayout

__all__ = ["RopChunk", "rop_bytes_per_sample", "rop_unsupported"]

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _activation_kind(module: nn.Module) -> str | None:
    if type(module) is nn.ReLU:
        return "relu"
    if type(module) is nn.Tanh:
        return "tanh"
    if type(module) is nn.GELU and module.approximate == "none":
        return "gelu"
    return None


def rop_unsupported(
    model: nn.Module, layout: ParamLayout, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> str | None:
    """Why the ``"rop"`` engine cannot take ``model`` with trainable parameters ``layout`` on ``batches``, or
    ``None`` when it can: the model must be exactly :class:`lgeom.models.mlp.MLP` (not a subclass, which may
    change ``forward``), with a ReLU, tanh or exact GELU activation, every parameter trainable and no hooks, and
    the targets 1-D integer class indices of its head (what the summed cross-entropy is written out for).
    """
    from lgeom.models.mlp import MLP

    if type(model) is not MLP:
        return f"lgeom's plain MLP (got {type(model).__name__})"
    if any(type(layer) is not nn.Linear for layer in [*model.hidden, model.head]):
        return "an MLP of plain nn.Linear layers"
    if _activation_kind(model.act) is None:
        return f"an MLP with a relu, tanh or exact gelu activation (got {model.act!r})"
    names = [
        f"{prefix}.{kind}"
        for prefix in [f"hidden.{i}" for i in range(len(model.hidden))] + ["head"]
        for kind in ("weight", "bias")
    ]
    if list(layout.names) != names:
        return "an MLP whose weights and biases are all trainable"
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return "an MLP without forward hooks"
    classes = int(model.head.out_features)
    for _, targets in batches:
        if targets.dtype.is_floating_point or targets.dtype == torch.bool or targets.dim() != 1:
            return f"1-D integer class indices as targets (got {targets.dtype} of shape {tuple(targets.shape)})"
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= classes):
            return f"targets in [0, {classes}) (got values {int(targets.min())}..{int(targets.max())})"
    return None


def rop_bytes_per_sample(model: nn.Module, dtype: torch.dtype) -> int:
    """Bytes one sample adds to a :class:`RopChunk` of ``model`` (a supported MLP) in ``dtype``."""
    hidden = [int(layer.out_features) for layer in model.hidden]
    second = 0 if _activation_kind(model.act) == "relu" else 1
    first_in = int(model.hidden[0].in_features) if hidden else int(model.head.in_features)
    classes = int(model.head.out_features)
    per = first_in + sum(hidden) * (3 + second) + 2 * classes
    return per * torch.empty((), dtype=dtype).element_size()


class RopChunk:
    """One chunk's cached quantities at a parameter point, and exact ``H v`` (summed over the chunk's samples)
    for rows ``v`` of flat parameter vectors.

    Args:
        model: a supported MLP (:func:`rop_unsupported` returns ``None``); only its structure is read.
        params: the point, keyed like ``model.named_parameters()``.
        layout: the flat layout of ``params`` (products come out in it).
        inputs, targets: the chunk; targets integer class indices in ``[0, classes)`` (checked by
            :func:`rop_unsupported`).
    """

    def __init__(
        self,
        model: nn.Module,
        params: dict[str, torch.Tensor],
        layout: ParamLayout,
        inputs: torch.Tensor,
        targets: torch.Tensor,
    ) -> None:
        depth = len(model.hidden)
        self.kind = _activation_kind(model.act)
        prefixes = [f"hidden.{i}" for i in range(depth)] + ["head"]
        self.weights = [params[f"{p}.weight"].detach() for p in prefixes]
        biases = [params[f"{p}.bias"].detach() for p in prefixes]
        offsets, start = {}, 0
        for name, numel in zip(layout.names, layout.numels):
            offsets[name] = (start, start + numel)
            start += numel
        self.spans = [(offsets[f"{p}.weight"], offsets[f"{p}.bias"]) for p in prefixes]
        h = inputs.flatten(1).to(self.weights[0].dtype)
        self.inputs: list[torch.Tensor] = [h]
        self.slopes: list[torch.Tensor] = []
        seconds: list[torch.Tensor | None] = []
        for weight, bias in zip(self.weights[:-1], biases[:-1]):
            h, slope, second = self._activate(torch.addmm(bias, h, weight.T))
            self.inputs.append(h)
            self.slopes.append(slope)
            seconds.append(second)
        logits = torch.addmm(biases[-1], h, self.weights[-1].T)
        self.p = torch.softmax(logits, dim=1)
        delta = self.p.clone()
        delta[torch.arange(delta.shape[0], device=delta.device), targets.long()] -= 1.0
        self.deltas: list[torch.Tensor] = [delta]
        # c_l = (delta_{l+1} W_{l+1}) act''(z_l); None where act'' is zero (ReLU).
        self.curvatures: list[torch.Tensor | None] = []
        for layer in range(depth - 1, -1, -1):
            upstream = self.deltas[0] @ self.weights[layer + 1]
            second = seconds[layer]
            self.curvatures.insert(0, None if second is None else upstream * second)
            self.deltas.insert(0, upstream * self.slopes[layer])

    def _activate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``act(z)``, ``act'(z)`` and ``act''(z)`` (``None`` for ReLU, whose second derivative is zero)."""
        if self.kind == "relu":
            mask = (z > 0).to(z.dtype)
            return z * mask, mask, None
        if self.kind == "tanh":
            h = torch.tanh(z)
            slope = 1.0 - h * h
            return h, slope, -2.0 * h * slope
        cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * z * z) / _SQRT_2PI
        return z * cdf, cdf + z * pdf, pdf * (2.0 - z * z)

    def add_products(self, vectors: torch.Tensor, out: torch.Tensor) -> None:
        """Add ``sum_i H_i v`` over the chunk's samples to ``out`` for every row ``v`` of ``vectors``
        (both ``(m, P)``). The rows go one after another: broadcasting a block of them through the layers was
        slower on the CPU (2-32-32-2 MLP, 1000 samples, 4 vectors: 3.4 ms against 1.8 ms; 4 x 250 at 512: 47 ms
        against 43 ms).
        """
        for row in range(vectors.shape[0]):
            self._add_one(vectors[row], out[row])

    def _add_one(self, v: torch.Tensor, out: torch.Tensor) -> None:
        # Plain 2-D matrix products into views of the flat vectors: for small models the product is per-call
        # overhead, so nothing is allocated or reshaped that need not be.
        last = len(self.weights) - 1
        v_ws: list[torch.Tensor] = []
        r_pre: list[torch.Tensor] = []
        r_inputs: list[torch.Tensor | None] = [None]
        rz = v
        for layer, weight in enumerate(self.weights):
            (w0, w1), (b0, b1) = self.spans[layer]
            v_w = v[w0:w1].view(weight.shape)
            v_ws.append(v_w)
            rz = torch.addmm(v[b0:b1], self.inputs[layer], v_w.T)
            r_in = r_inputs[layer]
            if r_in is not None:
                rz.addmm_(r_in, weight.T)
            if layer < last:
                r_pre.append(rz)
                r_inputs.append(rz * self.slopes[layer])
        r_delta = self.p * rz
        r_delta.addcmul_(self.p, r_delta.sum(dim=1, keepdim=True), value=-1.0)
        for layer in range(last, -1, -1):
            (w0, w1), (b0, b1) = self.spans[layer]
            weight = self.weights[layer]
            grad_w = out[w0:w1].view(weight.shape)
            grad_w.addmm_(r_delta.T, self.inputs[layer])
            r_in = r_inputs[layer]
            if r_in is not None:
                grad_w.addmm_(self.deltas[layer].T, r_in)
            out[b0:b1] += r_delta.sum(dim=0)
            if layer > 0:
                r_up = torch.mm(r_delta, weight).addmm_(self.deltas[layer], v_ws[layer])
                r_delta = r_up.mul_(self.slopes[layer - 1])
                curvature = self.curvatures[layer - 1]
                if curvature is not None:
                    r_delta.addcmul_(curvature, r_pre[layer - 1])
