"""The PCA plane of a training trajectory (Li et al. 2018, section 7).

Snapshots ``w_0 .. w_n`` (``TrainResult.snapshots``, flat vectors) are taken relative to the final point:
``D_i = w_i - w_final``. The plane through ``w_final`` is spanned by the top two principal components of the
rows ``D_i`` (centred PCA, from the ``n x n`` Gram matrix in float64). Every snapshot is projected onto it,
with its residual distance to the plane; the loss is evaluated on a grid covering the projections, and the
true loss at the snapshots is reported beside the loss at their projections, which shows how faithful the
2-D picture is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lgeom._checks import check_positive, check_positive_int, expected
from lgeom.data import Batches, as_batches
from lgeom.multipoint import evaluate_points
from lgeom.params import ParamLayout, Params, get_params
from lgeom.surfaces.slices import grid_losses

__all__ = ["PCAPlaneResult", "pca_directions", "pca_plane"]


@dataclass(frozen=True)
class PCAPlaneResult:
    """Loss on the PCA plane of a trajectory.

    Attributes:
        xs, ys: grid coordinates along the first and second component (Euclidean weight-space units).
        loss, acc: ``(len(xs), len(ys))`` mean cross-entropy (nats) and accuracy (percent); ``loss[i, j]``
            at ``w_final + xs[i] u1 + ys[j] u2``.
        components: ``(2, P)`` orthonormal principal directions (rows), float64 on the CPU.
        explained_variance_ratio: the two components' shares of the trajectory's variance.
        coords: ``(n, 2)`` projections of ``w_i - w_final`` onto the components.
        residuals: ``(n,)`` distances ``||D_i - projection||`` of each snapshot from the plane.
        relative_residuals: ``residuals / ||D_i||`` (0 where ``D_i = 0``).
        snapshot_loss, snapshot_acc: the true loss and accuracy at every snapshot.
        projected_loss: the loss at every snapshot's projection onto the plane.
        steps: the snapshots' training steps when given.
    """

    xs: np.ndarray
    ys: np.ndarray
    loss: np.ndarray
    acc: np.ndarray
    components: torch.Tensor
    explained_variance_ratio: np.ndarray
    coords: np.ndarray
    residuals: np.ndarray
    relative_residuals: np.ndarray
    snapshot_loss: np.ndarray
    snapshot_acc: np.ndarray
    projected_loss: np.ndarray
    steps: np.ndarray | None = None

    def to_arrays(self) -> dict[str, Any]:
        """Arrays for an ``.npz`` file (components left out: they are as large as the model)."""
        out = {
            k: getattr(self, k)
            for k in (
                "xs",
                "ys",
                "loss",
                "acc",
                "explained_variance_ratio",
                "coords",
                "residuals",
                "relative_residuals",
                "snapshot_loss",
                "snapshot_acc",
                "projected_loss",
            )
        }
        if self.steps is not None:
            out["steps"] = self.steps
        return out


def _as_matrix(snapshots: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    if isinstance(snapshots, torch.Tensor):
        if snapshots.dim() != 2:
            raise expected("snapshots", "an (n, P) tensor or a list of flat vectors", tuple(snapshots.shape))
        return snapshots.detach().to("cpu", torch.float64)
    rows = [s.detach().reshape(-1).to("cpu", torch.float64) for s in snapshots]
    if len({r.numel() for r in rows}) > 1:
        raise expected("snapshots", "flat vectors of equal length", sorted({r.numel() for r in rows}))
    return torch.stack(rows) if rows else torch.empty(0, 0, dtype=torch.float64)


def pca_directions(
    snapshots: Sequence[torch.Tensor] | torch.Tensor, final: torch.Tensor | None = None
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """Top-2 principal directions of ``w_i - w_final`` and the snapshots' coordinates in them.

    Returns:
        ``(components (2, P), explained_variance_ratio (2,), coords (n, 2), residuals (n,))``, float64.

    Raises:
        ValueError: fewer than three snapshots, mismatched lengths, or a trajectory without two directions
            of variance.
    """
    w = _as_matrix(snapshots)
    if w.shape[0] < 3:
        raise expected("snapshots", "at least 3 trajectory snapshots (set train.snapshot_every > 0)", w.shape[0])
    end = w[-1] if final is None else final.detach().reshape(-1).to("cpu", torch.float64)
    if end.numel() != w.shape[1]:
        raise expected("final", f"a flat vector of {w.shape[1]} elements", end.numel())
    d = w - end
    centred = d - d.mean(dim=0, keepdim=True)
    evals, evecs = torch.linalg.eigh(centred @ centred.T)
    evals, evecs = evals.flip(0).clamp_min(0.0), evecs.flip(1)
    if float(evals[1]) <= 1e-12 * max(float(evals[0]), 1e-300):
        raise expected("snapshots", "a trajectory spanning at least two directions", "fewer")
    comps = (centred.T @ evecs[:, :2]) / evals[:2].sqrt()
    comps = torch.linalg.qr(comps).Q.T  # re-orthonormalise against rounding
    coords = d @ comps.T
    residuals = (d - coords @ comps).norm(dim=1)
    ratio = (evals[:2] / evals.sum()).numpy()
    return comps, ratio, coords.numpy(), residuals.numpy()


def pca_plane(
    model: nn.Module,
    snapshots: Sequence[torch.Tensor] | torch.Tensor,
    data: Batches,
    *,
    final: Mapping[str, torch.Tensor] | None = None,
    steps: Sequence[int] | None = None,
    n_points: int = 21,
    margin: float = 0.2,
    bn_batches: Batches | None = None,
    progress: bool = False,
) -> PCAPlaneResult:
    """Loss surface on the plane of the trajectory's top two principal components through the final point.

    Args:
        model: the architecture (its parameter names/shapes define the flat layout; not mutated).
        snapshots: flat parameter vectors along training (``TrainResult.snapshots``), the last one final.
        data: batches to evaluate on (or a map-style ``Dataset``).
        final: the final parameters (default: the last snapshot).
        steps: training steps of the snapshots (``TrainResult.snapshot_steps``), kept for plotting.
        n_points: grid points per axis.
        margin: the grid extends this fraction of the projections' range beyond them on each side.
        bn_batches: training batches for the BatchNorm recompute (required for BN models).
        progress: tqdm bar.

    Returns:
        :class:`PCAPlaneResult`.

    Raises:
        ValueError: fewer than 3 snapshots, snapshots not matching the model, bad grid settings, a BN model
            without ``bn_batches``, empty data.
    """
    check_positive_int("n_points", n_points)
    check_positive("margin", margin, allow_zero=True)
    like = get_params(model)
    layout = ParamLayout.of(like)
    ref = next(iter(like.values()))
    w = _as_matrix(snapshots)
    if w.dim() == 2 and w.shape[0] and w.shape[1] != layout.size:
        raise expected("snapshots", f"flat vectors of the model's {layout.size} parameters", w.shape[1])
    final_flat = None if final is None else layout.flatten(final)
    comps, ratio, coords, residuals = pca_directions(w, final_flat)
    end = w[-1] if final_flat is None else final_flat.detach().to("cpu", torch.float64)
    data = list(as_batches(data))
    bn_batches = None if bn_batches is None else list(as_batches(bn_batches))

    def point(flat64: torch.Tensor) -> Params:
        return layout.unflatten(flat64.to(ref.device, ref.dtype))

    spans = []
    for axis in range(2):
        lo, hi = float(coords[:, axis].min()), float(coords[:, axis].max())
        pad = margin * max(hi - lo, 1e-12)
        spans.append(np.linspace(lo - pad, hi + pad, n_points))
    xs, ys = spans
    origin = point(end)
    directions = [point(comps[0]), point(comps[1])]
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2)
    loss, acc = grid_losses(
        model, origin, directions, grid, data, bn_batches=bn_batches, progress=progress, task="pca_plane"
    )
    snap = evaluate_points(model, [point(row) for row in w], data, bn_batches=bn_batches)
    proj_loss, _ = grid_losses(model, origin, directions, coords, data, bn_batches=bn_batches)
    loss, acc = loss.reshape(n_points, n_points), acc.reshape(n_points, n_points)
    norms = (w - end).norm(dim=1).numpy()
    rel = np.divide(residuals, norms, out=np.zeros_like(residuals), where=norms > 0)
    return PCAPlaneResult(
        xs,
        ys,
        loss,
        acc,
        comps,
        ratio,
        coords,
        residuals,
        rel,
        np.asarray(snap.loss),
        np.asarray(snap.acc),
        proj_loss,
        None if steps is None else np.asarray(list(steps)),
    )
