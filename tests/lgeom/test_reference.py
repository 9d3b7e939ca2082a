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
