"""The permutation spec of a model: which permutation of hidden units acts on which axis of every
parameter and buffer (:class:`PermutationSpec`), the check that a spec fits a model (:func:`check_spec`),
and the error raised when a model has no spec (:class:`PermutationSpecError`).

>>> spec = PermutationSpec({"fc1.weight": ("h", None), "fc2.weight": (None, "h")}, sizes={"h": 4})
>>> spec.perm_to_axes()
{'h': [('fc1.weight', 0), ('fc2.weight', 1)]}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class PermutationSpec:
    """Which permutation acts on which axis of every tensor of a model.

    Attributes:
        axes: tensor name (as in ``named_parameters`` / ``named_buffers``) -> one entry per axis of the
            tensor's *view*: a permutation name or ``None`` (axis not permuted).
        views: tensor name -> the shape the tensor is viewed as before permuting (for a flattened input,
            e.g. a linear head after a convolution, where channels are blocks of the input axis).
        sizes: permutation name -> number of units it permutes.
        concats: name of a concatenated axis -> its segments in order, ``(permutation name or None for
            units kept in place, length)``. Such a name appears in ``axes`` like a permutation; it is not
            found by itself but follows its segments' permutations (e.g. the input channels of a layer
            reading ``torch.cat([a, b], dim=1)``).
    """

    axes: Mapping[str, tuple[str | None, ...]]
    views: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    sizes: Mapping[str, int] = field(default_factory=dict)
    concats: Mapping[str, tuple[tuple[str | None, int], ...]] = field(default_factory=dict)

    def axis_size(self, name: str) -> int:
        """Units of a permutation or concatenated axis ``name``."""
        if name in self.concats:
            return sum(length for _, length in self.concats[name])
        return self.sizes[name]

    def perm_occurrences(self) -> dict[str, list[tuple[str, int, int]]]:
        """Permutation name -> every ``(tensor name, axis, start)`` it acts on: its units are entries
        ``start .. start + size - 1`` of that axis (``start`` is 0 except inside a concatenated axis).
        """
        out: dict[str, list[tuple[str, int, int]]] = {p: [] for p in self.sizes}
        for name, perms in self.axes.items():
            for axis, p in enumerate(perms):
                if p is None:
                    continue
                start = 0
                for q, length in self.concats.get(p, ((p, self.sizes.get(p, 0)),)):
                    if q is not None:
                        out[q].append((name, axis, start))
                    start += length
        return out

    def perm_to_axes(self) -> dict[str, list[tuple[str, int]]]:
        """Permutation name -> every ``(tensor name, axis)`` it acts on (wholly or as a segment)."""
        return {p: [(n, axis) for n, axis, _ in occ] for p, occ in self.perm_occurrences().items()}

    def full_perms(self, perms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``perms`` plus the index tensor of every concatenated axis, built from its segments'."""
        out = dict(perms)
        for name, segments in self.concats.items():
            parts, start = [], 0
            for q, length in segments:
                idx = perms[q] if q is not None else torch.arange(length)
                parts.append(idx.to("cpu", torch.long) + start)
                start += length
            out[name] = torch.cat(parts)
        return out


class PermutationSpecError(ValueError):
    """A model's units cannot be followed through one of its operations, so no permutation spec exists.

    Attributes:
        model: the model's class name.
        where: the module's qualified name (``"blocks.0.attn"``) or the graph node's name.
        op: the operation (``"MultiheadAttention"``, ``"call_method reshape"``, ...).
        reason: why it cannot be permuted.
    """

    def __init__(self, model: str, where: str, op: str, reason: str) -> None:
        """The error for operation ``op`` at ``where`` in ``model`` that cannot be followed, and why."""
        self.model, self.where, self.op, self.reason = model, where, op, reason
        super().__init__(
            f"permutation spec of {model}: expected operations that keep hidden units apart, got {op} at "
            f"{where!r} ({reason})"
        )


def check_spec(model: nn.Module, spec: PermutationSpec) -> None:
    """Check that ``spec`` covers every parameter and buffer of ``model`` with consistent sizes.

    Raises:
        ValueError: a tensor of the model is missing from the spec, or an axis's size differs from its
            permutation's.
    """
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    missing = [n for n in tensors if n not in spec.axes]
    if missing:
        raise ValueError(
            f"permutation spec of {type(model).__name__}: expected every tensor to be covered, "
            f"got none for {missing[0]!r}"
        )
    for name, perms in spec.axes.items():
        if name not in tensors:
            raise ValueError(f"permutation spec {name!r}: expected a tensor of {type(model).__name__}, got none")
        shape = spec.views.get(name, tuple(tensors[name].shape))
        if spec.views.get(name) is not None and torch.Size(shape).numel() != tensors[name].numel():
            raise ValueError(
                f"permutation spec {name!r}: expected a view of {tensors[name].numel()} elements, got {shape}"
            )
        if len(perms) != len(shape):
            raise ValueError(f"permutation spec {name!r}: expected {len(shape)} axes, got {len(perms)}")
        for axis, p in enumerate(perms):
            if p is not None and spec.axis_size(p) != shape[axis]:
                raise ValueError(
                    f"permutation spec {name!r} axis {axis}: expected {spec.axis_size(p)} units for {p!r}, "
                    f"got {shape[axis]}"
                )


__all__ = ["PermutationSpec", "PermutationSpecError", "check_spec"]
