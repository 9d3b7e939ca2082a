"""Metrics along a path ``phi(t)``, t in [0, 1], and the triangle geometry of a curve.

Every function takes plain sequences / NumPy arrays / tensors so it can be checked by hand. Definitions
(DESIGN.md, the metric contract):

* ``loss_barrier = max_t L(t) - max(L(0), L(1))``
* ``loss_barrier_interp = max_t [L(t) - ((1 - t) L(0) + t L(1))]``
* ``acc_drop = max_t acc(t) - min_t acc(t)`` (percentage points)
* ``acc_auc`` = area between the accuracy curve and its maximum, integrated (trapezoid rule) over t between
  the argmin and the argmax of accuracy (percentage points x t)
* generalisation gap at t: ``gen_gap(t) = test_loss(t) - train_loss(t)`` (loss units) and
  ``gen_gap_acc(t) = train_acc(t) - test_acc(t)`` (percentage points)
* triangle A, C, B: ``dist_ac = ||A - C||``, ``dist_bc``, ``dist_ab``, ``angle_acb_deg`` (the angle at C, in
  degrees), ``area = 1/2 ||A - C|| ||B - C|| sin(angle)``.

The first value of a path is t = 0 (endpoint A) and the last t = 1 (endpoint B).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from lgeom import names
from lgeom._checks import check_same_structure, expected
from lgeom.table import Table

ArrayLike = Sequence[float] | np.ndarray | torch.Tensor
Point = Mapping[str, torch.Tensor] | torch.Tensor | np.ndarray | Sequence[float]
SPLITS = names.SPLITS


def _values(what: str, values: ArrayLike) -> np.ndarray:
    arr = np.asarray(values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise expected(what, "a non-empty 1-D sequence of numbers", f"shape {arr.shape}")
    return arr


def _ts(ts: ArrayLike | None, n: int) -> np.ndarray:
    if ts is None:
        return np.linspace(0.0, 1.0, n)
    t = _values("ts", ts)
    if t.size != n:
        raise expected("ts", f"{n} values of t (one per path value)", t.size)
    bad = t[~((t >= 0.0) & (t <= 1.0))]
    if bad.size:
        raise expected("t", "a value in [0, 1]", float(bad[0]))
    if np.any(np.diff(t) <= 0):
        raise expected("ts", "strictly increasing values of t", t.tolist())
    return t


def loss_barrier(losses: ArrayLike) -> float:
    """``max_t L(t) - max(L(0), L(1))``: how far the path climbs above the higher endpoint (>= 0).

    Args:
        losses: loss at each point of the path, from t = 0 to t = 1.

    Returns:
        The barrier in loss units (0 when no point is above both endpoints).

    Raises:
        ValueError: empty or non-1-D input.
    """
    loss = _values("losses", losses)
    return float(np.max(loss) - max(loss[0], loss[-1]))


def loss_barrier_interp(losses: ArrayLike, ts: ArrayLike | None = None) -> float:
    """``max_t [L(t) - ((1 - t) L(0) + t L(1))]``: the largest excess over linear interpolation of the
    endpoint losses (>= 0, since t = 0 contributes 0).

    Args:
        losses: loss at each point of the path.
        ts: the t of each point (default: evenly spaced from 0 to 1); strictly increasing, within [0, 1].

    Returns:
        The barrier in loss units.

    Raises:
        ValueError: empty input, ``ts`` of another length, t outside [0, 1] or not increasing.
    """
    loss = _values("losses", losses)
    t = _ts(ts, loss.size)
    return float(np.max(loss - ((1.0 - t) * loss[0] + t * loss[-1])))


def acc_drop(accs: ArrayLike) -> float:
    """``max_t acc(t) - min_t acc(t)`` in percentage points (accuracy given in percent).

    Raises:
        ValueError: empty or non-1-D input.
    """
    acc = _values("accs", accs)
    return float(np.max(acc) - np.min(acc))


def acc_auc(accs: ArrayLike, ts: ArrayLike | None = None) -> float:
    """Area between the accuracy curve and its maximum over t between the argmin and argmax of accuracy.

    ``integral_{t_lo}^{t_hi} (max acc - acc(t)) dt`` with the trapezoid rule, where ``t_lo, t_hi`` are the
    t of the (first) minimum and (first) maximum of accuracy in increasing order.

    Args:
        accs: accuracy (percent) at each point of the path.
        ts: the t of each point (default: evenly spaced from 0 to 1).

    Returns:
        The area in percentage points x t (0 for a constant curve).

    Raises:
        ValueError: empty input, ``ts`` of another length, t outside [0, 1] or not increasing.
    """
    acc = _values("accs", accs)
    t = _ts(ts, acc.size)
    i_min, i_max = int(np.argmin(acc)), int(np.argmax(acc))
    lo, hi = min(i_min, i_max), max(i_min, i_max)
    if hi == lo:
        return 0.0
    gap = acc[i_max] - acc[lo : hi + 1]
    seg = t[lo : hi + 1]
    return float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(seg)))


def _difference(first_what: str, first: ArrayLike, second_what: str, second: ArrayLike) -> np.ndarray:
    a, b = _values(first_what, first), _values(second_what, second)
    if a.size != b.size:
        raise expected(second_what, f"{a.size} values (as many as {first_what})", b.size)
    return a - b


def gen_gap(train_losses: ArrayLike, test_losses: ArrayLike) -> np.ndarray:
    """Generalisation gap at every point: ``test_loss(t) - train_loss(t)`` (loss units).

    Raises:
        ValueError: empty inputs or inputs of different lengths.
    """
    return -_difference("train_losses", train_losses, "test_losses", test_losses)


def gen_gap_acc(train_accs: ArrayLike, test_accs: ArrayLike) -> np.ndarray:
    """Generalisation gap in accuracy at every point: ``train_acc(t) - test_acc(t)`` (percentage points).

    Raises:
        ValueError: empty inputs or inputs of different lengths.
    """
    return _difference("train_accs", train_accs, "test_accs", test_accs)


def path_metrics(table: Any, path: str | None = None) -> dict[str, float]:
    """Every scalar path metric of a path table (column ``t`` plus ``<split>_loss`` / ``<split>_acc``).

    Args:
        table: a :class:`~lgeom.table.Table` or any mapping of column name -> values, as returned by
            :func:`~lgeom.multipoint.evaluate_path`.
        path: the path's name (``linear``, ``bezier`` ...): keys are then the metric contract's full names
            (:mod:`lgeom.names`); without it they lack the path part.

    Returns:
        ``{"<split>.loss_barrier", "<split>.loss_barrier_interp", "<split>.acc_drop", "<split>.acc_auc"}``
        for each split present, plus ``"gen_gap_max"`` (max over t of test minus train loss) and
        ``"gen_gap_acc_max"`` (max over t of train minus test accuracy, percentage points) when both splits
        are present; each prefixed with ``<path>.`` when ``path`` is given.

    Raises:
        ValueError: no ``t`` column or no split columns.
    """
    columns = list(table.names) if hasattr(table, "names") else list(table)
    if "t" not in columns:
        raise expected("path table", "a column 't'", columns)
    ts = table["t"]
    loss_col = {s: names.split_column(s, "loss") for s in SPLITS}
    acc_col = {s: names.split_column(s, "acc") for s in SPLITS}
    out: dict[str, float] = {}
    for split in SPLITS:
        if loss_col[split] not in columns:
            continue
        loss, acc = table[loss_col[split]], table[acc_col[split]]
        out[names.barrier_metric(path, split, "loss_barrier")] = loss_barrier(loss)
        out[names.barrier_metric(path, split, "loss_barrier_interp")] = loss_barrier_interp(loss, ts)
        out[names.barrier_metric(path, split, "acc_drop")] = acc_drop(acc)
        out[names.barrier_metric(path, split, "acc_auc")] = acc_auc(acc, ts)
    if not out:
        raise expected("path table", "columns train_loss/train_acc and/or test_loss/test_acc", columns)
    train, test = SPLITS
    if loss_col[train] in columns and loss_col[test] in columns:
        out[names.gap_metric(path, "gen_gap_max")] = float(
            np.max(gen_gap(table[loss_col[train]], table[loss_col[test]]))
        )
        out[names.gap_metric(path, "gen_gap_acc_max")] = float(
            np.max(gen_gap_acc(table[acc_col[train]], table[acc_col[test]]))
        )
    return out


def with_gen_gap(table: Any) -> Any:
    """``table`` (a :class:`~lgeom.table.Table`) with columns ``gen_gap`` and ``gen_gap_acc`` added when both
    splits are present; returned unchanged otherwise.
    """
    train, test = SPLITS
    loss = {s: names.split_column(s, "loss") for s in SPLITS}
    acc = {s: names.split_column(s, "acc") for s in SPLITS}
    if loss[train] not in table.names or loss[test] not in table.names:
        return table
    cols = dict(table.columns)
    gap, gap_acc = names.GAP_COLUMNS
    cols[gap] = gen_gap(table[loss[train]], table[loss[test]])
    cols[gap_acc] = gen_gap_acc(table[acc[train]], table[acc[test]])
    return Table(cols)


# --- triangle ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Triangle:
    """Geometry of the triangle A, C, B in weight space (Euclidean norms over all parameters).

    Attributes:
        dist_ac, dist_bc, dist_ab: side lengths.
        angle_acb_deg: the angle at C in degrees (NaN when C coincides with A or B).
        area: ``1/2 ||A - C|| ||B - C|| sin(angle_acb)``.
    """

    dist_ac: float
    dist_bc: float
    dist_ab: float
    angle_acb_deg: float
    area: float

    def as_dict(self) -> dict[str, float]:
        """The five numbers keyed by field name."""
        return asdict(self)


def _flat(what: str, point: Point) -> torch.Tensor:
    if isinstance(point, Mapping):
        if not point:
            raise expected(what, "a non-empty parameter dict", {})
        return torch.cat([v.detach().reshape(-1).to("cpu", torch.float64) for v in point.values()])
    if isinstance(point, torch.Tensor):
        return point.detach().reshape(-1).to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(point, dtype=np.float64)).reshape(-1)


def triangle(a: Point, c: Point, b: Point) -> Triangle:
    """Side lengths, the angle at C and the area of the triangle A, C, B.

    Args:
        a, c, b: parameter dicts (same names and shapes, compared in ``a``'s key order) or flat vectors.

    Returns:
        :class:`Triangle` (computed in float64).

    Raises:
        ValueError: points of different sizes or parameter names.
    """
    if isinstance(a, Mapping) and isinstance(c, Mapping) and isinstance(b, Mapping):
        check_same_structure(a, c, first_name="A", second_name="C")
        check_same_structure(a, b, first_name="A", second_name="B")
        c = {n: c[n] for n in a}
        b = {n: b[n] for n in a}
    va, vc, vb = _flat("A", a), _flat("C", c), _flat("B", b)
    if not (va.numel() == vc.numel() == vb.numel()) or va.numel() == 0:
        raise expected("points", "A, C and B of the same non-zero size", (va.numel(), vc.numel(), vb.numel()))
    u, w = va - vc, vb - vc
    d_ac, d_bc, d_ab = float(u.norm()), float(w.norm()), float((va - vb).norm())
    if d_ac == 0.0 or d_bc == 0.0:
        return Triangle(d_ac, d_bc, d_ab, math.nan, 0.0)
    cos = float(torch.dot(u, w)) / (d_ac * d_bc)
    angle = math.acos(min(1.0, max(-1.0, cos)))
    return Triangle(d_ac, d_bc, d_ab, math.degrees(angle), 0.5 * d_ac * d_bc * math.sin(angle))
