"""How the fx trace follows units through functions and tensor methods (``call_function`` and
``call_method`` nodes).

Elementwise functions pass units through; binary ones tie their operands' groups (an unpermutable operand
fixes them); pooling and reductions over other axes, transposes, permutes, (un)squeezes and a flatten (or
``view(n, -1)``) of the units' axis with the axes after it move the units' axis; concatenation along it
makes a :class:`~lgeom.permutation.units.Concat` of the inputs' groups, along another axis it ties them.
Indexing, other reshapes and unknown functions may only read unpermuted tensors.
"""

from __future__ import annotations

import builtins
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

from lgeom.permutation.tracker import UnitTracker
from lgeom.permutation.units import NOT_TENSOR, Attr, Concat, NotTensor, Units

_UNARY_FUNCTIONS = {
    torch.relu,
    torch.tanh,
    torch.sigmoid,
    torch.exp,
    torch.log,
    torch.sqrt,
    torch.rsqrt,
    torch.abs,
    torch.neg,
    torch.clamp,
    torch.square,
    torch.softmax,
    torch.log_softmax,
    torch.nn.functional.normalize,
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.celu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardtanh,
    F.hardswish,
    F.hardsigmoid,
    F.softplus,
    F.softsign,
    F.tanh,
    F.sigmoid,
    F.logsigmoid,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
    F.softmax,
    F.log_softmax,
    operator.neg,
    operator.pos,
}
_UNARY_METHODS = {
    "relu",
    "relu_",
    "tanh",
    "tanh_",
    "sigmoid",
    "sigmoid_",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "abs",
    "neg",
    "clamp",
    "clamp_",
    "square",
    "softmax",
    "log_softmax",
    "contiguous",
    "clone",
    "detach",
    "float",
    "double",
    "half",
    "bfloat16",
    "to",
    "type_as",
    "cpu",
    "cuda",
    "pow",
    "__pow__",
}
# Functions of other packages, by qualified name so that importing them is never needed; torchvision's
# stochastic depth drops whole samples (per-sample masks), which no unit permutation changes.
_UNARY_FUNCTION_NAMES = {"torchvision.ops.stochastic_depth.stochastic_depth"}
_BINARY_FUNCTIONS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.maximum,
    torch.minimum,
}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum", "minimum"}
_POOL_FUNCTIONS = {
    F.max_pool1d: 1,
    F.avg_pool1d: 1,
    F.adaptive_avg_pool1d: 1,
    F.adaptive_max_pool1d: 1,
    F.max_pool2d: 2,
    F.avg_pool2d: 2,
    F.adaptive_avg_pool2d: 2,
    F.adaptive_max_pool2d: 2,
    F.max_pool3d: 3,
    F.avg_pool3d: 3,
    F.adaptive_avg_pool3d: 3,
    F.adaptive_max_pool3d: 3,
    F.interpolate: -1,
}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "logsumexp"}
_SHAPE_METHODS = {"size", "dim", "numel", "ndimension"}


def _qualified_name(target: Any) -> str:
    """``module.name`` of a function, to match it without importing its package."""
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', '')}"


class FunctionRules(UnitTracker):
    """The rules of :class:`~lgeom.permutation.tracker.UnitTracker` for ``call_function`` and ``call_method``
    nodes.
    """

    def call_function(self, node: fx.Node) -> Any:
        """The value of a ``call_function`` or ``call_method`` node, by the rule for its target."""
        target = node.target
        stack = node.meta.get("nn_module_stack") or {}
        # Name the innermost module the call happens in (the node's name when it is the model's own forward).
        where = f"{next(reversed(stack))}:{node.name}" if stack else node.name
        op = f"{node.op} {getattr(target, '__name__', target)}"
        args = self.value(tuple(node.args))
        kwargs = self.value(dict(node.kwargs))
        is_method = node.op == "call_method"
        x = args[0] if args else None
        if (not is_method and target is builtins.getattr) or (is_method and target in _SHAPE_METHODS):
            return NOT_TENSOR
        if target is operator.getitem:
            if isinstance(x, (list, tuple)):  # picking from a tuple of values
                return x[int(node.args[1])] if isinstance(node.args[1], int) else NOT_TENSOR
            if isinstance(x, NotTensor):
                return NOT_TENSOR
            return self.unsupported(where, "indexing", x, "indexing may select or reorder units")
        tensors = [v for v in self.flat((args, kwargs)) if isinstance(v, (Units, Attr))]
        if not tensors:
            # Arithmetic on sizes gives sizes; a torch function without tensor inputs creates a tensor.
            return (
                Units()
                if not is_method
                and getattr(target, "__module__", "")
                and str(getattr(target, "__module__", "")).startswith("torch")
                else NOT_TENSOR
            )
        if (is_method and target in _UNARY_METHODS) or (
            not is_method and (target in _UNARY_FUNCTIONS or _qualified_name(target) in _UNARY_FUNCTION_NAMES)
        ):
            return self.elementwise(where, op, [x] if isinstance(x, (Units, Attr)) else tensors[:1])
        if (is_method and target in _BINARY_METHODS) or (not is_method and target in _BINARY_FUNCTIONS):
            return self.elementwise(where, op, tensors)
        if not is_method and target in _POOL_FUNCTIONS:
            return self.pool(where, op, self.as_units(x), _POOL_FUNCTIONS[target])
        name = target if is_method else getattr(target, "__name__", "")
        if name == "flatten" and (is_method or target is torch.flatten):
            start = self.arg(node, 1, "start_dim", 0)
            end = self.arg(node, 2, "end_dim", -1)
            return self.flatten(where, op, self.as_units(x), int(start), int(end))
        if is_method and name in ("view", "reshape") or (not is_method and target is torch.reshape):
            return self.reshape(where, op, node, self.as_units(x))
        if name in _REDUCTIONS and (is_method or getattr(torch, name, None) is target):
            return self.reduce(where, op, node, self.as_units(x))
        if name in ("transpose", "permute") and (is_method or getattr(torch, name, None) is target):
            return self.move_axes(where, op, node, self.as_units(x))
        if name in ("unsqueeze", "squeeze") and (is_method or getattr(torch, name, None) is target):
            return self.squeeze(where, op, node, self.as_units(x))
        if not is_method and target is torch.cat:
            return self.concat(where, op, node)
        return self.unsupported(where, op, (args, kwargs), "an operation whose effect on units is unknown")

    def arg(self, node: fx.Node, index: int, key: str, default: Any) -> Any:
        """Argument ``index`` of ``node`` (or its keyword ``key``; ``default`` when absent)."""
        if len(node.args) > index:
            return node.args[index]
        return node.kwargs.get(key, default)

    def reshape(self, where: str, op: str, node: fx.Node, x: Units) -> Units:
        """``view`` / ``reshape``: only a flatten of the units' axis with every axis after it is followed."""
        sizes = list(node.args[1:])
        if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
            sizes = list(sizes[0])
        if "shape" in node.kwargs:
            sizes = list(node.kwargs["shape"])
        if not self.permuted(x):
            return Units(rank=len(sizes))
        pos = x.position()
        # Only a flatten of the units' axis with everything after it, keeping the axes before, is followed:
        # ``x.view(x.size(0), -1)``.
        if (
            pos is not None
            and x.merged is None
            and len(sizes) == pos + 1
            and sizes[-1] == -1
            and all(isinstance(s, fx.Node) for s in sizes[:-1])
        ):
            return self.flatten(where, op, x, pos, -1)
        raise self.fail(where, op, "a reshape may split or mix the units' axis")

    def _dims(self, where: str, op: str, x: Units, dims: Any) -> list[int]:
        """``dims`` as negative axes (needs the rank for non-negative ones)."""
        out = []
        for d in dims if isinstance(dims, (list, tuple)) else [dims]:
            d = int(d)
            if d >= 0:
                if x.rank is None:
                    raise self.fail(where, op, "the rank of its input is unknown")
                d -= x.rank
            out.append(d)
        return out

    def reduce(self, where: str, op: str, node: fx.Node, x: Units) -> Units:
        """A reduction (``mean``, ``sum``, ...): reducing the units' axis frees the result of them."""
        dim = self.arg(node, 1, "dim", None)
        keepdim = bool(self.arg(node, 2, "keepdim", False))
        if dim is None:
            return Units(rank=0 if not keepdim else x.rank)
        count = len(dim) if isinstance(dim, (list, tuple)) else 1
        rank = x.rank if keepdim or x.rank is None else x.rank - count
        if not self.permuted(x):
            return Units(rank=rank)
        dims = self._dims(where, op, x, dim)
        if x.axis in dims:
            return Units(rank=rank)  # units reduced away: the result does not depend on their order
        axis = x.axis if keepdim else x.axis + sum(1 for d in dims if d > x.axis)
        return Units(x.group, axis, rank, x.merged)

    def move_axes(self, where: str, op: str, node: fx.Node, x: Units) -> Units:
        """``transpose`` / ``permute``: the units' axis moves with its axis."""
        if not self.permuted(x):
            return Units(rank=x.rank)
        if x.rank is None:
            raise self.fail(where, op, "the rank of its input is unknown")
        pos = x.position()
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        if name == "transpose":
            d0, d1 = (d % x.rank for d in self._dims(where, op, x, [node.args[1], node.args[2]]))
            new = d1 if pos == d0 else d0 if pos == d1 else pos
        else:
            order = node.args[1:] if len(node.args) > 2 or not isinstance(node.args[1], (list, tuple)) else node.args[1]
            order = [d % x.rank for d in self._dims(where, op, x, list(order))]
            new = order.index(pos)
        assert new is not None
        return Units(x.group, new - x.rank, x.rank, x.merged)

    def squeeze(self, where: str, op: str, node: fx.Node, x: Units) -> Units:
        """``squeeze`` / ``unsqueeze`` of a given axis; squeezing the units' axis raises."""
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        dim = self.arg(node, 1, "dim", None)
        if dim is None:
            if self.permuted(x):
                raise self.fail(where, op, "squeezing every size-1 axis needs shapes the trace does not have")
            return Units()
        if name == "unsqueeze":
            d = int(dim)
            rank = None if x.rank is None else x.rank + 1
            if not self.permuted(x):
                return Units(rank=rank)
            # Inserting at d (negative: counted in the result) shifts the units when it lands after them.
            if d < 0:
                d_result = d
            elif rank is not None:
                d_result = d - rank
            else:
                raise self.fail(where, op, "the rank of its input is unknown")
            return Units(x.group, x.axis - 1 if d_result > x.axis - 1 else x.axis, rank, x.merged)
        dims = self._dims(where, op, x, dim) if self.permuted(x) else []
        rank = None if x.rank is None else x.rank - len(dims or [0])
        if not self.permuted(x):
            return Units(rank=rank)
        if x.axis in dims:
            raise self.fail(where, op, "it squeezes the units' axis")
        return Units(x.group, x.axis + sum(1 for d in dims if d > x.axis), rank, x.merged)

    def concat(self, where: str, op: str, node: fx.Node) -> Units:
        """``torch.cat``: along the units' axis, a :class:`Concat` of the inputs' groups; else they are tied."""
        parts = self.value(node.args[0])
        dim = int(self.arg(node, 1, "dim", 0))
        units = [self.as_units(p) for p in parts]
        permuted = [u for u in units if self.permuted(u)]
        if not permuted:
            return Units(rank=next((u.rank for u in units if u.rank is not None), None))
        first = permuted[0]
        (d,) = self._dims(where, op, first, dim)
        if d != first.axis:
            return self.elementwise(where, op, units)
        # Along the units' axis: each input's units stay a segment of the result's axis.
        segments: list[tuple[int | None, int]] = []
        for u in units:
            if u.group is None:
                raise self.fail(where, op, "it concatenates units with a tensor of unknown width")
            if u.axis != first.axis or u.merged is not None:
                raise self.fail(where, op, f"its inputs hold units on different axes ({first.axis}, {u.axis})")
            segments.extend(u.group.parts if isinstance(u.group, Concat) else [(u.group, self.size_of(u.group))])
        ranks = [u.rank for u in units if u.rank is not None]
        return Units(Concat(tuple(segments), where), first.axis, max(ranks) if ranks else None)


__all__ = ["FunctionRules"]
