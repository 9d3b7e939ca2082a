"""Permutations of hidden units: the spec saying which permutation acts on which axis of every tensor of
a model, and the spec of any model traced from its ``torch.fx`` graph.

* :mod:`~lgeom.permutation.spec` -- :class:`PermutationSpec`, :func:`check_spec` and
  :class:`PermutationSpecError` (a model whose units cannot be followed);
* :mod:`~lgeom.permutation.fx_trace` -- :func:`traced_permutation_spec`, which walks the graph with the rules
  for layers (:mod:`~lgeom.permutation.layers`) and for functions and methods
  (:mod:`~lgeom.permutation.functions`) over the walk's state (:mod:`~lgeom.permutation.tracker`) and
  values (:mod:`~lgeom.permutation.units`).

Aligning two models with a spec is :mod:`lgeom.align`'s work.
"""

from lgeom.permutation.fx_trace import traced_permutation_spec
from lgeom.permutation.spec import PermutationSpec, PermutationSpecError, check_spec

__all__ = ["PermutationSpec", "PermutationSpecError", "check_spec", "traced_permutation_spec"]
