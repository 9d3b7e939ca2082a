"""Named parameters as points in weight space.

A *parameter point* is a ``dict[str, Tensor]`` keyed like ``model.named_parameters()`` (trainable
parameters only). Buffers (BatchNorm running statistics) travel separately as a ``dict[str, Tensor]`` keyed
like ``model.named_buffers()``. Models are evaluated at any point through ``torch.func.functional_call``,
which never mutates the module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from lgeom._checks import check_same_structure, expected

Params = dict[str, torch.Tensor]


def get_params(model: nn.Module, *, detach: bool = True) -> Params:
    """The model's trainable parameters as a name -> tensor dict (detached clones by default)."""
    return {n: (p.detach().clone() if detach else p) for n, p in model.named_parameters() if p.requires_grad}


def get_buffers(model: nn.Module) -> Params:
    """The model's buffers (e.g. BatchNorm running statistics) as detached clones."""
    return {n: b.detach().clone() for n, b in model.named_buffers()}


def load_params(
    model: nn.Module, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor] | None = None
) -> nn.Module:
    """Copy a parameter point (and optionally buffers) into ``model`` in place; returns the model.

    Raises:
        ValueError: when names or shapes do not match the model (naming the first mismatch).
    """
    check_same_structure(get_params(model, detach=False), params, first_name="model", second_name="params")
    with torch.no_grad():
        named = dict(model.named_parameters())
        for n, v in params.items():
            named[n].copy_(v)
        if buffers is not None:
            named_b = dict(model.named_buffers())
            for n, v in buffers.items():
                if n not in named_b:
                    raise ValueError(f"buffer {n!r}: expected one of the model's buffers, got an unknown name")
                named_b[n].copy_(v)
    return model


def has_tied_tensors(model: nn.Module) -> bool:
    """Whether two distinct submodules of ``model`` hold the same tensor (weights tied across modules).

    That is the case ``functional_call(..., tie_weights=True)`` exists for: the one named parameter must
    replace the tensor in every module holding it. Without it the untying scan can be skipped, which
    dominates the call for small models. A module registered under two names is *not* tied in this sense:
    replacing its attribute once serves both names, and ``tie_weights=True`` on such a model leaves the
    substituted tensors in the module after the call (torch 2.14), so it must get ``tie_weights=False``.
    """
    owner: dict[int, int] = {}
    for module in model.modules():  # each module once, however many names it has
        for _, t in [
            *module.named_parameters(recurse=False, remove_duplicate=False),
            *module.named_buffers(recurse=False, remove_duplicate=False),
        ]:
            if id(t) in owner:
                return True
            owner[id(t)] = id(module)
    return False


def functional_forward(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    inputs: torch.Tensor,
    buffers: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run ``model`` at the parameter point ``params`` (and ``buffers``) without mutating the module.

    Buffers not given are the module's own; in train mode BatchNorm updates the given buffer tensors in
    place (that is how running statistics are recomputed at a point).
    """
    state: dict[str, torch.Tensor] = dict(params)
    if buffers is not None:
        state.update(buffers)
    return functional_call(model, state, (inputs,), strict=False, tie_weights=has_tied_tensors(model))


@dataclass(frozen=True)
class ParamLayout:
    """Names, shapes and sizes of a parameter dict, to go between the dict and one flat vector."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...]

    @classmethod
    def of(cls, params: Mapping[str, torch.Tensor]) -> ParamLayout:
        """The layout of ``params`` (in its iteration order)."""
        names = tuple(params)
        shapes = tuple(params[n].shape for n in names)
        return cls(names, shapes, tuple(int(params[n].numel()) for n in names))

    @property
    def size(self) -> int:
        """Total number of scalars."""
        return sum(self.numels)

    def flatten(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate ``params`` (in this layout's order) into one 1-D tensor."""
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def unflatten(self, vector: torch.Tensor) -> Params:
        """Split a flat vector back into a dict of views shaped like this layout (shares storage)."""
        if vector.dim() != 1 or vector.numel() != self.size:
            raise expected("vector", f"a 1-D tensor of {self.size} elements", tuple(vector.shape))
        chunks = torch.split(vector, list(self.numels))
        return {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes)}


def flatten(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """One flat vector of every tensor in ``params`` (iteration order)."""
    return ParamLayout.of(params).flatten(params)


def unflatten(vector: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Params:
    """Split ``vector`` into tensors shaped like ``like`` (views of ``vector``)."""
    return ParamLayout.of(like).unflatten(vector)


def count_params(model: nn.Module) -> int:
    """Number of trainable scalars in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- arithmetic on parameter dicts -------------------------------------------------------------------


def combine(weights: Iterable[float | torch.Tensor], points: Iterable[Mapping[str, torch.Tensor]]) -> Params:
    """The linear combination ``sum_i weights[i] * points[i]`` of parameter dicts (differentiable)."""
    weights, points = list(weights), list(points)
    if len(weights) != len(points) or not points:
        raise expected("weights", f"{len(points)} weights, one per point", len(weights))
    out: Params = {}
    for name in points[0]:
        acc = points[0][name] * weights[0]
        for w, p in zip(weights[1:], points[1:]):
            acc = acc + p[name] * w
        out[name] = acc
    return out


def subtract(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> Params:
    """``a - b`` for parameter dicts."""
    return {n: a[n] - b[n] for n in a}


def dot(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Euclidean inner product of two parameter dicts (a 0-d tensor)."""
    return sum((a[n] * b[n]).sum() for n in a)  # type: ignore[return-value]


def norm(a: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Euclidean norm of a parameter dict (a 0-d tensor)."""
    return torch.sqrt(dot(a, a))


def filter_normalized_direction(
    params: Mapping[str, torch.Tensor],
    *,
    generator: torch.Generator | None = None,
    ignore_1d: bool = True,
) -> Params:
    """A Gaussian random direction with each output filter rescaled to the norm of the matching filter.

    For a weight of shape ``(out, ...)`` every slice ``d[i]`` is scaled to ``||d[i]|| = ||w[i]||``
    (Li et al. 2018, filter normalisation). 1-D parameters (biases, BatchNorm scales and shifts) are set
    to zero with ``ignore_1d`` (the default), else copied from the parameter itself.

    The rule looks only at shapes, so it is defined for any module (as in Li et al.'s reference code):
    a parameter of two or more dimensions has its *filters along axis 0*, whatever layer holds it; one of
    at most one dimension is 1-D. For the parameters of a transformer that means:

    * linear and convolutional weights, ``nn.MultiheadAttention``'s packed ``in_proj_weight`` ``(3E, E)``
      and ``out_proj.weight``: one filter per output unit (a row);
    * ``nn.Embedding`` ``(V, E)``: one filter per token's vector;
    * a positional embedding ``(1, T, E)`` or a class token ``(1, 1, E)``: axis 0 has one entry, so the
      whole tensor is one filter, scaled to the tensor's norm;
    * LayerNorm (and GroupNorm, BatchNorm) scales and shifts, biases, scalars: 1-D, zero with ``ignore_1d``.

    A filter of norm zero (a class token initialised to zeros) gets a zero direction.

    Returns:
        A dict shaped like ``params`` on the same device and dtype.
    """
    out: Params = {}
    for name, w in params.items():
        w = w.detach()
        if w.dim() <= 1:
            out[name] = torch.zeros_like(w) if ignore_1d else w.clone()
            continue
        d = torch.randn(w.shape, generator=generator, dtype=w.dtype, device="cpu").to(w.device)
        d_norm = d.reshape(d.shape[0], -1).norm(dim=1).clamp_min(1e-12)
        w_norm = w.reshape(w.shape[0], -1).norm(dim=1)
        scale = (w_norm / d_norm).reshape(-1, *([1] * (w.dim() - 1)))
        out[name] = d * scale
    return out


def point_device(model: nn.Module, params: Mapping[str, torch.Tensor] | None) -> torch.device:
    """The device of a parameter point: of ``params`` when given, else of the model's first parameter (CPU for
    a model without parameters).
    """
    if params:
        return next(iter(params.values())).device
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def point_dtype(model: nn.Module, params: Mapping[str, torch.Tensor] | None) -> torch.dtype:
    """The dtype of a parameter point: of ``params`` when given, else of the model's first parameter (the
    default dtype for a model without parameters).
    """
    if params:
        return next(iter(params.values())).dtype
    for p in model.parameters():
        return p.dtype
    return torch.get_default_dtype()


def inputs_to(xb: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A batch of inputs on ``device``; floating inputs take the parameters' ``dtype`` (so float64 checks run
    in float64), integer inputs (token ids) keep theirs.
    """
    xb = xb.to(device, non_blocking=True)
    return xb.to(dtype) if xb.is_floating_point() and dtype.is_floating_point and xb.dtype != dtype else xb


def stack_points(points: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack parameter dicts along a new leading dimension (shape ``(P, *param_shape)``).

    Raises:
        ValueError: no points.
    """
    if not points:
        raise expected("points", "at least one parameter point", 0)
    return {n: torch.stack([p[n].detach() for p in points]) for n in points[0]}


def unflatten_stacked(layout: ParamLayout, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a ``(P, layout.size)`` matrix into a dict of contiguous ``(P, *shape)`` tensors."""
    out: dict[str, torch.Tensor] = {}
    offset = 0
    m = flat.shape[0]
    for name, shape, numel in zip(layout.names, layout.shapes, layout.numels):
        out[name] = flat[:, offset : offset + numel].reshape(m, *shape).contiguous()
        offset += numel
    return out
