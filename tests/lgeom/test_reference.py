"""The dense references themselves (:mod:`lgeom.reference`), checked on closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgeom.reference import (
    DenseOperator,
    QuadraticLandscape,
    dense_eigenvalues,
    dense_hessian,
    dense_loss,
    symmetric_with_spectrum,
)

D = torch.float64


def _zero_linear() -> torch.nn.Module:
    model = torch.nn.Linear(2, 3, bias=False).double()
    torch.nn.init.zeros_(model.weight)
    return model


def test_dense_loss_and_hessian_of_a_zero_linear_layer_by_hand() -> None:
    # Zero weights: every logit is 0, softmax p = 1/3 each, CE = log 3 per sample, and for one input x the
    # Hessian w.r.t. the weight (row-major, W[k, j]) is (diag(p) - p p^T) kron (x x^T).
    model = _zero_linear()
    x = torch.tensor([[1.0, 2.0]], dtype=D)
    data = [(x, torch.tensor([1]))]
    loss, theta = dense_loss(model, data)
    assert theta.shape == (6,) and float(loss(theta)) == pytest.approx(np.log(3.0), rel=1e-15)
    p = torch.full((3,), 1.0 / 3.0, dtype=D)
    expected = torch.kron(torch.diag(p) - torch.outer(p, p), x.T @ x)
    torch.testing.assert_close(dense_hessian(model, data), expected, rtol=1e-12, atol=1e-14)


def test_dense_hessian_is_the_sample_mean_over_ragged_batches() -> None:
    model = _zero_linear()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, generator=gen, dtype=D)
    y = torch.randint(0, 3, (5,), generator=gen)
    p = torch.full((3,), 1.0 / 3.0, dtype=D)
    expected = torch.kron(torch.diag(p) - torch.outer(p, p), x.T @ x / 5)
    torch.testing.assert_close(dense_hessian(model, [(x[:4], y[:4]), (x[4:], y[4:])]), expected, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="data: expected a non-empty dataset"):
        dense_hessian(model, [])


class _NormAttention(torch.nn.Module):
    """Tokens -> linear -> LayerNorm -> self-attention (``nn.MultiheadAttention``) -> mean -> linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(3, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.attn = torch.nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.embed(x))
        return self.head(self.attn(h, h, h, need_weights=False)[0].mean(dim=1))


def test_dense_hessian_through_layernorm_and_attention_matches_finite_differences() -> None:
    # torch.func.hessian (forward over jacrev) got LayerNorm's second derivatives wrong in torch 2.14 (0.58 off
    # on such a net), and the fused attention kernels have neither forward-mode nor double derivatives.
    torch.manual_seed(0)
    model = _NormAttention().double().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, 3, generator=gen, dtype=D)
    data = [(x, torch.randint(0, 3, (6,), generator=gen))]
    point = {n: p.detach() + 0.3 * torch.randn(p.shape, generator=gen, dtype=D) for n, p in model.named_parameters()}
    loss, theta = dense_loss(model, data, params=point)

    def gradient(flat: torch.Tensor) -> torch.Tensor:
        flat = flat.clone().requires_grad_(True)
        return torch.autograd.grad(loss(flat), flat)[0]

    eps = 1e-5
    columns = [
        (gradient(theta + eps * e) - gradient(theta - eps * e)) / (2 * eps) for e in torch.eye(len(theta), dtype=D)
    ]
    by_differences = torch.stack(columns)
    h = dense_hessian(model, data, params=point)
    assert h.shape == (len(theta), len(theta)) and float(h.abs().max()) > 0.1
    torch.testing.assert_close(h, (by_differences + by_differences.T) / 2, rtol=0, atol=1e-7)


def test_matrices_with_a_given_spectrum_and_their_operator() -> None:
    spectrum = [3.0, -1.0, 0.5, 2.0]
    m = symmetric_with_spectrum(spectrum, seed=1)
    np.testing.assert_allclose(dense_eigenvalues(m), sorted(spectrum, reverse=True), atol=1e-12)
    op = DenseOperator(m)
    v = torch.ones(2, 4, dtype=D)
    torch.testing.assert_close(op.matmat(v), v @ m)
    assert op.n_products == 2 and op.size == 4
    with pytest.raises(ValueError, match="matrix: expected a symmetric matrix"):
        DenseOperator(torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=D))
    with pytest.raises(ValueError, match=r"matrix: expected a square matrix, got \(2, 3\)"):
        DenseOperator(torch.zeros(2, 3, dtype=D))


def test_quadratic_landscape_by_hand() -> None:
    center = {"w": torch.tensor([1.0, 2.0], dtype=D)}
    land = QuadraticLandscape(
        center, torch.diag(torch.tensor([2.0, 4.0], dtype=D)), torch.tensor([1.0, 0.0], dtype=D), base_loss=0.5
    )
    point = {"w": torch.tensor([2.0, 1.0], dtype=D)}  # x = (1, -1): 1/2 (2 + 4) + 1 + 0.5
    np.testing.assert_allclose(land.losses([center, point]), [0.5, 4.5])
    loss, grad = land.loss_and_grad(point)
    assert loss == pytest.approx(4.5)
    torch.testing.assert_close(grad["w"], torch.tensor([3.0, -4.0], dtype=D))
    with pytest.raises(ValueError, match=r"matrix: expected shape \(2, 2\), got \(3, 3\)"):
        QuadraticLandscape(center, torch.eye(3, dtype=D))
