"""What the fx trace knows of each value of a graph: where a tensor's permuted units lie (:class:`Units`,
with :class:`Concat` for units concatenated from several layers), a tensor read from the model
(:class:`Attr`), a value that is no tensor (:data:`NOT_TENSOR`), and the union-find over permutation
groups (:class:`Groups`) in which class :data:`FIXED` holds the units that cannot be permuted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class NotTensor:
    """A value that is no tensor (a size, an int, a dtype)."""


NOT_TENSOR = NotTensor()


@dataclass(frozen=True)
class Concat:
    """Units of tensors concatenated along their units' axis: ``(group id or None, size)`` per segment."""

    parts: tuple[tuple[int | None, int], ...]
    name: str

    @property
    def size(self) -> int:
        """Units in all segments."""
        return sum(size for _, size in self.parts)


@dataclass(frozen=True)
class Units:
    """Where a traced tensor's permuted units lie.

    ``group`` is the union-find id of the units' permutation (``None``: nothing permuted), ``axis`` the units'
    axis counted from the end (negative, as broadcasting aligns), ``rank`` the tensor's dimensions when
    known, and ``merged`` says the axis was flattened with others: ``"major"`` (units outermost, e.g. conv
    channels flattened with positions) or ``"minor"`` (units innermost).
    """

    group: int | Concat | None = None
    axis: int = -1
    rank: int | None = None
    merged: str | None = None

    def position(self) -> int | None:
        """The units' axis counted from the front, when the rank is known."""
        return None if self.rank is None else self.rank + self.axis


@dataclass(frozen=True)
class Attr:
    """A tensor read from the model by ``get_attr`` (a parameter, buffer or constant)."""

    name: str
    tensor: torch.Tensor


FIXED = 0  # the union-find class of units that cannot be permuted


class Groups:
    """Union-find over permutation groups; group ``FIXED`` is the class of unpermutable units."""

    def __init__(self) -> None:
        """Only the class :data:`FIXED`."""
        self.parent = [FIXED]
        self.size: list[int | None] = [None]
        self.name = ["<fixed>"]

    def new(self, size: int, name: str) -> int:
        """A new group of ``size`` units named ``name``; its id."""
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.name.append(name)
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        """The id of the class of group ``g`` (with path halving)."""
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def tie(self, a: int, b: int) -> bool:
        """Merge the classes of ``a`` and ``b``; False when their sizes differ."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if ra != FIXED and rb != FIXED and self.size[ra] != self.size[rb]:
            return False
        # The older group (or FIXED) is the root, so a class is named after its first layer.
        ra, rb = min(ra, rb), max(ra, rb)
        self.parent[rb] = ra
        return True


__all__ = ["FIXED", "NOT_TENSOR", "Attr", "Concat", "Groups", "NotTensor", "Units"]
