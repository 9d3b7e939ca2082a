"""Top eigenvalues at a model point, by either method (:mod:`lgeom.hessian.eigen`); the same on CUDA as on the CPU
(skipped without CUDA).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgeom.hessian import top_eigenvalues, trace
from lgeom.models import build_model
from lgeom.params import get_params
from tests.lgeom.cases import CASES, get_case


def test_model_hessian_with_negative_curvature_gives_algebraic_top_k(case: dict) -> None:
    ev = case["ev"]
    assert ev[-1] < 0
    k = int(np.argmax(ev < abs(ev[-1]))) + 1  # the first top-k list that largest-magnitude order would get wrong
    assert 2 <= k <= 20
    lanczos = top_eigenvalues(case["model"], case["data"], k=k, tol=1e-6)
    np.testing.assert_allclose(lanczos.values, ev[:k], rtol=1e-4)
    power = top_eigenvalues(case["model"], case["data"], k=k, method="power", tol=1e-4, max_iter=1000, engine="cached")
    np.testing.assert_allclose(power.values, ev[:k], rtol=1e-2)


@pytest.mark.parametrize("name", CASES)
def test_top_eigenvalues_at_a_model_point_match_eigvalsh(name: str) -> None:
    c = get_case(name)
    res = top_eigenvalues(c.model, c.data, k=3, params=c.params, bn_batches=c.bn_batches, tol=1e-6)
    np.testing.assert_allclose(res.values, c.eigenvalues()[:3], rtol=1e-5, atol=1e-10)


def _pair(device: str) -> tuple[torch.nn.Module, dict, dict]:
    ends = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("preresnet", num_classes=10, in_shape=(3, 8, 8), depth=8)
        ends.append(get_params(model))
    return (
        model.to(device),
        {k: v.to(device) for k, v in ends[0].items()},
        {k: v.to(device) for k, v in ends[1].items()},
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_hessian_on_cuda_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(32, 3, 8, 8, generator=gen), torch.randint(0, 10, (32,), generator=gen)) for _ in range(2)]
    model, a, _ = _pair("cpu")
    model.eval()
    cpu = top_eigenvalues(model, data, k=3, params=a, seed=0)
    model.cuda()
    gpu = top_eigenvalues(
        model, [(x.cuda(), y.cuda()) for x, y in data], k=3, params={k: v.cuda() for k, v in a.items()}, seed=0
    )
    torch.testing.assert_close(torch.as_tensor(gpu.values), torch.as_tensor(cpu.values), rtol=1e-3, atol=1e-4)
    t = trace(
        model, [(x.cuda(), y.cuda()) for x, y in data], n_probes=8, seed=0, params={k: v.cuda() for k, v in a.items()}
    )
    assert torch.isfinite(torch.as_tensor(t.mean))
