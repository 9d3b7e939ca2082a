"""The state of a walk over a traced graph and the rules it shares between layers and functions.

:class:`UnitTracker` holds the union-find of permutation groups, the groups recorded on every model
tensor's axes and the value of every graph node visited; its methods tie groups, record tensors, follow
elementwise operations, pooling and flattening (reached both as modules and as functions), and turn the
result into a :class:`~lgeom.permutation.spec.PermutationSpec`. The rules for layers
(:mod:`~lgeom.permutation.layers`) and for functions and methods (:mod:`~lgeom.permutation.functions`)
extend it; :mod:`~lgeom.permutation.fx_trace` walks the graph with both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import fx, nn

from lgeom.permutation.spec import PermutationSpec, PermutationSpecError
from lgeom.permutation.units import FIXED, NOT_TENSOR, Attr, Concat, Groups, Units


class UnitTracker:
    """Walks a traced graph, recording the groups acting on every tensor's axes."""

    def __init__(self, model: nn.Module, graph: fx.Graph) -> None:
        """Start a walk over ``graph``, the ``torch.fx`` graph of ``model``."""
        self.model = model
        self.graph = graph
        self.model_name = type(model).__name__
        self.groups = Groups()
        self.axes: dict[str, tuple[int | Concat | None, ...]] = {}
        self.views: dict[str, tuple[int, ...]] = {}
        self.fixed_tensors: set[str] = set()  # read by operations we do not follow: never permuted
        self.module_calls: dict[str, tuple[Units, Units]] = {}  # shared modules: (input, output) of first call
        self.values: dict[fx.Node, Any] = {}

    # -- helpers ------------------------------------------------------------------------------------------

    def fail(self, where: str, op: str, reason: str) -> PermutationSpecError:
        """The error for operation ``op`` at ``where`` (a module or node name) that cannot be followed."""
        return PermutationSpecError(self.model_name, where, op, reason)

    def value(self, arg: Any) -> Any:
        """The traced value of a node argument (nested in lists, tuples and dicts)."""
        if isinstance(arg, fx.Node):
            return self.values[arg]
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.value(a) for a in arg)
        if isinstance(arg, dict):
            return {k: self.value(v) for k, v in arg.items()}
        return NOT_TENSOR if not isinstance(arg, torch.Tensor) else Attr("<constant>", arg)

    def live(self, g: int | Concat | None) -> bool:
        """Whether group ``g`` (or any segment of a concatenation) is still to be permuted."""
        if g is None:
            return False
        if isinstance(g, Concat):
            return any(self.live(p) for p, _ in g.parts)
        return self.groups.find(g) != FIXED

    def permuted(self, v: Any) -> bool:
        """Whether ``v`` is a tensor with units still to be permuted."""
        return isinstance(v, Units) and self.live(v.group)

    def size_of(self, g: int | Concat) -> int:
        """Units in group ``g`` (or in every segment of a concatenation)."""
        if isinstance(g, Concat):
            return g.size
        size = self.groups.size[g]
        assert size is not None
        return size

    def tie_groups(self, a: int | Concat | None, b: int | Concat | None) -> bool:
        """Make ``a`` and ``b`` one permutation (``None``: fixed units); False when impossible."""
        a = FIXED if a is None else a
        b = FIXED if b is None else b
        if isinstance(a, int) and isinstance(b, int):
            return self.groups.tie(a, b)
        if isinstance(b, int):
            a, b = b, a
        assert isinstance(b, Concat)
        if isinstance(a, int):
            if self.groups.find(a) == FIXED:  # fixed units: every segment stays in place
                return all(self.tie_groups(p, FIXED) for p, _ in b.parts)
            return False  # one layer's units cannot follow two permutations side by side
        if a is b:
            return True
        if [size for _, size in a.parts] != [size for _, size in b.parts]:
            return False
        return all(self.tie_groups(p, q) for (p, _), (q, _) in zip(a.parts, b.parts))

    def flat(self, v: Any) -> Iterable[Any]:
        """The leaves of ``v`` (lists, tuples and dict values flattened)."""
        if isinstance(v, (list, tuple)):
            for item in v:
                yield from self.flat(item)
        elif isinstance(v, dict):
            for item in v.values():
                yield from self.flat(item)
        else:
            yield v

    def record(
        self, module_name: str, attr: str, axes: tuple[int | Concat | None, ...], view: tuple[int, ...] | None = None
    ) -> None:
        """Record the groups on ``module_name.attr``'s axes (skipped when the attribute is ``None``)."""
        if getattr(self.model.get_submodule(module_name), attr, None) is None:
            return
        self.record_tensor(f"{module_name}.{attr}" if module_name else attr, axes, view)

    def record_tensor(
        self, name: str, axes: tuple[int | Concat | None, ...], view: tuple[int, ...] | None = None
    ) -> None:
        """Record the groups on the axes of model tensor ``name``; a tensor seen before ties its groups."""
        if name in self.axes and self.axes[name] != axes:
            old = self.axes[name]
            if len(old) != len(axes) or not all(self.tie_groups(a, b) for a, b in zip(old, axes)):
                raise self.fail(name, "a shared tensor", "used with different units")
            return
        self.axes[name] = axes
        if view is not None:
            self.views[name] = view

    def tie(self, a: int | Concat | None, b: int | Concat | None, where: str, op: str) -> None:
        """Tie groups ``a`` and ``b`` into one permutation, or raise naming ``op`` at ``where``."""
        if not self.tie_groups(a, b):
            what = [
                f"a concatenation of {self.size_of(g)} units"
                if isinstance(g, Concat)
                else f"{self.size_of(g)} units of one layer"
                for g in (a, b)
                if g is not None
            ]
            raise self.fail(where, op, f"units that cannot share one permutation meet: {' and '.join(what)}")

    def fix(self, v: Any) -> None:
        """Make every group in ``v`` unpermutable (e.g. a model output)."""
        for item in self.flat(v):
            if isinstance(item, Units) and item.group is not None:
                self.tie_groups(item.group, FIXED)

    def unit_group(self, v: Units) -> int | Concat | None:
        """The group of ``v`` if it is permuted, else None (recorded as an unpermuted axis)."""
        return v.group if self.permuted(v) else None

    # -- reading the model and operations that are not followed ------------------------------------------

    def get_attr(self, node: fx.Node) -> Any:
        """The value of a ``get_attr`` node: the model tensor it reads (anything else is no tensor)."""
        target = str(node.target)
        obj: Any = self.model
        for part in target.split("."):
            obj = getattr(obj, part)
        return Attr(target, obj) if isinstance(obj, torch.Tensor) else NOT_TENSOR

    def unsupported(self, where: str, op: str, args: Any, reason: str) -> Units:
        """An operation we do not follow: fine on unpermuted tensors (its parameters stay fixed)."""
        for item in self.flat(args):
            if self.permuted(item):
                raise self.fail(where, op, reason)
            if isinstance(item, Attr):
                if any(g is not None for g in self.axes.get(item.name, ())):
                    raise self.fail(where, op, f"it reads {item.name!r}, whose units are permuted elsewhere")
                self.fixed_tensors.add(item.name)
        return Units()

    # -- rules shared by layers and functions ------------------------------------------------------------

    def as_units(self, v: Any) -> Units:
        """``v`` as a tensor's units (a model tensor read here is fixed; a non-tensor has no units)."""
        if isinstance(v, Units):
            return v
        if isinstance(v, Attr):
            self.fixed_tensors.add(v.name)
        return Units()

    def elementwise(self, where: str, op: str, operands: list[Any]) -> Units:
        """Operands broadcast together: permuted ones must agree on their units' axis and share one group;
        unpermutable ones fix it; model tensors read here are permuted along with it.
        """
        units = [v for v in operands if self.permuted(v)]
        if not units:
            for v in operands:
                if isinstance(v, Attr):
                    self.fixed_tensors.add(v.name)
            ranks = [v.rank for v in operands if isinstance(v, Units) and v.rank is not None]
            return Units(rank=max(ranks) if ranks else None)
        first = units[0]
        for other in units[1:]:
            if other.axis != first.axis or other.merged != first.merged:
                raise self.fail(where, op, f"its operands hold units on different axes ({first.axis}, {other.axis})")
            self.tie(first.group, other.group, where, op)
        for v in operands:
            if isinstance(v, Attr):
                self.attr_operand(where, op, v, first)
            elif isinstance(v, Units) and not self.permuted(v) and (v.rank is None or v.rank >= -first.axis):
                # An unpermuted tensor reaching the units' axis would have to be permuted too: keep both fixed.
                self.tie_groups(first.group, FIXED)
        ranks = [v.rank for v in units if v.rank is not None]
        return Units(first.group, first.axis, max(ranks) if ranks else None, first.merged)

    def attr_operand(self, where: str, op: str, attr: Attr, units: Units) -> None:
        """A model tensor broadcast with ``units``: it is permuted along with them (constants fix them)."""
        shape = attr.tensor.shape
        if len(shape) < -units.axis or shape[units.axis] == 1:
            return  # broadcast along the units: nothing to permute
        model_tensor = attr.name in dict(self.model.named_parameters()) or attr.name in dict(self.model.named_buffers())
        if not model_tensor or units.merged is not None:
            self.tie_groups(units.group, FIXED)
            return
        if attr.name in self.fixed_tensors:
            raise self.fail(where, op, f"tensor {attr.name!r} is also read by an operation that is not followed")
        axes: list[int | Concat | None] = [None] * len(shape)
        axes[len(shape) + units.axis] = units.group
        self.record_tensor(attr.name, tuple(axes))

    def pool(self, name: str, op: str, x: Units, dims: int) -> Units:
        """Pooling over the last ``dims`` axes (``-1``: all but batch and channels): the units must lie elsewhere."""
        if self.permuted(x):
            spatial = dims if dims > 0 else (x.rank - 2 if x.rank is not None else 1)
            if x.merged is not None or x.axis >= -spatial:
                raise self.fail(name, op, f"it pools the last {spatial} axes, the units lie on axis {x.axis}")
        return x

    def flatten(self, where: str, op: str, x: Units, start: int, end: int) -> Units:
        """``flatten(start, end)``: units on a flattened axis become major or minor blocks of the merged one."""
        rank = x.rank
        if rank is None:
            # Without the rank only a flatten from a fixed axis to the last one has a known result.
            out_rank = start + 1 if start >= 0 and end == -1 else None
            if not self.permuted(x):
                return Units(rank=out_rank)
            if out_rank is not None and x.axis == -1 and x.merged is None:
                return Units(x.group, -1, out_rank, "minor")
            raise self.fail(where, op, "the rank of its input is unknown")
        start, end = start % rank, end % rank
        out_rank = rank - (end - start)
        if not self.permuted(x):
            return Units(rank=out_rank)
        pos = rank + x.axis
        if pos < start:
            return Units(x.group, pos - out_rank, out_rank, x.merged)
        if pos > end or start == end:
            return Units(x.group, x.axis, out_rank, x.merged)
        if x.merged is not None:
            raise self.fail(where, op, "it flattens units that are already flattened with other axes")
        if pos not in (start, end):
            raise self.fail(where, op, "the units end up between other flattened axes")
        return Units(x.group, start - out_rank, out_rank, "major" if pos == start else "minor")

    # -- the result ------------------------------------------------------------------------------------------

    def spec(self) -> PermutationSpec:
        """The spec found so far: groups named after their first layer, fixed ones as ``None``."""
        sizes: dict[str, int] = {}
        concats: dict[str, tuple[tuple[str | None, int], ...]] = {}

        def name_of(g: int | Concat | None) -> str | None:
            if isinstance(g, Concat):
                segments = tuple((name_of(p), size) for p, size in g.parts)
                if all(p is None for p, _ in segments):
                    return None
                concats[f"cat:{g.name}"] = segments
                return f"cat:{g.name}"
            root = None if g is None else self.groups.find(g)
            if root is None or root == FIXED:
                return None
            name = self.groups.name[root]
            sizes[name] = self.size_of(root)
            return name

        axes = {tensor: tuple(name_of(g) for g in groups) for tensor, groups in self.axes.items()}
        for name, t in [*self.model.named_parameters(), *self.model.named_buffers()]:
            if name not in axes:
                axes[name] = (None,) * t.dim()
        views = {n: v for n, v in self.views.items() if any(p is not None for p in axes[n])}
        return PermutationSpec(axes, views, dict(sorted(sizes.items())), dict(sorted(concats.items())))


__all__ = ["UnitTracker"]
