"""The permutation spec of any model, found by following its hidden units through its ``torch.fx`` graph.

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

from torch import fx, nn

from lgeom.permutation.functions import FunctionRules
from lgeom.permutation.layers import LayerRules
from lgeom.permutation.spec import PermutationSpec, PermutationSpecError, check_spec
from lgeom.permutation.units import Units


class GraphWalker(LayerRules, FunctionRules):
    """Walks a traced graph node by node with the rules for layers and for functions and methods."""

    def run(self) -> None:
        for node in self.graph.nodes:
            if node.op == "placeholder":
                self.values[node] = Units()
            elif node.op == "get_attr":
                self.values[node] = self.get_attr(node)
            elif node.op == "call_module":
                self.values[node] = self.call_module(node)
            elif node.op in ("call_function", "call_method"):
                self.values[node] = self.call_function(node)
            elif node.op == "output":
                self.fix(self.value(node.args[0]))


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
        raise PermutationSpecError(
            type(model).__name__, "forward", "torch.fx tracing", f"{type(err).__name__}: {err}"
        ) from err
    tracker = GraphWalker(model, graph)
    tracker.run()
    spec = tracker.spec()
    check_spec(model, spec)
    return spec


__all__ = ["traced_permutation_spec"]
