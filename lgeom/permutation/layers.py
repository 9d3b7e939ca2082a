"""How the fx trace follows units through layers (``call_module`` nodes).

A linear or convolutional layer (or an embedding) writes a new group of units; a depthwise convolution
keeps its input's; BatchNorm (and InstanceNorm), LayerNorm, GroupNorm (one group or one per channel) and
PReLU pass the units through and are permuted with them; elementwise activations, dropout, softmax and
pooling over other axes pass them through untouched. A layer called twice (a shared module) ties the
units of its two inputs. Any other layer, attention among them, may only read unpermuted tensors.
"""

from __future__ import annotations

from typing import Any

from torch import fx, nn

from lgeom.permutation.tracker import UnitTracker
from lgeom.permutation.units import Concat, Units

_ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Softmax,
    nn.LogSoftmax,
)
_POOL_MODULES: dict[type[nn.Module], int] = {
    **{t: 1 for t in (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d, nn.LPPool1d)},
    **{t: 2 for t in (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d)},
    **{t: 3 for t in (nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)},
    nn.Upsample: -1,
}
_CONV_DIMS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_BN_DIMS = {
    nn.BatchNorm1d: 1,
    nn.BatchNorm2d: 2,
    nn.BatchNorm3d: 3,
    nn.SyncBatchNorm: -1,
    nn.InstanceNorm1d: 1,
    nn.InstanceNorm2d: 2,
    nn.InstanceNorm3d: 3,
}


class LayerRules(UnitTracker):
    """The rules of :class:`~lgeom.permutation.tracker.UnitTracker` for ``call_module`` nodes."""

    def call_module(self, node: fx.Node) -> Any:
        """The value of a ``call_module`` node; a layer with parameters called again ties its inputs' units."""
        name = str(node.target)
        module = self.model.get_submodule(name)
        args = self.value(tuple(node.args) + tuple(node.kwargs.values()))
        x = self.as_units(args[0]) if args else Units()
        op = type(module).__name__
        if name in self.module_calls and any(True for _ in module.parameters(recurse=False)):
            first_in, first_out = self.module_calls[name]
            if first_in.group is not None or x.group is not None:
                self.tie(first_in.group, x.group, name, op)
            return first_out
        out = self.module_units(name, module, op, x, args)
        self.module_calls.setdefault(name, (x, out))
        return out

    def module_units(self, name: str, module: nn.Module, op: str, x: Units, args: Any) -> Units:
        """The units of the output of layer ``module`` (qualified ``name``) given its input ``x``."""
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
            return Units(group, -1, None if x.rank is None else x.rank + 1)
        if isinstance(module, nn.Flatten):
            return self.flatten(name, op, x, module.start_dim, module.end_dim)
        if isinstance(module, _ELEMENTWISE_MODULES):
            return x
        if type(module) in _POOL_MODULES:
            return self.pool(name, op, x, _POOL_MODULES[type(module)])
        reason = (
            "attention mixes units across heads"
            if isinstance(module, nn.MultiheadAttention)
            else ("a layer whose units this module cannot follow")
        )
        return self.unsupported(name, op, args, reason)

    def _input_group(self, name: str, op: str, x: Units, axis: int) -> int | Concat | None:
        """The group of ``x`` when its units lie on ``axis`` (negative); raise when they lie elsewhere."""
        group = self.unit_group(x)
        if group is not None and (x.axis != axis or x.merged is not None and axis != -1):
            raise self.fail(
                name,
                op,
                f"it reads axis {axis} of a tensor whose units lie on axis {x.axis}"
                + (" (merged)" if x.merged else ""),
            )
        return group

    def linear(self, name: str, module: nn.Linear, x: Units) -> Units:
        """A linear layer: a new group for its outputs; a flattened input is viewed as blocks of units."""
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
        return Units(out, -1, x.rank)

    def conv(self, name: str, module: nn.Module, dims: int, x: Units) -> Units:
        """A convolution: a new group (a depthwise one keeps its input's); a grouped one of permuted units raises."""
        op = type(module).__name__
        assert isinstance(module, nn.modules.conv._ConvNd)
        inp = self._input_group(name, op, x, -(dims + 1))
        rank = x.rank if x.rank is not None else dims + 2
        spatial = (None,) * dims
        if module.groups == 1:
            out = self.groups.new(module.out_channels, name)
            self.record(name, "weight", (out, inp, *spatial))
            self.record(name, "bias", (out,))
            return Units(out, -(dims + 1), rank)
        if module.groups == module.in_channels == module.out_channels and inp is not None:
            # A depthwise convolution keeps every channel in place: its units are its input's.
            self.record(name, "weight", (inp, None, *spatial))
            self.record(name, "bias", (inp,))
            return Units(inp, -(dims + 1), rank)
        if inp is not None:
            raise self.fail(name, op, f"a grouped convolution ({module.groups} groups) mixes units within groups")
        # Grouped convolution of unpermuted channels: its output channels stay in place too.
        self.record(name, "weight", (None, None, *spatial))
        self.record(name, "bias", (None,))
        return Units()

    def channel_norm(self, name: str, module: nn.Module, op: str, dims: int, x: Units) -> Units:
        """BatchNorm / InstanceNorm: its affine parameters and running statistics follow axis 1's units."""
        group = self.unit_group(x)
        if group is not None:
            # Without the rank: BatchNorm2d/3d inputs are batched images; BatchNorm1d reads (N, C) or (N, C, L).
            pos = x.position()
            ok = x.merged is None and (
                pos == 1 if pos is not None else x.axis == -(dims + 1) if dims > 1 else dims == 1 and x.axis in (-1, -2)
            )
            if not ok:
                raise self.fail(
                    name,
                    op,
                    f"it normalises axis 1, the units lie on axis {x.axis} of a "
                    f"{x.rank if x.rank is not None else 'n'}-dimensional tensor",
                )
        for attr in ("weight", "bias", "running_mean", "running_var"):
            self.record(name, attr, (group,))
        self.record(name, "num_batches_tracked", ())
        return x

    def layer_norm(self, name: str, module: nn.LayerNorm, x: Units) -> Units:
        """LayerNorm: its affine parameters follow the units when they lie on a normalised axis."""
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

    def group_norm(self, name: str, module: nn.GroupNorm, x: Units) -> Units:
        """GroupNorm: followed with one group or one per channel, the units on axis 1."""
        group = self.unit_group(x)
        if group is not None:
            if module.num_groups not in (1, module.num_channels):
                raise self.fail(name, "GroupNorm", f"{module.num_groups} groups of channels would be mixed")
            if x.merged is not None or x.position() != 1:
                raise self.fail(name, "GroupNorm", f"it normalises axis 1, the units lie on axis {x.axis}")
        self.record(name, "weight", (group,))
        self.record(name, "bias", (group,))
        return x

    def prelu(self, name: str, module: nn.PReLU, x: Units) -> Units:
        """PReLU: its per-channel slopes follow the units on axis 1."""
        group = self.unit_group(x) if module.num_parameters > 1 else None
        if group is not None and (
            x.merged is not None or x.position() not in (1, None) or x.rank is None and x.axis not in (-1, -3)
        ):
            raise self.fail(name, "PReLU", f"its slopes act on axis 1, the units lie on axis {x.axis}")
        self.record(name, "weight", (group,))
        return x


__all__ = ["LayerRules"]
