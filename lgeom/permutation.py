"""Permutation specs: which permutation of hidden units acts on which axis of every tensor of a model, and
how to build one for any model from its ``torch.fx`` graph.

Hidden units of a network can be permuted without changing its function as long as every tensor that
reads or writes those units is permuted alike (Ainsworth, Hayase & Srinivasa 2022, "Git Re-Basin").
:func:`traced_permutation_spec` finds those tensors by tracing the model and following each layer's
output units through the graph:

- a linear or convolutional layer (or an embedding) writes a new group of units;
- BatchNorm, LayerNorm, GroupNorm (one group or one per channel), elementwise activations, dropout,
  pooling over other axes, softmax and reductions pass the units through (normalisation parameters and
  running statistics are permuted with them);
- a flatten that merges the units' axis with the positions after it turns them into blocks of the merged
  axis: a linear layer reading it sees channel-major blocks (its weight is viewed as ``(out, C, positions)``);
- an elementwise binary operation between two tensors (a residual addition, a gate) ties their groups into
  one permutation (union-find); an operand that cannot be permuted (the input, a constant) fixes the group;
- concatenation along the units' axis makes a concatenated axis whose segments follow the inputs'
  permutations (``PermutationSpec.concats``); along another axis it ties the inputs' groups;
- the model's outputs are never permuted (logits keep their order).

An operation that would mix units it cannot follow (attention heads, a reshape that splits or mixes the
units' axis, a grouped convolution, a concatenation with a tensor of unknown width, a layer or function
this module does not know) raises :class:`PermutationSpecError`, which names the module or graph node
and the operation, so that a caller can skip alignment for that model and say why. Operations on tensors
that carry no permuted units (the input, shapes) are never a problem.

The trace has no shapes: ranks are inferred (a convolution's input is batched), so ``squeeze`` of a given
axis is assumed to remove it. lgeom's own models and torchvision's ResNet, DenseNet, GoogLeNet, SqueezeNet,
MobileNet and EfficientNet are followed; vision transformers, ConvNeXt (functional LayerNorm) and
ShuffleNet (channel shuffle) raise.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

# --- the spec ---------------------------------------------------------------------------------------------


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
        ``start .. start + size - 1`` of that axis (``start`` is 0 except inside a concatenated axis)."""
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
            f"permutation spec of {type(model).__name__}: expected every tensor to be covered, got none for {missing[0]!r}"
        )
    for name, perms in spec.axes.items():
        if name not in tensors:
            raise ValueError(f"permutation spec {name!r}: expected a tensor of {type(model).__name__}, got none")
        shape = spec.views.get(name, tuple(tensors[name].shape))
        if spec.views.get(name) is not None and torch.Size(shape).numel() != tensors[name].numel():
            raise ValueError(f"permutation spec {name!r}: expected a view of {tensors[name].numel()} elements, got {shape}")
        if len(perms) != len(shape):
            raise ValueError(f"permutation spec {name!r}: expected {len(shape)} axes, got {len(perms)}")
        for axis, p in enumerate(perms):
            if p is not None and spec.axis_size(p) != shape[axis]:
                raise ValueError(
                    f"permutation spec {name!r} axis {axis}: expected {spec.axis_size(p)} units for {p!r}, got {shape[axis]}"
                )


# --- following units through the graph -------------------------------------------------------------------

_ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Softmax,
    nn.LogSoftmax,
)
_POOL_MODULES: dict[type[nn.Module], int] = {
    **{t: 1 for t in (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d, nn.LPPool1d)},
    **{t: 2 for t in (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d)},
    **{t: 3 for t in (nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)},
    nn.Upsample: -1,
}
_CONV_DIMS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_BN_DIMS = {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3, nn.SyncBatchNorm: -1,
            nn.InstanceNorm1d: 1, nn.InstanceNorm2d: 2, nn.InstanceNorm3d: 3}

_UNARY_FUNCTIONS = {
    torch.relu, torch.tanh, torch.sigmoid, torch.exp, torch.log, torch.sqrt, torch.rsqrt, torch.abs, torch.neg,
    torch.clamp, torch.square, torch.softmax, torch.log_softmax, torch.nn.functional.normalize,
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardtanh, F.hardswish,
    F.hardsigmoid, F.softplus, F.softsign, F.tanh, F.sigmoid, F.logsigmoid, F.dropout, F.dropout1d, F.dropout2d,
    F.dropout3d, F.alpha_dropout, F.softmax, F.log_softmax, operator.neg, operator.pos,
}
_UNARY_METHODS = {
    "relu", "relu_", "tanh", "tanh_", "sigmoid", "sigmoid_", "exp", "log", "sqrt", "rsqrt", "abs", "neg", "clamp",
    "clamp_", "square", "softmax", "log_softmax", "contiguous", "clone", "detach", "float", "double", "half",
    "bfloat16", "to", "type_as", "cpu", "cuda", "pow", "__pow__",
}
# Functions of other packages, by qualified name so that importing them is never needed; torchvision's
# stochastic depth drops whole samples (per-sample masks), which no unit permutation changes.
_UNARY_FUNCTION_NAMES = {"torchvision.ops.stochastic_depth.stochastic_depth"}
_BINARY_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub, operator.imul,
    operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum,
}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum", "minimum"}
_POOL_FUNCTIONS = {
    F.max_pool1d: 1, F.avg_pool1d: 1, F.adaptive_avg_pool1d: 1, F.adaptive_max_pool1d: 1,
    F.max_pool2d: 2, F.avg_pool2d: 2, F.adaptive_avg_pool2d: 2, F.adaptive_max_pool2d: 2,
    F.max_pool3d: 3, F.avg_pool3d: 3, F.adaptive_avg_pool3d: 3, F.adaptive_max_pool3d: 3, F.interpolate: -1,
}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "logsumexp"}
_SHAPE_METHODS = {"size", "dim", "numel", "ndimension"}


def _qualified_name(target: Any) -> str:
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', '')}"


class _NotTensor:
    """A value that is no tensor (a size, an int, a dtype)."""


NOT_TENSOR = _NotTensor()


@dataclass(frozen=True)
class _Concat:
    """Units of tensors concatenated along their units' axis: ``(group id or None, size)`` per segment."""

    parts: tuple[tuple[int | None, int], ...]
    name: str

    @property
    def size(self) -> int:
        return sum(size for _, size in self.parts)


@dataclass(frozen=True)
class _Units:
    """Where a traced tensor's permuted units lie.

    ``group`` is the union-find id of the units' permutation (``None``: nothing permuted), ``axis`` the units'
    axis counted from the end (negative, as broadcasting aligns), ``rank`` the tensor's dimensions when
    known, and ``merged`` says the axis was flattened with others: ``"major"`` (units outermost, e.g. conv
    channels flattened with positions) or ``"minor"`` (units innermost).
    """

    group: int | _Concat | None = None
    axis: int = -1
    rank: int | None = None
    merged: str | None = None

    def position(self) -> int | None:
        """The units' axis counted from the front, when the rank is known."""
        return None if self.rank is None else self.rank + self.axis


@dataclass(frozen=True)
class _Attr:
    """A tensor read from the model by ``get_attr`` (a parameter, buffer or constant)."""

    name: str
    tensor: torch.Tensor


FIXED = 0  # the union-find class of units that cannot be permuted


class _Groups:
    """Union-find over permutation groups; group ``FIXED`` is the class of unpermutable units."""

    def __init__(self) -> None:
        self.parent = [FIXED]
        self.size: list[int | None] = [None]
        self.name = ["<fixed>"]

    def new(self, size: int, name: str) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.name.append(name)
        return len(self.parent) - 1

    def find(self, g: int) -> int:
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


class _UnitTracker:
    """Walks a traced graph, recording the groups acting on every tensor's axes."""

    def __init__(self, model: nn.Module, graph: fx.Graph) -> None:
        self.model = model
        self.graph = graph
        self.model_name = type(model).__name__
        self.groups = _Groups()
        self.axes: dict[str, tuple[int | _Concat | None, ...]] = {}
        self.views: dict[str, tuple[int, ...]] = {}
        self.fixed_tensors: set[str] = set()  # read by operations we do not follow: never permuted
        self.module_calls: dict[str, tuple[_Units, _Units]] = {}  # shared modules: (input, output) of first call
        self.values: dict[fx.Node, Any] = {}

    # -- helpers ------------------------------------------------------------------------------------------

    def fail(self, where: str, op: str, reason: str) -> PermutationSpecError:
        return PermutationSpecError(self.model_name, where, op, reason)

    def value(self, arg: Any) -> Any:
        if isinstance(arg, fx.Node):
            return self.values[arg]
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.value(a) for a in arg)
        if isinstance(arg, dict):
            return {k: self.value(v) for k, v in arg.items()}
        return NOT_TENSOR if not isinstance(arg, torch.Tensor) else _Attr("<constant>", arg)

    def live(self, g: int | _Concat | None) -> bool:
        """Whether group ``g`` (or any segment of a concatenation) is still to be permuted."""
        if g is None:
            return False
        if isinstance(g, _Concat):
            return any(self.live(p) for p, _ in g.parts)
        return self.groups.find(g) != FIXED

    def permuted(self, v: Any) -> bool:
        return isinstance(v, _Units) and self.live(v.group)

    def size_of(self, g: int | _Concat) -> int:
        if isinstance(g, _Concat):
            return g.size
        size = self.groups.size[g]
        assert size is not None
        return size

    def tie_groups(self, a: int | _Concat | None, b: int | _Concat | None) -> bool:
        """Make ``a`` and ``b`` one permutation (``None``: fixed units); False when impossible."""
        a = FIXED if a is None else a
        b = FIXED if b is None else b
        if isinstance(a, int) and isinstance(b, int):
            return self.groups.tie(a, b)
        if isinstance(b, int):
            a, b = b, a
        assert isinstance(b, _Concat)
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
        if isinstance(v, (list, tuple)):
            for item in v:
                yield from self.flat(item)
        elif isinstance(v, dict):
            for item in v.values():
                yield from self.flat(item)
        else:
            yield v

    def record(self, module_name: str, attr: str, axes: tuple[int | _Concat | None, ...],
               view: tuple[int, ...] | None = None) -> None:
        if getattr(self.model.get_submodule(module_name), attr, None) is None:
            return
        self.record_tensor(f"{module_name}.{attr}" if module_name else attr, axes, view)

    def record_tensor(self, name: str, axes: tuple[int | _Concat | None, ...], view: tuple[int, ...] | None = None) -> None:
        if name in self.axes and self.axes[name] != axes:
            old = self.axes[name]
            if len(old) != len(axes) or not all(self.tie_groups(a, b) for a, b in zip(old, axes)):
                raise self.fail(name, "a shared tensor", "used with different units")
            return
        self.axes[name] = axes
        if view is not None:
            self.views[name] = view

    def tie(self, a: int | _Concat | None, b: int | _Concat | None, where: str, op: str) -> None:
        if not self.tie_groups(a, b):
            what = [f"a concatenation of {self.size_of(g)} units" if isinstance(g, _Concat) else
                    f"{self.size_of(g)} units of one layer" for g in (a, b) if g is not None]
            raise self.fail(where, op, f"units that cannot share one permutation meet: {' and '.join(what)}")

    def fix(self, v: Any) -> None:
        """Make every group in ``v`` unpermutable (e.g. a model output)."""
        for item in self.flat(v):
            if isinstance(item, _Units) and item.group is not None:
                self.tie_groups(item.group, FIXED)

    def unit_group(self, v: _Units) -> int | _Concat | None:
        """The group of ``v`` if it is permuted, else None (recorded as an unpermuted axis)."""
        return v.group if self.permuted(v) else None

    # -- the walk ----------------------------------------------------------------------------------------

    def run(self) -> None:
        for node in self.graph.nodes:
            if node.op == "placeholder":
                self.values[node] = _Units()
            elif node.op == "get_attr":
                self.values[node] = self.get_attr(node)
            elif node.op == "call_module":
                self.values[node] = self.call_module(node)
            elif node.op in ("call_function", "call_method"):
                self.values[node] = self.call_function(node)
            elif node.op == "output":
                self.fix(self.value(node.args[0]))

    def get_attr(self, node: fx.Node) -> Any:
        target = str(node.target)
        obj: Any = self.model
        for part in target.split("."):
            obj = getattr(obj, part)
        return _Attr(target, obj) if isinstance(obj, torch.Tensor) else NOT_TENSOR

    def unsupported(self, where: str, op: str, args: Any, reason: str) -> _Units:
        """An operation we do not follow: fine on unpermuted tensors (its parameters stay fixed)."""
        for item in self.flat(args):
            if self.permuted(item):
                raise self.fail(where, op, reason)
            if isinstance(item, _Attr):
                if any(g is not None for g in self.axes.get(item.name, ())):
                    raise self.fail(where, op, f"it reads {item.name!r}, whose units are permuted elsewhere")
                self.fixed_tensors.add(item.name)
        return _Units()

    # -- modules -------------------------------------------------------------------------------------------

    def call_module(self, node: fx.Node) -> Any:
        name = str(node.target)
        module = self.model.get_submodule(name)
        args = self.value(tuple(node.args) + tuple(node.kwargs.values()))
        x = self.as_units(args[0]) if args else _Units()
        op = type(module).__name__
        if name in self.module_calls and any(True for _ in module.parameters(recurse=False)):
            first_in, first_out = self.module_calls[name]
            if first_in.group is not None or x.group is not None:
                self.tie(first_in.group, x.group, name, op)
            return first_out
        out = self.module_units(name, module, op, x, args)
        self.module_calls.setdefault(name, (x, out))
        return out

    def module_units(self, name: str, module: nn.Module, op: str, x: _Units, args: Any) -> _Units:
        if isinstance(module, nn.Linear):
            return self.linear(name, module, x)
        if type(module) in _CONV_DIMS:
            return self.conv(name, module, _CONV_DIMS[type(module)], x)
        if isinstance(module, tuple(_BN_DIMS)):
            return self.channel_norm(name, module, op, _BN_DIMS[type(module)], x)
        if isinstance(module, nn.LayerNorm):
            return self.layer_norm(name, module, x)
        if isinstance(module, nn.GroupNorm):
            return self.group_norm(name, module, x)
        if isinstance(module, nn.PReLU):
            return self.prelu(name, module, x)
        if isinstance(module, nn.Embedding):
            group = self.groups.new(module.embedding_dim, name)
            self.record(name, "weight", (None, group))
            return _Units(group, -1, None if x.rank is None else x.rank + 1)
        if isinstance(module, nn.Flatten):
            return self.flatten(name, op, x, module.start_dim, module.end_dim)
        if isinstance(module, _ELEMENTWISE_MODULES):
            return x
        if type(module) in _POOL_MODULES:
            return self.pool(name, op, x, _POOL_MODULES[type(module)])
        reason = "attention mixes units across heads" if isinstance(module, nn.MultiheadAttention) else (
            "a layer whose units this module cannot follow")
        return self.unsupported(name, op, args, reason)

    def _input_group(self, name: str, op: str, x: _Units, axis: int) -> int | _Concat | None:
        """The group of ``x`` when its units lie on ``axis`` (negative); raise when they lie elsewhere."""
        group = self.unit_group(x)
        if group is not None and (x.axis != axis or x.merged is not None and axis != -1):
            raise self.fail(name, op, f"it reads axis {axis} of a tensor whose units lie on axis {x.axis}"
                            + (" (merged)" if x.merged else ""))
        return group

    def linear(self, name: str, module: nn.Linear, x: _Units) -> _Units:
        inp = self._input_group(name, "Linear", x, -1)
        out = self.groups.new(module.out_features, name)
        if inp is not None and x.merged is not None:
            units = self.size_of(inp)
            positions = module.in_features // units
            if x.merged == "major":
                self.record(name, "weight", (out, inp, None), (module.out_features, units, positions))
            else:
                self.record(name, "weight", (out, None, inp), (module.out_features, positions, units))
        else:
            self.record(name, "weight", (out, inp))
        self.record(name, "bias", (out,))
        return _Units(out, -1, x.rank)

    def conv(self, name: str, module: nn.Module, dims: int, x: _Units) -> _Units:
        op = type(module).__name__
        assert isinstance(module, nn.modules.conv._ConvNd)
        inp = self._input_group(name, op, x, -(dims + 1))
        rank = x.rank if x.rank is not None else dims + 2
        spatial = (None,) * dims
        if module.groups == 1:
            out = self.groups.new(module.out_channels, name)
            self.record(name, "weight", (out, inp, *spatial))
            self.record(name, "bias", (out,))
            return _Units(out, -(dims + 1), rank)
        if module.groups == module.in_channels == module.out_channels and inp is not None:
            # A depthwise convolution keeps every channel in place: its units are its input's.
            self.record(name, "weight", (inp, None, *spatial))
            self.record(name, "bias", (inp,))
            return _Units(inp, -(dims + 1), rank)
        if inp is not None:
            raise self.fail(name, op, f"a grouped convolution ({module.groups} groups) mixes units within groups")
        # Grouped convolution of unpermuted channels: its output channels stay in place too.
        self.record(name, "weight", (None, None, *spatial))
        self.record(name, "bias", (None,))
        return _Units()

    def channel_norm(self, name: str, module: nn.Module, op: str, dims: int, x: _Units) -> _Units:
        group = self.unit_group(x)
        if group is not None:
            # Without the rank: BatchNorm2d/3d inputs are batched images; BatchNorm1d reads (N, C) or (N, C, L).
            pos = x.position()
            ok = x.merged is None and (pos == 1 if pos is not None else
                                        x.axis == -(dims + 1) if dims > 1 else dims == 1 and x.axis in (-1, -2))
            if not ok:
                raise self.fail(name, op, f"it normalises axis 1, the units lie on axis {x.axis} of a "
                                          f"{x.rank if x.rank is not None else 'n'}-dimensional tensor")
        for attr in ("weight", "bias", "running_mean", "running_var"):
            self.record(name, attr, (group,))
        self.record(name, "num_batches_tracked", ())
        return x

    def layer_norm(self, name: str, module: nn.LayerNorm, x: _Units) -> _Units:
        shape = tuple(module.normalized_shape)
        group = self.unit_group(x)
        axes: list[int | None] = [None] * len(shape)
        if group is not None and x.axis >= -len(shape):
            if x.merged is not None:
                raise self.fail(name, "LayerNorm", "it normalises a flattened axis of several units")
            axes[len(shape) + x.axis] = group
        for attr in ("weight", "bias"):
            self.record(name, attr, tuple(axes))
        return x

    def group_norm(self, name: str, module: nn.GroupNorm, x: _Units) -> _Units:
        group = self.unit_group(x)
        if group is not None:
            if module.num_groups not in (1, module.num_channels):
                raise self.fail(name, "GroupNorm", f"{module.num_groups} groups of channels would be mixed")
            if x.merged is not None or x.position() != 1:
                raise self.fail(name, "GroupNorm", f"it normalises axis 1, the units lie on axis {x.axis}")
        self.record(name, "weight", (group,))
        self.record(name, "bias", (group,))
        return x

    def prelu(self, name: str, module: nn.PReLU, x: _Units) -> _Units:
        group = self.unit_group(x) if module.num_parameters > 1 else None
        if group is not None and (x.merged is not None or x.position() not in (1, None) or x.rank is None and x.axis not in (-1, -3)):
            raise self.fail(name, "PReLU", f"its slopes act on axis 1, the units lie on axis {x.axis}")
        self.record(name, "weight", (group,))
        return x

    def pool(self, name: str, op: str, x: _Units, dims: int) -> _Units:
        if self.permuted(x):
            spatial = dims if dims > 0 else (x.rank - 2 if x.rank is not None else 1)
            if x.merged is not None or x.axis >= -spatial:
                raise self.fail(name, op, f"it pools the last {spatial} axes, the units lie on axis {x.axis}")
        return x

    def flatten(self, where: str, op: str, x: _Units, start: int, end: int) -> _Units:
        rank = x.rank
        if rank is None:
            # Without the rank only a flatten from a fixed axis to the last one has a known result.
            out_rank = start + 1 if start >= 0 and end == -1 else None
            if not self.permuted(x):
                return _Units(rank=out_rank)
            if out_rank is not None and x.axis == -1 and x.merged is None:
                return _Units(x.group, -1, out_rank, "minor")
            raise self.fail(where, op, "the rank of its input is unknown")
        start, end = start % rank, end % rank
        out_rank = rank - (end - start)
        if not self.permuted(x):
            return _Units(rank=out_rank)
        pos = rank + x.axis
        if pos < start:
            return _Units(x.group, pos - out_rank, out_rank, x.merged)
        if pos > end or start == end:
            return _Units(x.group, x.axis, out_rank, x.merged)
        if x.merged is not None:
            raise self.fail(where, op, "it flattens units that are already flattened with other axes")
        if pos not in (start, end):
            raise self.fail(where, op, "the units end up between other flattened axes")
        return _Units(x.group, start - out_rank, out_rank, "major" if pos == start else "minor")

    # -- functions and methods -----------------------------------------------------------------------------

    def call_function(self, node: fx.Node) -> Any:
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
            if isinstance(x, _NotTensor):
                return NOT_TENSOR
            return self.unsupported(where, "indexing", x, "indexing may select or reorder units")
        tensors = [v for v in self.flat((args, kwargs)) if isinstance(v, (_Units, _Attr))]
        if not tensors:
            # Arithmetic on sizes gives sizes; a torch function without tensor inputs creates a tensor.
            return _Units() if not is_method and getattr(target, "__module__", "") and str(
                getattr(target, "__module__", "")).startswith("torch") else NOT_TENSOR
        if (is_method and target in _UNARY_METHODS) or (not is_method and (
                target in _UNARY_FUNCTIONS or _qualified_name(target) in _UNARY_FUNCTION_NAMES)):
            return self.elementwise(where, op, [x] if isinstance(x, (_Units, _Attr)) else tensors[:1])
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
        if len(node.args) > index:
            return node.args[index]
        return node.kwargs.get(key, default)

    def as_units(self, v: Any) -> _Units:
        if isinstance(v, _Units):
            return v
        if isinstance(v, _Attr):
            self.fixed_tensors.add(v.name)
        return _Units()

    def elementwise(self, where: str, op: str, operands: list[Any]) -> _Units:
        """Operands broadcast together: permuted ones must agree on their units' axis and share one group;
        unpermutable ones fix it; model tensors read here are permuted along with it."""
        units = [v for v in operands if self.permuted(v)]
        if not units:
            for v in operands:
                if isinstance(v, _Attr):
                    self.fixed_tensors.add(v.name)
            ranks = [v.rank for v in operands if isinstance(v, _Units) and v.rank is not None]
            return _Units(rank=max(ranks) if ranks else None)
        first = units[0]
        for other in units[1:]:
            if other.axis != first.axis or other.merged != first.merged:
                raise self.fail(where, op, f"its operands hold units on different axes ({first.axis}, {other.axis})")
            self.tie(first.group, other.group, where, op)
        for v in operands:
            if isinstance(v, _Attr):
                self.attr_operand(where, op, v, first)
            elif isinstance(v, _Units) and not self.permuted(v) and (v.rank is None or v.rank >= -first.axis):
                # An unpermuted tensor reaching the units' axis would have to be permuted too: keep both fixed.
                self.tie_groups(first.group, FIXED)
        ranks = [v.rank for v in units if v.rank is not None]
        return _Units(first.group, first.axis, max(ranks) if ranks else None, first.merged)

    def attr_operand(self, where: str, op: str, attr: _Attr, units: _Units) -> None:
        shape = attr.tensor.shape
        if len(shape) < -units.axis or shape[units.axis] == 1:
            return  # broadcast along the units: nothing to permute
        model_tensor = attr.name in dict(self.model.named_parameters()) or attr.name in dict(self.model.named_buffers())
        if not model_tensor or units.merged is not None:
            self.tie_groups(units.group, FIXED)
            return
        if attr.name in self.fixed_tensors:
            raise self.fail(where, op, f"tensor {attr.name!r} is also read by an operation that is not followed")
        axes: list[int | _Concat | None] = [None] * len(shape)
        axes[len(shape) + units.axis] = units.group
        self.record_tensor(attr.name, tuple(axes))

    def reshape(self, where: str, op: str, node: fx.Node, x: _Units) -> _Units:
        sizes = list(node.args[1:])
        if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
            sizes = list(sizes[0])
        if "shape" in node.kwargs:
            sizes = list(node.kwargs["shape"])
        if not self.permuted(x):
            return _Units(rank=len(sizes))
        pos = x.position()
        # Only a flatten of the units' axis with everything after it, keeping the axes before, is followed:
        # ``x.view(x.size(0), -1)``.
        if pos is not None and x.merged is None and len(sizes) == pos + 1 and sizes[-1] == -1 and all(
            isinstance(s, fx.Node) for s in sizes[:-1]
        ):
            return self.flatten(where, op, x, pos, -1)
        raise self.fail(where, op, "a reshape may split or mix the units' axis")

    def _dims(self, where: str, op: str, x: _Units, dims: Any) -> list[int]:
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

    def reduce(self, where: str, op: str, node: fx.Node, x: _Units) -> _Units:
        dim = self.arg(node, 1, "dim", None)
        keepdim = bool(self.arg(node, 2, "keepdim", False))
        if dim is None:
            return _Units(rank=0 if not keepdim else x.rank)
        count = len(dim) if isinstance(dim, (list, tuple)) else 1
        rank = x.rank if keepdim or x.rank is None else x.rank - count
        if not self.permuted(x):
            return _Units(rank=rank)
        dims = self._dims(where, op, x, dim)
        if x.axis in dims:
            return _Units(rank=rank)  # units reduced away: the result does not depend on their order
        axis = x.axis if keepdim else x.axis + sum(1 for d in dims if d > x.axis)
        return _Units(x.group, axis, rank, x.merged)

    def move_axes(self, where: str, op: str, node: fx.Node, x: _Units) -> _Units:
        if not self.permuted(x):
            return _Units(rank=x.rank)
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
        return _Units(x.group, new - x.rank, x.rank, x.merged)

    def squeeze(self, where: str, op: str, node: fx.Node, x: _Units) -> _Units:
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        dim = self.arg(node, 1, "dim", None)
        if dim is None:
            if self.permuted(x):
                raise self.fail(where, op, "squeezing every size-1 axis needs shapes the trace does not have")
            return _Units()
        if name == "unsqueeze":
            d = int(dim)
            rank = None if x.rank is None else x.rank + 1
            if not self.permuted(x):
                return _Units(rank=rank)
            # Inserting at d (negative: counted in the result) shifts the units when it lands after them.
            if d < 0:
                d_result = d
            elif rank is not None:
                d_result = d - rank
            else:
                raise self.fail(where, op, "the rank of its input is unknown")
            return _Units(x.group, x.axis - 1 if d_result > x.axis - 1 else x.axis, rank, x.merged)
        dims = self._dims(where, op, x, dim) if self.permuted(x) else []
        rank = None if x.rank is None else x.rank - len(dims or [0])
        if not self.permuted(x):
            return _Units(rank=rank)
        if x.axis in dims:
            raise self.fail(where, op, "it squeezes the units' axis")
        return _Units(x.group, x.axis + sum(1 for d in dims if d > x.axis), rank, x.merged)

    def concat(self, where: str, op: str, node: fx.Node) -> _Units:
        parts = self.value(node.args[0])
        dim = int(self.arg(node, 1, "dim", 0))
        units = [self.as_units(p) for p in parts]
        permuted = [u for u in units if self.permuted(u)]
        if not permuted:
            return _Units(rank=next((u.rank for u in units if u.rank is not None), None))
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
            segments.extend(u.group.parts if isinstance(u.group, _Concat) else [(u.group, self.size_of(u.group))])
        ranks = [u.rank for u in units if u.rank is not None]
        return _Units(_Concat(tuple(segments), where), first.axis, max(ranks) if ranks else None)

    # -- the result ------------------------------------------------------------------------------------------

    def spec(self) -> PermutationSpec:
        sizes: dict[str, int] = {}
        concats: dict[str, tuple[tuple[str | None, int], ...]] = {}

        def name_of(g: int | _Concat | None) -> str | None:
            if isinstance(g, _Concat):
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


def traced_permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutation spec of ``model``, found by following its units through its ``torch.fx`` graph.

    Every linear / convolutional layer's output units get a permutation (named after the layer that first
    writes them), except units that reach the model's output or meet its input. See the module docstring for
    the operations followed.

    Returns:
        A :class:`PermutationSpec` covering every parameter and buffer (unpermuted ones with ``None`` axes).

    Raises:
        PermutationSpecError: the model cannot be traced by ``torch.fx``, or one of its operations mixes
            units in a way that cannot be followed (names the module or node and the operation).
    """
    try:
        graph = fx.Tracer().trace(model)
    except Exception as err:  # tracing runs user code: any failure means no graph
        raise PermutationSpecError(type(model).__name__, "forward", "torch.fx tracing",
                                   f"{type(err).__name__}: {err}") from err
    tracker = _UnitTracker(model, graph)
    tracker.run()
    spec = tracker.spec()
    check_spec(model, spec)
    return spec


__all__ = ["PermutationSpec", "PermutationSpecError", "check_spec", "traced_permutation_spec"]
