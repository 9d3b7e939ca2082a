"""Permutation alignment of two networks by weight matching (Ainsworth, Hayase & Srinivasa 2022, "Git
Re-Basin", Algorithm 1).

Hidden units of a network can be permuted without changing its function, as long as every tensor that
reads or writes those units is permuted alike. A :class:`PermutationSpec` lists, for every parameter and
buffer, which permutation acts on each of its axes. A model class may register a hand-written spec builder
(:func:`register_permutation_spec`; lgeom's own models do); any other model gets the spec traced from its
``torch.fx`` graph (:func:`lgeom.permutation.traced_permutation_spec`), which raises
:class:`~lgeom.permutation.PermutationSpecError` when an operation mixes units it cannot follow (attention
heads, a reshape across channels). Residual networks share one permutation along each residual stream
(every block that adds to the stream reads and writes the same units).

:func:`weight_matching` finds permutations of B's units that maximise ``sum_l <W_A^l, P_l W_B^l P_{l-1}^T>``
by coordinate descent: each permutation in turn is the solution of a linear assignment problem
(``scipy.optimize.linear_sum_assignment``) with the others fixed, until a full pass improves nothing.
The permuted B computes the same function as B (BatchNorm scales, shifts and running statistics are
permuted too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from lgeom._checks import check_positive_int, check_same_structure, expected
from lgeom.batchnorm import has_batchnorm
from lgeom.curves import check_model_matches
from lgeom.models.cnn import CNN
from lgeom.models.mlp import MLP, ResMLP
from lgeom.models.resnet import BasicBlock, Bottleneck, PreResNet
from lgeom.params import Params
from lgeom.permutation import (
    PermutationSpec,
    PermutationSpecError,
    check_spec,
    traced_permutation_spec,
)

# --- permutation specs ----------------------------------------------------------------------------------


SpecBuilderFn = Callable[[nn.Module], PermutationSpec]
_SPECS: dict[type, SpecBuilderFn] = {}


def register_permutation_spec(model_type: type) -> Callable[[SpecBuilderFn], SpecBuilderFn]:
    """Decorator registering ``builder(model) -> PermutationSpec`` for ``model_type`` (and its subclasses)."""

    def wrap(builder: SpecBuilderFn) -> SpecBuilderFn:
        _SPECS[model_type] = builder
        return builder

    return wrap


def supported_models() -> list[str]:
    """Names of the model classes with a hand-written permutation spec (others are traced)."""
    return sorted(t.__name__ for t in _SPECS)


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutation spec of ``model``: the hand-written one registered for its class (or a base class)
    when there is one, else the one traced from its ``torch.fx`` graph.

    Raises:
        PermutationSpecError: no spec is registered and the model's graph cannot be permuted (names the
            module or node and the operation; a ``ValueError``).
        ValueError: a registered spec misses one of the model's tensors.
    """
    for cls in type(model).__mro__:
        if cls in _SPECS:
            return _SPECS[cls](model)
    return traced_permutation_spec(model)


class SpecBuilder:
    """Builds a :class:`PermutationSpec` from modules of a model (tensor names come from the model)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._module_names = {id(m): n for n, m in model.named_modules()}
        self.axes: dict[str, tuple[str | None, ...]] = {}
        self.views: dict[str, tuple[int, ...]] = {}
        self.sizes: dict[str, int] = {}

    def new(self, module: nn.Module, size: int, suffix: str = "") -> str:
        """A new permutation of ``size`` units, named after ``module`` (plus ``suffix``)."""
        name = self._module_names[id(module)] + suffix
        if name in self.sizes:
            raise ValueError(f"permutation {name!r}: expected a new name, got one already in the spec")
        self.sizes[name] = size
        return name

    def tensor(
        self, module: nn.Module, attr: str, perms: tuple[str | None, ...], view: tuple[int, ...] | None = None
    ) -> None:
        """Record the permutations acting on ``module.<attr>`` (skipped when the attribute is ``None``)."""
        value = getattr(module, attr, None)
        if value is None:
            return
        prefix = self._module_names[id(module)]
        name = f"{prefix}.{attr}" if prefix else attr
        self.axes[name] = perms
        if view is not None:
            self.views[name] = view

    def linear(self, module: nn.Linear, out: str | None, inp: str | None) -> None:
        """A linear layer writing units ``out`` from units ``inp``."""
        self.tensor(module, "weight", (out, inp))
        self.tensor(module, "bias", (out,))

    def conv(self, module: nn.Conv2d, out: str | None, inp: str | None) -> None:
        """A 2-D convolution writing channels ``out`` from channels ``inp``."""
        self.tensor(module, "weight", (out, inp, None, None))
        self.tensor(module, "bias", (out,))

    def norm(self, module: nn.Module, perm: str) -> None:
        """A BatchNorm layer over units ``perm`` (scale, shift and running statistics); no-op for others."""
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            return
        for attr in ("weight", "bias", "running_mean", "running_var"):
            self.tensor(module, attr, (perm,))
        self.tensor(module, "num_batches_tracked", ())

    def build(self) -> PermutationSpec:
        """The spec, after checking it covers every parameter and buffer with consistent sizes.

        Raises:
            ValueError: a tensor of the model is missing from the spec or its sizes disagree.
        """
        spec = PermutationSpec(dict(self.axes), dict(self.views), dict(self.sizes))
        check_spec(self.model, spec)
        return spec


@register_permutation_spec(MLP)
def _mlp_spec(model: MLP) -> PermutationSpec:
    s = SpecBuilder(model)
    prev: str | None = None
    for layer in model.hidden:
        out = s.new(layer, layer.out_features)
        s.linear(layer, out, prev)
        prev = out
    s.linear(model.head, None, prev)
    return s.build()


@register_permutation_spec(ResMLP)
def _resmlp_spec(model: ResMLP) -> PermutationSpec:
    s = SpecBuilder(model)
    stream = s.new(model.inp, model.inp.out_features, ".stream")
    s.linear(model.inp, stream, None)
    for block in model.blocks:
        hidden = s.new(block.fc1, block.fc1.out_features)
        s.linear(block.fc1, hidden, stream)
        s.linear(block.fc2, stream, hidden)
    s.linear(model.head, None, stream)
    return s.build()


@register_permutation_spec(CNN)
def _cnn_spec(model: CNN) -> PermutationSpec:
    s = SpecBuilder(model)
    p1 = s.new(model.conv1, model.conv1.out_channels)
    s.conv(model.conv1, p1, None)
    s.norm(model.bn1, p1)
    # conv2's output and the skip's output are added, so they share one permutation.
    p2 = s.new(model.conv2, model.conv2.out_channels)
    s.conv(model.conv2, p2, p1)
    s.norm(model.bn2, p2)
    if model.skip is not None:
        s.conv(model.skip, p2, None)
    # The head reads channel-major flattened feature maps: view its input axis as (channels, positions).
    channels = model.conv2.out_channels
    k, features = model.head.weight.shape
    s.tensor(model.head, "weight", (None, p2, None), view=(k, channels, features // channels))
    s.tensor(model.head, "bias", (None,))
    return s.build()


@register_permutation_spec(PreResNet)
def _preresnet_spec(model: PreResNet) -> PermutationSpec:
    s = SpecBuilder(model)
    stream = s.new(model.conv1, model.conv1.out_channels, ".stream")
    s.conv(model.conv1, stream, None)
    for stage in model.stages:
        for block in stage:
            inp = stream
            # A block with a projection shortcut starts a new residual stream; identity blocks keep it.
            out = inp if block.shortcut is None else s.new(block.shortcut, block.shortcut.out_channels, ".stream")
            s.norm(block.bn1, inp)
            if isinstance(block, BasicBlock):
                h = s.new(block.conv1, block.conv1.out_channels)
                s.conv(block.conv1, h, inp)
                s.norm(block.bn2, h)
                s.conv(block.conv2, out, h)
            elif isinstance(block, Bottleneck):
                h1 = s.new(block.conv1, block.conv1.out_channels)
                s.conv(block.conv1, h1, inp)
                s.norm(block.bn2, h1)
                h2 = s.new(block.conv2, block.conv2.out_channels)
                s.conv(block.conv2, h2, h1)
                s.norm(block.bn3, h2)
                s.conv(block.conv3, out, h2)
            else:
                raise expected("PreResNet block", "BasicBlock or Bottleneck", type(block).__name__)
            if block.shortcut is not None:
                s.conv(block.shortcut, out, inp)
            stream = out
    s.norm(model.bn, stream)
    s.linear(model.head, None, stream)
    return s.build()


# --- applying and finding permutations --------------------------------------------------------------------


def _permute(
    tensor: torch.Tensor,
    perms_of_axes: tuple[str | None, ...],
    view: tuple[int, ...] | None,
    perms: Mapping[str, torch.Tensor],
    skip_axis: int | None = None,
) -> torch.Tensor:
    shape = tensor.shape
    out = tensor.reshape(view) if view is not None else tensor
    for axis, p in enumerate(perms_of_axes):
        if p is not None and axis != skip_axis:
            out = out.index_select(axis, perms[p].to(out.device))
    return out.reshape(shape)


def apply_permutation(
    spec: PermutationSpec, perms: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor]
) -> Params:
    """``tensors`` (parameters and/or buffers) with every axis permuted as ``spec`` says.

    ``perms[p][i]`` is the unit of the original that goes to position ``i``.

    Returns:
        A new dict with the same keys (tensors not in the spec are returned unchanged).

    Raises:
        ValueError: a permutation the spec needs is missing from ``perms``.
    """
    missing = [p for p in spec.sizes if p not in perms]
    if missing:
        raise expected("perms", f"a permutation for every name in the spec (missing {missing[0]!r})", sorted(perms))
    full = spec.full_perms(perms)
    out: Params = {}
    for name, t in tensors.items():
        if name in spec.axes:
            out[name] = _permute(t.detach(), spec.axes[name], spec.views.get(name), full)
        else:
            out[name] = t.detach().clone()
    return out


@dataclass
class Alignment:
    """What :func:`weight_matching` returns.

    Attributes:
        params: B's parameters permuted onto A (same device and dtype as B).
        buffers: B's buffers (BatchNorm running statistics) permuted alike; empty when none were given.
        perms: permutation name -> index tensor (``perms[p][i]``: B's unit placed at position ``i``).
        iterations: passes of coordinate descent over all permutations.
        similarity_before: ``sum <A, B>`` over parameters the spec permutes, before alignment.
        similarity_after: the same after alignment (>= before).
    """

    params: Params
    buffers: Params
    perms: dict[str, torch.Tensor]
    iterations: int
    similarity_before: float
    similarity_after: float


def weight_matching(
    model: nn.Module,
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    *,
    buffers_b: Mapping[str, torch.Tensor] | None = None,
    max_iter: int = 100,
    seed: int = 0,
    spec: PermutationSpec | None = None,
) -> Alignment:
    """Permute B's hidden units to match A by weight matching.

    Args:
        model: the architecture (its class selects a hand-written permutation spec, else the spec is traced
            from its graph; it is not mutated).
        a: parameters of A (the reference).
        b: parameters of B (to be permuted).
        buffers_b: B's buffers (BatchNorm running statistics), permuted alike; required for models with
            BatchNorm.
        max_iter: at most this many passes of coordinate descent.
        seed: seeds the order in which permutations are visited.
        spec: a permutation spec to use instead of the model's (e.g. ``traced_permutation_spec(model)``
            for a model with a hand-written one).

    Returns:
        :class:`Alignment` with B's permuted parameters and buffers; the permuted model computes the same
        function as B.

    Raises:
        PermutationSpecError: no spec given and the model cannot be permuted (see :func:`permutation_spec`);
            callers that can go on without alignment catch this one.
        ValueError: A and B of different architectures (names the first mismatch), missing BatchNorm
            buffers of B, or a bad ``max_iter``.
    """
    check_positive_int("max_iter", max_iter)
    check_same_structure(a, b, first_name="A", second_name="B")
    spec = spec or permutation_spec(model)
    if buffers_b is None and has_batchnorm(model):
        raise expected("buffers_b", "B's BatchNorm running statistics (they must be permuted with B)", None)
    check_model_matches(model, a, what="A")

    wa = {n: a[n].detach().to("cpu", torch.float64) for n in b}
    wb = {n: b[n].detach().to("cpu", torch.float64) for n in b}
    views = {n: spec.views.get(n, tuple(wa[n].shape)) for n in wa}
    wa = {n: t.reshape(views[n]) for n, t in wa.items()}
    wb = {n: t.reshape(views[n]) for n, t in wb.items()}
    # Only parameters enter the objective; buffers just follow the permutations. A permutation acting on a
    # segment of a concatenated axis scores only that segment's entries.
    axes_of = {p: [(n, ax, start) for n, ax, start in lst if n in wa] for p, lst in spec.perm_occurrences().items()}
    perms = {p: torch.arange(size) for p, size in spec.sizes.items()}
    names = sorted(spec.sizes)
    rng = np.random.default_rng(seed)

    def gain(p: str) -> torch.Tensor:
        size = spec.sizes[p]
        full = spec.full_perms(perms)
        score = torch.zeros(size, size, dtype=torch.float64)
        for n, axis, start in axes_of[p]:
            other = _permute(wb[n], spec.axes[n], None, full, skip_axis=axis)
            rows_a = wa[n].movedim(axis, 0)[start : start + size]
            rows_b = other.movedim(axis, 0)[start : start + size]
            score += rows_a.reshape(size, -1) @ rows_b.reshape(size, -1).T
        return score

    def similarity() -> float:
        full = spec.full_perms(perms)
        return float(sum((wa[n] * _permute(wb[n], spec.axes[n], None, full)).sum() for n in wa))

    before = similarity()
    iterations = 0
    for _ in range(max_iter):
        iterations += 1
        improved = False
        for idx in rng.permutation(len(names)):
            p = names[int(idx)]
            score = gain(p)
            _, cols = linear_sum_assignment(score.numpy(), maximize=True)
            rows = torch.arange(spec.sizes[p])
            new_perm = torch.as_tensor(cols, dtype=torch.long)
            old_value = float(score[rows, perms[p]].sum())
            new_value = float(score[rows, new_perm].sum())
            if new_value > old_value + 1e-12 * max(1.0, abs(old_value)):
                perms[p] = new_perm
                improved = True
        if not improved:
            break
    after = similarity()
    params = apply_permutation(spec, perms, b)
    buffers = apply_permutation(spec, perms, buffers_b) if buffers_b is not None else {}
    return Alignment(params, buffers, perms, iterations, before, after)


def permute_model_state(
    model: nn.Module,
    perms: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    *,
    spec: PermutationSpec | None = None,
) -> Params:
    """Apply permutations found by :func:`weight_matching` to another state of the same model (e.g. a
    checkpoint's parameters or buffers).

    Raises:
        PermutationSpecError: no spec given and the model cannot be permuted.
        ValueError: missing permutations.
    """
    return apply_permutation(spec or permutation_spec(model), perms, state)


__all__: Sequence[str] = (
    "Alignment",
    "PermutationSpec",
    "PermutationSpecError",
    "SpecBuilder",
    "apply_permutation",
    "permutation_spec",
    "permute_model_state",
    "register_permutation_spec",
    "supported_models",
    "traced_permutation_spec",
    "weight_matching",
)
