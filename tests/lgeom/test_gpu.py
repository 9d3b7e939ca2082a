"""The same estimators on CUDA as on the CPU (skipped without CUDA): curves, path evaluation, Hessian."""

from __future__ import annotations

import pytest
import torch

from lgeom.curves import Bezier, CurveFitSpec, fit_curve
from lgeom.data import build_dataset, make_loader
from lgeom.hessian import top_eigenvalues, trace
from lgeom.models import build_model
from lgeom.multipoint import evaluate_path
from lgeom.params import get_params
from lgeom.train import TrainSpec, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


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


def test_curve_fit_and_path_on_cuda() -> None:
    tr = build_dataset("gaussmix256", "train", n_train=256, n_test=128)
    te = build_dataset("gaussmix256", "test", n_train=256, n_test=128)
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, in_shape=(1, 16, 16), batchnorm=True)
    a = train(model, tr, te, TrainSpec(epochs=2, device="cuda"), progress=False)
    torch.manual_seed(1)
    b = train(
        build_model("cnn", num_classes=10, in_shape=(1, 16, 16), batchnorm=True),
        tr,
        te,
        TrainSpec(epochs=2, seed=1, device="cuda"),
        progress=False,
    )
    model.cuda()
    curve = Bezier({k: v.cuda() for k, v in a.final_params.items()}, {k: v.cuda() for k, v in b.final_params.items()})
    fit_curve(model, curve, tr, CurveFitSpec(epochs=1, batch_size=64), progress=False)
    assert all(t.device.type == "cuda" for t in curve.parameters())
    loader = list(make_loader(te, 64))
    table = evaluate_path(
        model,
        curve,
        [0.0, 0.5, 1.0],
        loader,
        loader,
        bn_batches=list(make_loader(tr, 64))[:2],
        endpoint_buffers=(
            {k: v.cuda() for k, v in a.final_buffers.items()},
            {k: v.cuda() for k, v in b.final_buffers.items()},
        ),
    )
    assert table["test_acc"][0] == pytest.approx(a.final["test"].acc)
