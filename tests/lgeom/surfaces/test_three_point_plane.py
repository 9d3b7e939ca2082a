"""The plane through A, C, B (:mod:`lgeom.surfaces.three_point_plane`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgeom.curves import Bezier
from lgeom.evaluate import evaluate, evaluate_point
from lgeom.surfaces import PlaneResult, plane, plane_basis
from tests.lgeom.cases import acb_points, random_batches


def _flat(d: dict) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in d.values()])


def test_basis_is_orthonormal_and_reproduces_the_points() -> None:
    _, a, c, b = acb_points("mlp", (4,), width=6)
    basis = plane_basis(a, c, b)
    u, v = _flat(basis.u), _flat(basis.v)
    assert float(u @ u) == pytest.approx(1.0) and float(v @ v) == pytest.approx(1.0)
    assert float(u @ v) == pytest.approx(0.0, abs=1e-12)
    for key, point in (("a", a), ("b", b), ("c", c)):
        x, y = basis.coords[key]
        rebuilt = _flat(a) + x * u + y * v
        torch.testing.assert_close(rebuilt, _flat(point), rtol=0, atol=1e-10)
        px, py, off = basis.project(point)
        assert (px, py) == pytest.approx((x, y)) and off == pytest.approx(0.0, abs=1e-10)
    assert basis.coords["b"][1] == 0.0 and basis.coords["c"][1] > 0
    assert basis.coords["b"][0] == pytest.approx(float((_flat(b) - _flat(a)).norm()))


def test_degenerate_points_are_rejected() -> None:
    _, a, _, b = acb_points("mlp", (4,), width=6)
    on_line = {n: 0.25 * a[n] + 0.75 * b[n] for n in a}
    with pytest.raises(ValueError, match="C: expected a point off the line through A and B"):
        plane_basis(a, on_line, b)
    with pytest.raises(ValueError, match="B: expected a point different from A"):
        plane_basis(a, b, a)
    model, a, c, b = acb_points("mlp", (4,), width=6)
    with pytest.raises(ValueError, match="splits: expected train and/or test batches"):
        plane(model, a, c, b)
    with pytest.raises(ValueError, match="grid nx: expected at least 2 points"):
        plane(model, a, c, b, test=random_batches((4,), 1, 4, 0), grid=(1, 5))


def test_grid_values_match_direct_evaluation() -> None:
    model, a, c, b = acb_points("mlp", (4,), width=6)
    train, test = random_batches((4,), 2, 9, 1), random_batches((4,), 3, 7, 2)
    curve = Bezier(a, b, [c])
    res = plane(
        model, a, c, b, train=train, test=test, grid=(4, 3), margin=0.25, min_aspect=0, curve=curve, curve_points=9
    )
    assert isinstance(res, PlaneResult) and res.method == "vmap"
    assert res.grids["test_acc"].shape == (3, 4) and res.xs.shape == (4,) and res.ys.shape == (3,)
    # the grid spans the bounding box of A, B, C widened by 25% of its extent on each side
    xb, (xc, yc) = res.coords["b"][0], res.coords["c"]
    x_lo, x_hi = min(0.0, xc), max(xb, xc)
    assert res.xs[0] == pytest.approx(x_lo - 0.25 * (x_hi - x_lo)) and res.xs[-1] == pytest.approx(
        x_hi + 0.25 * (x_hi - x_lo)
    )
    assert res.ys[0] == pytest.approx(-0.25 * yc) and res.ys[-1] == pytest.approx(1.25 * yc)
    u, v = res.basis.u, res.basis.v
    for j, i in ((0, 0), (2, 3), (1, 2)):
        point = {n: a[n] + res.xs[i] * u[n] + res.ys[j] * v[n] for n in a}
        for split, data in (("train", train), ("test", test)):
            direct = evaluate(model, data, params=point)
            assert res.grids[f"{split}_loss"][j, i] == pytest.approx(direct.loss, rel=1e-10)
            assert res.grids[f"{split}_acc"][j, i] == pytest.approx(direct.acc)
    # a one-bend Bezier lies in the plane: the overlay starts at A, ends at B, passes (xc/2, yc/2) at t = 1/2
    assert np.abs(res.curve_offplane).max() < 1e-9
    np.testing.assert_allclose(res.curve_xy[0], [0.0, 0.0], atol=1e-10)
    np.testing.assert_allclose(res.curve_xy[-1], [xb, 0.0], atol=1e-10)
    np.testing.assert_allclose(res.curve_xy[4], [0.25 * xb + 0.5 * xc, 0.5 * yc], atol=1e-10)
    arrays = res.to_arrays()
    assert {"xs", "ys", "train_loss", "test_acc", "a", "b", "c", "curve_xy"} <= set(arrays)


def test_a_flat_triangle_gets_a_grid_tall_enough_to_draw_at_true_scale() -> None:
    model, a, _, b = acb_points("mlp", (4,), width=6)
    g = torch.Generator().manual_seed(7)
    # C barely off the middle of the segment A-B: the margin's box alone would be ~50 times wider than tall
    c = {n: 0.5 * (a[n] + b[n]) + 0.01 * torch.randn(a[n].shape, generator=g, dtype=a[n].dtype) for n in a}
    test = random_batches((4,), 1, 5, 3)
    res = plane(model, a, c, b, test=test, grid=(5, 4), margin=0.1, min_aspect=0.5)
    yc = res.coords["c"][1]
    width, height = res.xs[-1] - res.xs[0], res.ys[-1] - res.ys[0]
    assert height == pytest.approx(0.5 * width) and height > 10 * 1.2 * yc
    # grown evenly about the middle of the margin's box [-0.1 yc, 1.1 yc]
    assert (res.ys[0] + res.ys[-1]) / 2 == pytest.approx(0.5 * yc)
    tall = plane(model, a, c, b, test=test, grid=(5, 4), margin=0.1, min_aspect=0)
    assert tall.ys[0] == pytest.approx(-0.1 * yc) and tall.ys[-1] == pytest.approx(1.1 * yc)
    with pytest.raises(ValueError, match="min_aspect"):
        plane(model, a, c, b, test=test, min_aspect=-1.0)


def test_plane_with_batchnorm_recomputes_statistics_per_point() -> None:
    model, a, c, b = acb_points("cnn", (1, 6, 6), channels=3, batchnorm=True)
    test, bn = random_batches((1, 6, 6), 2, 5, 3), random_batches((1, 6, 6), 2, 6, 4)
    res = plane(model, a, c, b, test=test, bn_batches=bn, grid=3, margin=0.1)
    assert res.method == "vmap"
    for j, i in ((0, 0), (1, 2)):
        point = {n: a[n] + res.xs[i] * res.basis.u[n] + res.ys[j] * res.basis.v[n] for n in a}
        ref = evaluate_point(model, point, {"test": test}, bn_batches=bn)["test"]
        assert res.grids["test_loss"][j, i] == pytest.approx(ref.loss, rel=1e-9)
    with pytest.raises(ValueError, match="bn_batches: expected training batches"):
        plane(model, a, c, b, test=test)
