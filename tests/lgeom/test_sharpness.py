"""Sharpness, perturbation flatness and Monte-Carlo curvature: closed forms on a quadratic loss, and the
model landscape against the dense Hessian (tiny float64 cases).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgeom.models import build_model
from lgeom.params import get_params
from lgeom.reference import QuadraticLandscape, dense_hessian, symmetric_with_spectrum
from lgeom.sharpness import (
    ModelLandscape,
    average_sharpness,
    mc_curvature,
    perturbation_flatness,
    worst_sharpness,
)
from tests.lgeom.cases import image_data, one_batch, tiny_data, tiny_mlp


def center(seed: int = 0) -> dict[str, torch.Tensor]:
    """A parameter point with a 2-D weight (3 filters), a 1-D bias and a 4-D conv weight: P = 12 + 3 + 16."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(3, 4, generator=gen, dtype=torch.float64),
        "b": torch.randn(3, generator=gen, dtype=torch.float64),
        "conv": torch.randn(2, 2, 2, 2, generator=gen, dtype=torch.float64),
    }


P = 31


def weight_norm_sq(c: dict[str, torch.Tensor]) -> float:
    return float(c["w"].square().sum() + c["conv"].square().sum())


# --- closed forms on a quadratic --------------------------------------------------------------------------


def test_average_sharpness_at_a_minimum_of_an_isotropic_quadratic() -> None:
    c, curv, eps = center(), 2.5, 0.1
    land = QuadraticLandscape(c, curv * torch.eye(P, dtype=torch.float64), base_loss=0.7)
    res = average_sharpness(land, eps=eps, n_samples=7, seed=3)
    # Filter-normalised: every filter moves by eps * its norm, so ||delta||^2 = eps^2 ||W||^2 (biases fixed).
    expected = 0.5 * curv * eps**2 * weight_norm_sq(c)
    np.testing.assert_allclose(res.increases, expected, rtol=1e-12)
    assert res.mean == pytest.approx(expected, rel=1e-12) and res.max == pytest.approx(expected, rel=1e-12)
    assert res.std == pytest.approx(0.0, abs=1e-12) and res.base_loss == pytest.approx(0.7)
    assert res.flatness == pytest.approx(expected, rel=1e-12)
    plain = average_sharpness(land, eps=eps, n_samples=5, filter_normalized=False)
    np.testing.assert_allclose(plain.increases, 0.5 * curv * eps**2, rtol=1e-12)


def test_perturbation_flatness_is_the_absolute_loss_change() -> None:
    c = center()
    a = symmetric_with_spectrum(np.linspace(-1.0, 2.0, P).tolist(), seed=5)
    g = torch.linspace(-1, 1, P, dtype=torch.float64)
    land = QuadraticLandscape(c, a, gradient=g)
    deltas = [{n: 0.1 * (i + 1) * torch.ones_like(v) for n, v in c.items()} for i in range(3)]
    flat = perturbation_flatness(land, deltas)
    for d, value in zip(deltas, flat):
        x = torch.cat([d[n].reshape(-1) for n in c])
        assert value == pytest.approx(abs(float(g @ x + 0.5 * x @ a @ x)), rel=1e-12)
    assert perturbation_flatness(land, deltas[0])[0] == pytest.approx(flat[0])


def test_worst_case_l2_ball_finds_half_lambda_max_eps_squared() -> None:
    c, eps = center(), 0.2
    a = symmetric_with_spectrum([3.0, 1.0, 0.5] + [0.1] * (P - 3), seed=6)
    res = worst_sharpness(QuadraticLandscape(c, a), eps=eps, steps=40, norm="l2", scaling="none", seed=1)
    assert res.increase == pytest.approx(0.5 * 3.0 * eps**2, rel=1e-2)
    assert res.increase <= 0.5 * 3.0 * eps**2 * (1 + 1e-12)  # never outside the ball
    assert res.delta_norm == pytest.approx(eps, rel=1e-9) and len(res.losses) == 41
    damped = worst_sharpness(
        QuadraticLandscape(c, a), eps=eps, steps=40, norm="l2", scaling="none", step_size=1.0, seed=1
    )
    assert damped.increase == pytest.approx(0.5 * 3.0 * eps**2, rel=2e-2)


def test_worst_case_l_inf_box_reaches_the_corners_of_a_diagonal_quadratic() -> None:
    c, eps = center(), 0.05
    diag = torch.linspace(0.5, 2.0, P, dtype=torch.float64)
    res = worst_sharpness(QuadraticLandscape(c, torch.diag(diag)), eps=eps, steps=3, norm="linf", scaling="none")
    assert res.increase == pytest.approx(0.5 * eps**2 * float(diag.sum()), rel=1e-12)


def test_worst_case_on_a_linear_loss_matches_the_dual_norms() -> None:
    c, eps = center(), 0.03
    g = torch.linspace(-2, 1, P, dtype=torch.float64)
    land = QuadraticLandscape(c, torch.zeros(P, P, dtype=torch.float64), gradient=g)
    l2 = worst_sharpness(land, eps=eps, steps=2, norm="l2", scaling="none")
    assert l2.increase == pytest.approx(eps * float(g.norm()), rel=1e-10)
    linf = worst_sharpness(land, eps=eps, steps=2, norm="linf", scaling="none")
    assert linf.increase == pytest.approx(eps * float(g.abs().sum()), rel=1e-10)
    w = torch.cat([v.reshape(-1) for v in c.values()])
    adaptive = worst_sharpness(land, eps=eps, steps=2, norm="linf", scaling="elementwise")
    assert adaptive.increase == pytest.approx(eps * float((w.abs() * g.abs()).sum()), rel=1e-10)


def test_filter_scaled_worst_case_shares_the_average_case_ball() -> None:
    c, curv, eps = center(), 1.5, 0.1
    iso = QuadraticLandscape(c, curv * torch.eye(P, dtype=torch.float64))
    worst = worst_sharpness(iso, eps=eps, steps=3, scaling="filter")
    assert worst.increase == pytest.approx(0.5 * curv * eps**2 * weight_norm_sq(c), rel=1e-10)
    land = QuadraticLandscape(c, symmetric_with_spectrum(np.linspace(0.0, 4.0, P).tolist(), seed=8))
    avg = average_sharpness(land, eps=eps, n_samples=20, seed=2)
    assert avg.max <= worst_sharpness(land, eps=eps, steps=20, scaling="filter").increase


def test_mc_curvature_closed_forms() -> None:
    c, eps = center(), 0.3
    iso = mc_curvature(QuadraticLandscape(c, 2.0 * torch.eye(P, dtype=torch.float64)), eps=eps, n_directions=6)
    np.testing.assert_allclose(iso.curvatures, 2.0, rtol=1e-9)
    assert iso.std == pytest.approx(0.0, abs=1e-8) and iso.frac_negative == 0.0
    a = symmetric_with_spectrum(np.linspace(-2.0, 3.0, P).tolist(), seed=9)
    land = QuadraticLandscape(c, a, gradient=torch.ones(P, dtype=torch.float64))
    dirs = [
        {n: torch.randn(v.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for n, v in c.items()}
        for i in range(4)
    ]
    given = mc_curvature(land, eps=eps, directions=dirs)
    for d, value in zip(dirs, given.curvatures):
        x = torch.cat([d[n].reshape(-1) for n in c])
        assert value == pytest.approx(float(x @ a @ x / (x @ x)), rel=1e-9)  # exact for any eps
    rand = mc_curvature(land, eps=eps, n_directions=400, seed=1)
    assert abs(rand.mean - float(torch.trace(a)) / P) <= 3 * rand.std / np.sqrt(400)
    neg = mc_curvature(QuadraticLandscape(c, -torch.eye(P, dtype=torch.float64)), eps=eps, n_directions=5)
    assert neg.frac_negative == 1.0


# --- the model landscape ---------------------------------------------------------------------------------------


def test_model_curvature_matches_the_dense_hessian_quadratic_form() -> None:
    model, data = tiny_mlp(0), tiny_data(40)
    h = dense_hessian(model, data)
    params = get_params(model)
    dirs = [
        {
            n: torch.randn(p.shape, generator=torch.Generator().manual_seed(10 + i), dtype=torch.float64)
            for n, p in params.items()
        }
        for i in range(3)
    ]
    res = mc_curvature(ModelLandscape(model, data), eps=1e-3, directions=dirs)
    for d, value in zip(dirs, res.curvatures):
        x = torch.cat([d[n].reshape(-1) for n in params])
        assert value == pytest.approx(float(x @ h @ x / (x @ x)), rel=1e-5, abs=1e-7)


def test_ragged_last_batch_does_not_bias_sharpness() -> None:
    model, data = tiny_mlp(1), tiny_data(40)
    ragged, whole = ModelLandscape(model, data), ModelLandscape(model, one_batch(data))
    a, b = average_sharpness(ragged, eps=0.1, n_samples=4), average_sharpness(whole, eps=0.1, n_samples=4)
    np.testing.assert_allclose(a.increases, b.increases, rtol=1e-10, atol=1e-13)
    assert worst_sharpness(ragged, eps=0.1, steps=3).increase == pytest.approx(
        worst_sharpness(whole, eps=0.1, steps=3).increase, rel=1e-10
    )
    assert mc_curvature(ragged, eps=0.05, n_directions=3).mean == pytest.approx(
        mc_curvature(whole, eps=0.05, n_directions=3).mean, rel=1e-8
    )


def test_gradient_ascent_finds_a_sharper_direction_than_random_ones() -> None:
    model, data = tiny_mlp(2), tiny_data(40)
    land = ModelLandscape(model, data)
    avg = average_sharpness(land, eps=0.2, n_samples=8, seed=0)
    worst = worst_sharpness(land, eps=0.2, steps=8, seed=0)
    assert worst.increase > avg.max > avg.mean - 1e-12
    assert worst.losses.max() - worst.base_loss == pytest.approx(worst.increase)


def test_bn_model_sharpness_is_repeatable_and_zero_at_zero_radius() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, in_shape=(3, 8, 8), channels=3, batchnorm=True).double()
    data = image_data(12, dtype=torch.float64)
    land = ModelLandscape(model, data)
    first = average_sharpness(land, eps=0.05, n_samples=3, seed=4)
    again = average_sharpness(ModelLandscape(model, data), eps=0.05, n_samples=3, seed=4)
    np.testing.assert_array_equal(first.increases, again.increases)
    # The centre is evaluated under the same BN policy as perturbed points, so a vanishing radius gives ~0.
    tiny = average_sharpness(land, eps=1e-9, n_samples=2, seed=4)
    assert np.abs(tiny.increases).max() < 1e-7
    w1, w2 = worst_sharpness(land, eps=0.05, steps=2), worst_sharpness(land, eps=0.05, steps=2)
    assert w1.increase == w2.increase


def test_bad_input_raises_clear_value_errors() -> None:
    land = QuadraticLandscape(center(), torch.eye(P, dtype=torch.float64))
    for fn in (
        lambda e: average_sharpness(land, eps=e),
        lambda e: worst_sharpness(land, eps=e),
        lambda e: mc_curvature(land, eps=e),
    ):
        with pytest.raises(ValueError, match="eps: expected a finite number > 0, got 0"):
            fn(0)
        with pytest.raises(ValueError, match="eps: expected a finite number > 0, got -0.1"):
            fn(-0.1)
    with pytest.raises(ValueError, match="n_samples: expected an integer > 0, got 0"):
        average_sharpness(land, eps=0.1, n_samples=0)
    with pytest.raises(ValueError, match="norm: expected one of 'l2', 'linf', got 'l1'"):
        worst_sharpness(land, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="norm: expected 'l2' with filter scaling"):
        worst_sharpness(land, eps=0.1, norm="linf", scaling="filter")
    with pytest.raises(ValueError, match="direction: expected a non-zero vector"):
        mc_curvature(land, eps=0.1, directions=[{n: torch.zeros_like(v) for n, v in center().items()}])
    with pytest.raises(ValueError, match="data: expected a non-empty dataset"):
        ModelLandscape(tiny_mlp(0), [])


def test_sharpness_and_grids_accept_a_dataset() -> None:
    from lgeom.data import build_dataset
    from lgeom.multipoint import evaluate_points

    ds = build_dataset("moons", "train", n_train=96, n_test=8, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=2, in_shape=(2,), depth=1, width=8)
    batches = [(ds.inputs, ds.targets)]
    a = average_sharpness(ModelLandscape(model, ds), eps=0.1, n_samples=4, seed=0)
    b = average_sharpness(ModelLandscape(model, batches), eps=0.1, n_samples=4, seed=0)
    np.testing.assert_allclose(a.increases, b.increases, rtol=1e-5, atol=1e-7)
    points = [get_params(model)]
    assert evaluate_points(model, points, ds).loss[0] == pytest.approx(
        evaluate_points(model, points, batches).loss[0], rel=1e-6
    )
