"""Path metrics and triangle geometry on hand-made inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lgeom.path import (
    acc_auc,
    acc_drop,
    gen_gap,
    gen_gap_acc,
    loss_barrier,
    loss_barrier_interp,
    path_metrics,
    triangle,
    with_gen_gap,
)
from lgeom.table import Table


def test_loss_barrier_by_hand() -> None:
    assert loss_barrier([1.0, 3.0, 2.0]) == pytest.approx(1.0)
    assert loss_barrier([2.0, 1.5, 1.0]) == 0.0  # never above the higher endpoint
    assert loss_barrier(np.array([0.5, 0.4, 0.9, 0.6])) == pytest.approx(0.9 - 0.6)
    assert loss_barrier(torch.tensor([1.0])) == 0.0


def test_loss_barrier_interp_by_hand() -> None:
    # L(t) - ((1-t) L0 + t L1) at t = 0, 1/2, 1: 0, 3 - 1.5, 0
    assert loss_barrier_interp([1.0, 3.0, 2.0]) == pytest.approx(1.5)
    # uneven ts: at t = 0.25 the interpolation is 0.75 * 1 + 0.25 * 3 = 1.5, excess 1.0; at 0.5: 2.5 - 2 = 0.5
    assert loss_barrier_interp([1.0, 2.5, 2.5, 3.0], [0.0, 0.25, 0.5, 1.0]) == pytest.approx(1.0)
    # a straight line between the endpoints has no excess
    assert loss_barrier_interp([1.0, 2.0, 3.0]) == pytest.approx(0.0, abs=1e-15)


def test_acc_drop_by_hand() -> None:
    assert acc_drop([90.0, 70.0, 80.0]) == pytest.approx(20.0)
    assert acc_drop([50.0, 50.0]) == 0.0


def test_acc_auc_by_hand() -> None:
    ts = [0.0, 1 / 3, 2 / 3, 1.0]
    # argmin at t = 1/3 (70), argmax at t = 1 (95): gaps 25, 15, 0 -> (25 + 15)/2/3 + (15 + 0)/2/3
    assert acc_auc([90.0, 70.0, 80.0, 95.0], ts) == pytest.approx(27.5 / 3)
    # argmax before argmin: max 95 at t = 0, min 60 at t = 2/3: gaps 0, 15, 35 -> 7.5/3 + 25/3
    assert acc_auc([95.0, 80.0, 60.0, 90.0], ts) == pytest.approx(32.5 / 3)
    assert acc_auc([80.0, 80.0, 80.0]) == 0.0
    # default ts are evenly spaced on [0, 1]
    assert acc_auc([90.0, 70.0, 80.0, 95.0]) == pytest.approx(acc_auc([90.0, 70.0, 80.0, 95.0], ts))


def test_generalisation_gap_by_hand() -> None:
    np.testing.assert_allclose(gen_gap([0.1, 0.2], [0.3, 0.25]), [0.2, 0.05])
    np.testing.assert_allclose(gen_gap_acc([99.0, 95.0], [90.0, 94.0]), [9.0, 1.0])


def test_path_metrics_of_a_table() -> None:
    table = Table(
        {
            "t": [0.0, 0.5, 1.0],
            "train_loss": [0.1, 0.5, 0.2],
            "train_acc": [100.0, 80.0, 98.0],
            "test_loss": [0.3, 0.9, 0.35],
            "test_acc": [90.0, 70.0, 89.0],
        }
    )
    m = path_metrics(table)
    assert m["barrier/train/loss"] == pytest.approx(0.3)
    assert m["barrier/test/loss"] == pytest.approx(0.55)
    assert m["barrier/test/loss_interp"] == pytest.approx(0.9 - 0.325)
    assert m["barrier/train/acc_drop"] == pytest.approx(20.0)
    assert m["barrier/test/acc_auc"] == pytest.approx((0 + 20) / 2 * 0.5)
    assert m["gap/gen_gap_max"] == pytest.approx(0.4)
    assert m["gap/gen_gap_acc_max"] == pytest.approx(10.0)
    extended = with_gen_gap(table)
    np.testing.assert_allclose(extended["gen_gap"], [0.2, 0.4, 0.15])
    only_test = path_metrics({"t": [0.0, 1.0], "test_loss": [1.0, 1.0], "test_acc": [50.0, 50.0]})
    assert set(only_test) == {
        "barrier/test/loss",
        "barrier/test/loss_interp",
        "barrier/test/acc_drop",
        "barrier/test/acc_auc",
    }


def test_triangle_right_angle_by_hand() -> None:
    # A = (3, 0), C = (0, 0), B = (0, 4): a 3-4-5 triangle with the right angle at C
    tri = triangle([3.0, 0.0], [0.0, 0.0], [0.0, 4.0])
    assert (tri.dist_ac, tri.dist_bc, tri.dist_ab) == pytest.approx((3.0, 4.0, 5.0))
    assert tri.angle_acb_deg == pytest.approx(90.0)
    assert tri.area == pytest.approx(6.0)


def test_triangle_of_parameter_dicts() -> None:
    # an equilateral triangle of side 2 spread over two tensors: angle 60 degrees, area sqrt(3)
    a = {"w": torch.tensor([0.0, 0.0]), "b": torch.tensor([[0.0]])}
    c = {"w": torch.tensor([2.0, 0.0]), "b": torch.tensor([[0.0]])}
    b = {"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([[math.sqrt(3.0)]])}
    tri = triangle(a, c, b)
    assert tri.angle_acb_deg == pytest.approx(60.0)
    assert tri.area == pytest.approx(math.sqrt(3.0))
    assert tri.as_dict()["dist_ab"] == pytest.approx(2.0)
    # the apex on the segment: a straight angle and no area
    flat = triangle([0.0, 0.0], [1.0, 0.0], [3.0, 0.0])
    assert flat.angle_acb_deg == pytest.approx(180.0) and flat.area == pytest.approx(0.0, abs=1e-12)


def test_degenerate_triangle_has_no_angle() -> None:
    tri = triangle([1.0, 1.0], [1.0, 1.0], [0.0, 0.0])
    assert math.isnan(tri.angle_acb_deg) and tri.area == 0.0 and tri.dist_ab == pytest.approx(math.sqrt(2.0))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="losses: expected a non-empty 1-D sequence"):
        loss_barrier([])
    with pytest.raises(ValueError, match="accs: expected a non-empty 1-D sequence"):
        acc_drop(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="ts: expected 3 values of t"):
        loss_barrier_interp([1.0, 2.0, 3.0], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"t: expected a value in \[0, 1\], got 1.5"):
        acc_auc([1.0, 2.0], [0.0, 1.5])
    with pytest.raises(ValueError, match="ts: expected strictly increasing"):
        acc_auc([1.0, 2.0, 3.0], [0.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="test_losses: expected 2 values"):
        gen_gap([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="points: expected A, C and B of the same non-zero size"):
        triangle([0.0, 1.0], [0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="parameters of A and C differ"):
        triangle({"w": torch.zeros(2)}, {"v": torch.zeros(2)}, {"w": torch.zeros(2)})
    with pytest.raises(ValueError, match="path table: expected a column 't'"):
        path_metrics({"test_loss": [1.0]})
