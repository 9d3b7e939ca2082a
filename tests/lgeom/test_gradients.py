"""The loss gradient over batches and the effective dimensionality of training gradients."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lgeom.data import build_dataset
from lgeom.gradients import Objective, effective_dimensionality, loss_and_gradient
from lgeom.models import build_model
from lgeom.params import flatten, functional_forward, get_params, unflatten, unflatten_stacked
from lgeom.reference import dense_loss
from lgeom.train import TrainSpec, train
from tests.lgeom.cases import get_case, one_batch, tiny_data, tiny_mlp


def test_loss_and_gradient_match_autograd_of_the_full_loss() -> None:
    model, data = tiny_mlp(0), tiny_data(40)
    x, y = one_batch(data)[0]
    params = get_params(model)

    def full(flat: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_forward(model, unflatten(flat, params), x), y)  # mean over all 40

    flat = flatten(params)
    loss, grad = loss_and_gradient(model, data)
    assert loss == pytest.approx(float(full(flat)), rel=1e-12)
    torch.testing.assert_close(grad, torch.func.grad(full)(flat), rtol=1e-10, atol=1e-12)
    loss2, grad2 = loss_and_gradient(model, one_batch(data))  # ragged batches give the same numbers
    assert loss2 == pytest.approx(loss, rel=1e-12)
    torch.testing.assert_close(grad2, grad, rtol=1e-10, atol=1e-13)


def test_objective_checks_its_inputs() -> None:
    model = tiny_mlp(0)
    with pytest.raises(ValueError, match="data: expected a non-empty dataset"):
        Objective(model, [])
    with pytest.raises(ValueError, match="params: expected names of the model's trainable parameters, got 'nope'"):
        Objective(model, tiny_data(8), params={"nope": torch.zeros(1)})
    obj = Objective(model, tiny_data(8, batch=3))
    assert obj.n_samples == 8 and obj.size == sum(p.numel() for p in model.parameters())


def test_effective_dimensionality_against_a_dense_pca() -> None:
    gen = torch.Generator().manual_seed(0)
    p, n = 200, 40
    basis, _ = torch.linalg.qr(torch.randn(p, 6, generator=gen, dtype=torch.float64))
    scales = torch.tensor([10.0, 6.0, 3.0, 1.0, 0.3, 0.1], dtype=torch.float64)
    grads = (torch.randn(n, 6, generator=gen, dtype=torch.float64) * scales) @ basis.T + 0.5
    res = effective_dimensionality(list(grads), threshold=0.9)
    # Dense reference: eigenvalues of the sample covariance.
    cov = np.cov(grads.numpy(), rowvar=False)
    ev = np.sort(np.linalg.eigvalsh(cov))[::-1]
    share = ev / ev.sum()
    expected = int(np.searchsorted(np.cumsum(share), 0.9) + 1)
    assert res.n_components == expected and 2 <= expected <= 4
    np.testing.assert_allclose(res.explained_variance_ratio[:6], share[:6], rtol=1e-8, atol=1e-12)
    assert res.ratio == pytest.approx(expected / p) and res.n_params == p and res.n_samples == n
    assert effective_dimensionality(grads, threshold=1.0).n_components == 6  # rank of the centred gradients
    assert effective_dimensionality(grads, threshold=0.5).n_components == 1
    assert res.cumulative[-1] == pytest.approx(1.0)


def test_effective_dimensionality_of_training_gradients() -> None:
    ds = build_dataset("moons", "train", n_train=128, n_test=8, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=2, in_shape=(2,), depth=2, width=8)
    result = train(
        model, ds, spec=TrainSpec(epochs=2, batch_size=16, lr=0.1, grad_snapshot_every=1, device="cpu"), progress=False
    )
    n_params = sum(p.numel() for p in model.parameters())
    assert len(result.grad_snapshots) == 16 and result.grad_snapshots[0].numel() == n_params
    res = effective_dimensionality(result.grad_snapshots)
    assert 1 <= res.n_components <= 15 and res.ratio == pytest.approx(res.n_components / n_params)


def test_effective_dimensionality_input_errors() -> None:
    g = torch.randn(5, 10, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="threshold: expected a number in \\(0, 1\\], got 0"):
        effective_dimensionality(g, threshold=0)
    with pytest.raises(ValueError, match="gradients: expected at least 2 gradient vectors"):
        effective_dimensionality(g[:1])
    with pytest.raises(ValueError, match="gradients: expected vectors that vary"):
        effective_dimensionality([g[0], g[0], g[0]])
    with pytest.raises(ValueError, match="gradients: expected vectors of equal length"):
        effective_dimensionality([g[0], g[1, :5]])


def test_batchnorm_as_affine_is_exact() -> None:
    from lgeom.gradients import EvalBatchNormAsAffine

    torch.manual_seed(1)
    bn = torch.nn.BatchNorm2d(3).double().eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    reference = bn(x)
    with EvalBatchNormAsAffine():
        affine = bn(x)
        bn.train()
        batch_stats = bn(x)  # training mode is left alone
    torch.testing.assert_close(affine, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        batch_stats, torch.nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, True), rtol=1e-12, atol=1e-12
    )


def test_eval_mode_differentiates_attention_twice_in_float64_and_float32() -> None:
    # Inside eval_mode attention runs on SDPA's math backend: the fused kernels torch picks otherwise (flash
    # attention on the CPU) have neither forward-mode nor double derivatives. Outside the Hessian, the
    # first-order loss and gradient keep torch's kernel choice and match the dense reference.
    c = get_case("vit")
    h = c.hessian()
    v = torch.randn(2, c.size, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    for model, dtype, tol in ((c.model, torch.float64, 1e-11), (copy.deepcopy(c.model).float(), torch.float32, 1e-3)):
        params = {n: p.to(dtype) for n, p in c.params.items()}
        obj = Objective(model, c.data, params=params)
        layout = obj.layout
        tangents = {n: t.to(dtype) for n, t in unflatten_stacked(layout, v).items()}
        forward_over_reverse = torch.zeros(2, c.size, dtype=dtype)
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        double_backward = torch.zeros(2, c.size, dtype=dtype)
        with obj.eval_mode():
            for xb, yb in obj.batches:
                grad = torch.func.grad(lambda p, xb=xb, yb=yb: obj.batch_loss_sum(p, xb, yb))
                hv = torch.func.vmap(lambda t, grad=grad: torch.func.jvp(grad, (params,), (t,))[1])(tangents)
                forward_over_reverse += torch.cat([hv[n].reshape(2, -1) for n in layout.names], dim=1)
                g = torch.autograd.grad(obj.batch_loss_sum(leaves, xb, yb), list(leaves.values()), create_graph=True)
                for i in range(2):
                    parts = torch.autograd.grad(
                        g, list(leaves.values()), list(layout.unflatten(v[i].to(dtype)).values()), retain_graph=True
                    )
                    double_backward[i] += torch.cat([p.reshape(-1) for p in parts])
        for products in (forward_over_reverse, double_backward):
            torch.testing.assert_close(products / obj.n_samples, (v @ h).to(dtype), rtol=tol, atol=tol)
    loss, grad = Objective(c.model, c.data, params=c.params).loss_and_grad()
    fn, theta = dense_loss(c.model, c.data, params=c.params, buffers=c.buffers)
    assert loss == pytest.approx(c.loss(), rel=1e-12)
    torch.testing.assert_close(flatten(grad), torch.func.grad(fn)(theta), rtol=1e-10, atol=1e-12)
