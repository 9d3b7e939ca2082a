"""The plane through three points A, C, B of weight space (Garipov et al. 2018, Fig. 1) and the loss /
accuracy surface on a grid in it.

Coordinates: A is the origin, the first axis ``u`` points from A to B, the second ``v`` is C - A made
orthogonal to ``u`` (Gram-Schmidt); both have unit Euclidean norm over all parameters. So A = (0, 0),
B = (||B - A||, 0) and C = ((C - A) . u, ||C - A - ((C - A) . u) u||). A curve with one bend lies in this
plane; its points are projected onto it for the overlay (``curve_offplane`` says how far off they are).

BatchNorm statistics are recomputed at every grid point (the BN policy) and never shared between nearby
points, because sharing is not exact. At ``A + x u + y v`` the input of the first BatchNorm layer is affine in
``(x, y)`` (a convolution or linear layer is linear in its weights), so that layer's batch mean is affine and
its batch variance quadratic in ``(x, y)``, and three forward passes would give it exactly over the whole grid.
Every later BatchNorm layer, though, sees the output of a nonlinearity applied after grid-dependent
normalisation, and its statistics are no closed-form function of ``(x, y)``: they need a forward pass at the
point itself. Reusing a neighbour's would err by the order of the grid spacing (about 7% of ``||B - A||``
on a 21 x 21 grid), where the picture changes most. The first layer's exact shortcut would not save that
pass, which runs for the later layers anyway. So each point's statistics come from one forward pass over the
fixed BatchNorm batches, batched over a chunk of grid points (one vmapped forward per batch serves every point
of the chunk, :func:`lgeom.batchnorm.recompute_bn_stats_stacked`). What the plane costs is set by the samples
it is evaluated on (``lgeom.connect.ConnectSpec.plane_samples``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from lgeom import names
from lgeom._checks import (
    check_positive,
    check_positive_int,
    check_same_structure,
    expected,
)
from lgeom.data import Batches, as_batches
from lgeom.multipoint import evaluate_affine
from lgeom.params import ParamLayout, Params
from lgeom.progress import TASK_PLANE, Callback, ProgressEvent, emit, resolve_callbacks


@dataclass(frozen=True)
class PlaneBasis:
    """An orthonormal basis of the plane through A, C, B.

    Attributes:
        origin: A's parameters.
        u: unit direction from A towards B.
        v: unit direction of C - A orthogonal to ``u``.
        coords: ``{"a": (0, 0), "b": (x, 0), "c": (x, y)}`` in the basis (Euclidean units of weight space).
    """

    origin: Params
    u: Params
    v: Params
    coords: dict[str, tuple[float, float]]

    def project(self, point: Mapping[str, torch.Tensor]) -> tuple[float, float, float]:
        """``(x, y, distance from the plane)`` of a parameter point."""
        layout = ParamLayout.of(self.origin)
        d = _flat64(layout, point) - _flat64(layout, self.origin)
        u, v = _flat64(layout, self.u), _flat64(layout, self.v)
        x, y = float(d @ u), float(d @ v)
        return x, y, float((d - x * u - y * v).norm())


def _flat64(layout: ParamLayout, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([params[n].detach().reshape(-1).to(torch.float64) for n in layout.names])


def plane_basis(
    a: Mapping[str, torch.Tensor], c: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]
) -> PlaneBasis:
    """The orthonormal basis of the plane through A, C and B (computed in float64).

    Returns:
        :class:`PlaneBasis` with ``u``, ``v`` in A's dtype and device.

    Raises:
        ValueError: points of different architectures, A equal to B, or C on the line through A and B.
    """
    check_same_structure(a, b, first_name="A", second_name="B")
    check_same_structure(a, c, first_name="A", second_name="C")
    layout = ParamLayout.of(a)
    va, vb, vc = _flat64(layout, a), _flat64(layout, b), _flat64(layout, c)
    ab = vb - va
    dist_ab = float(ab.norm())
    if dist_ab == 0.0:
        raise expected("B", "a point different from A (the plane needs a direction from A to B)", "B == A")
    u = ab / dist_ab
    w = vc - va
    x_c = float(w @ u)
    v = w - x_c * u
    y_c = float(v.norm())
    if y_c <= 1e-12 * max(float(w.norm()), dist_ab):
        raise expected("C", "a point off the line through A and B", f"a point on it (distance {y_c:.3g})")
    v = v / y_c
    first = next(iter(a.values()))
    back = lambda vec: {n: t.to(first.device, first.dtype) for n, t in layout.unflatten(vec).items()}  # noqa: E731
    return PlaneBasis(
        origin={n: t.detach() for n, t in a.items()},
        u=back(u),
        v=back(v),
        coords={"a": (0.0, 0.0), "b": (dist_ab, 0.0), "c": (x_c, y_c)},
    )


@dataclass
class PlaneResult:
    """Loss and accuracy on a grid in the plane through A, C, B.

    Attributes:
        basis: the plane's :class:`PlaneBasis` (A, u, v and the coordinates of A, B, C).
        xs: grid coordinates along ``u`` (``nx``).
        ys: grid coordinates along ``v`` (``ny``).
        grids: ``"train_loss"``, ``"train_acc"``, ``"test_loss"``, ``"test_acc"`` (splits evaluated) ->
            arrays of shape ``(ny, nx)``; entry ``[j, i]`` is at ``(xs[i], ys[j])``; accuracy in percent.
        curve_ts, curve_xy, curve_offplane: t values, plane coordinates ``(n, 2)`` and distances from the
            plane of the curve's points (empty when no curve was given).
        method: how grid points were evaluated (``vmap``, ``loop``).
        samples: split -> number of samples each grid point was evaluated on (e.g. ``plane_samples``).
    """

    basis: PlaneBasis
    xs: np.ndarray
    ys: np.ndarray
    grids: dict[str, np.ndarray]
    curve_ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    curve_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    curve_offplane: np.ndarray = field(default_factory=lambda: np.zeros(0))
    method: str = ""
    samples: dict[str, int] = field(default_factory=dict)

    @property
    def coords(self) -> dict[str, tuple[float, float]]:
        """Plane coordinates of A, B and C."""
        return self.basis.coords

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything but the basis vectors as arrays, for ``np.savez``: ``xs``, ``ys``, each grid,
        ``a``, ``b``, ``c`` (coordinates), ``curve_ts``, ``curve_xy``, ``curve_offplane``, and
        ``<split>_samples`` (0-d integer arrays: the samples each grid point was evaluated on).
        """
        out: dict[str, np.ndarray] = {"xs": self.xs, "ys": self.ys}
        out.update(self.grids)
        out.update({names.split_column(split, names.SAMPLES): np.asarray(n) for split, n in self.samples.items()})
        for k, xy in self.basis.coords.items():
            out[k] = np.asarray(xy, dtype=np.float64)
        out.update(curve_ts=self.curve_ts, curve_xy=self.curve_xy, curve_offplane=self.curve_offplane)
        return out


def plane(
    model: nn.Module,
    a: Mapping[str, torch.Tensor],
    c: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    *,
    train: Batches | None = None,
    test: Batches | None = None,
    bn_batches: Batches | None = None,
    grid: int | tuple[int, int] = 21,
    margin: float = 0.2,
    min_aspect: float = 0.5,
    curve: object | None = None,
    curve_points: int = 61,
    chunk_size: int | None = None,
    method: str = "auto",
    callbacks: Sequence[Callback] | None = None,
    progress: bool = False,
) -> PlaneResult:
    """Train/test loss and accuracy on a grid in the plane through A, C and B.

    The grid spans the bounding box of A, B, C in plane coordinates, widened by ``margin`` times its
    extent on every side; its height (along ``v``) is then at least ``min_aspect`` times its width, grown
    evenly about its middle, so that the plane drawn at true scale (equal units on both axes) is not a sliver
    when C lies close to the line A-B. Grid points are evaluated in vmapped chunks
    (:func:`lgeom.multipoint.evaluate_affine`) under the BN policy (statistics recomputed at every point from
    ``bn_batches``).

    Args:
        model: the architecture (not mutated).
        a, c, b: parameter dicts of A, the control point C and B.
        train, test: batches (or map-style ``Dataset`` objects) to evaluate on (at least one).
        bn_batches: fixed training batches (or a ``Dataset``) for the BatchNorm recompute (BN models).
        grid: points per axis, ``n`` or ``(nx, ny)`` (each >= 2).
        margin: fraction of the extent added on each side (>= 0).
        min_aspect: smallest height / width of the grid (>= 0; 0 keeps the margin's box).
        curve: optional curve (``point(t)``) whose points are projected onto the plane for the overlay.
        curve_points: number of t values of the overlay.
        chunk_size, method: passed to :func:`lgeom.multipoint.evaluate_affine`.
        callbacks: receive :class:`~lgeom.progress.ProgressEvent` with task ``"plane"``.
        progress: add a tqdm bar.

    Returns:
        :class:`PlaneResult`.

    Raises:
        ValueError: no split, bad grid or margin, degenerate points (see :func:`plane_basis`), empty data,
            or a BN model without ``bn_batches``.
    """
    nx, ny = (grid, grid) if isinstance(grid, int) else tuple(grid)
    for name, n in (("grid nx", nx), ("grid ny", ny)):
        check_positive_int(name, n)
        if n < 2:
            raise expected(name, "at least 2 points per axis", n)
    check_positive("margin", margin, allow_zero=True)
    check_positive("min_aspect", min_aspect, allow_zero=True)
    check_positive_int("curve_points", curve_points)
    splits = {k: as_batches(v) for k, v in (("train", train), ("test", test)) if v is not None}
    if not splits:
        raise expected("splits", "train and/or test batches", None)
    if bn_batches is not None:
        bn_batches = as_batches(bn_batches)
    basis = plane_basis(a, c, b)
    pts = np.asarray(list(basis.coords.values()))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = hi - lo
    lo, hi = lo - margin * extent, hi + margin * extent
    grow = max(0.0, min_aspect * (hi[0] - lo[0]) - (hi[1] - lo[1])) / 2
    xs = np.linspace(lo[0], hi[0], nx)
    ys = np.linspace(lo[1] - grow, hi[1] + grow, ny)
    gx, gy = np.meshgrid(xs, ys)  # (ny, nx)
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1)

    cbs = resolve_callbacks(callbacks, progress, TASK_PLANE)
    total = coords.shape[0]
    emit(cbs, ProgressEvent(TASK_PLANE, "start", 0, total))
    bridge = [lambda e: emit(cbs, ProgressEvent(TASK_PLANE, "step", e.step, total))] if cbs else None
    results = evaluate_affine(
        model,
        basis.origin,
        [basis.u, basis.v],
        coords,
        splits,
        bn_batches=bn_batches,
        chunk_size=chunk_size,
        method=method,
        callbacks=bridge,
    )
    emit(cbs, ProgressEvent(TASK_PLANE, "end", total, total))
    grids: dict[str, np.ndarray] = {}
    for split, res in results.items():
        grids[names.split_column(split, "loss")] = res.loss.reshape(ny, nx)
        grids[names.split_column(split, "acc")] = res.acc.reshape(ny, nx)
    out = PlaneResult(
        basis=basis,
        xs=xs,
        ys=ys,
        grids=grids,
        method=next(iter(results.values())).method,
        samples={split: int(res.n) for split, res in results.items()},
    )
    if curve is not None:
        ts = np.linspace(0.0, 1.0, curve_points)
        proj = np.asarray([basis.project(curve.point(float(t))) for t in ts])  # type: ignore[attr-defined]
        out.curve_ts, out.curve_xy, out.curve_offplane = ts, proj[:, :2], proj[:, 2]
    return out
