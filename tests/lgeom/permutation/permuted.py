"""Shared by the tests of the trace's rules: trace a tiny float64 model, permute it at random by its spec and
check that its function is kept.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from lgeom.align import apply_permutation
from lgeom.params import get_buffers, get_params
from lgeom.permutation import (
    PermutationSpec,
    PermutationSpecError,
    traced_permutation_spec,
)

TOL = 1e-10  # float64: permuting only reorders sums


def traced_and_kept(
    model: nn.Module, shape: tuple[int, ...], seed: int = 0, inputs: torch.Tensor | None = None
) -> PermutationSpec:
    """The traced spec of ``model`` (made float64, eval mode), after checking that random permutations of
    every group leave its outputs unchanged on ``inputs`` (default: random float64 inputs of ``shape``).
    """
    torch.manual_seed(seed)
    model = model.double().eval()
    for m in model.modules():  # BN statistics other than the identity, so that permuting them matters
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    spec = traced_permutation_spec(model)
    gen = torch.Generator().manual_seed(seed + 1)
    perms = {p: torch.randperm(n, generator=gen) for p, n in spec.sizes.items()}
    state = {**get_params(model), **get_buffers(model)}
    x = torch.randn(3, *shape, dtype=torch.float64, generator=gen) if inputs is None else inputs
    torch.testing.assert_close(
        functional_call(model, apply_permutation(spec, perms, state), (x,)), model(x), rtol=TOL, atol=TOL
    )
    return spec


def refused(model: nn.Module, where: str, op: str, reason: str) -> PermutationSpecError:
    """The error tracing ``model`` raises, checked to name ``where``, ``op`` and ``reason``."""
    with pytest.raises(PermutationSpecError) as err:
        traced_permutation_spec(model)
    assert (err.value.where, err.value.op) == (where, op), str(err.value)
    assert reason in str(err.value), str(err.value)
    return err.value
