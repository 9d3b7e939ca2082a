"""The ``k`` largest eigenvalues of the loss Hessian at a model's parameter point, by Lanczos, block Lanczos or
power iteration.

Builds the :class:`~lgeom.hessian.operator.HessianOperator` at the point and runs
:func:`~lgeom.hessian.lanczos.lanczos_eigenvalues`, :func:`~lgeom.hessian.block_lanczos.block_lanczos_eigenvalues`
or :func:`~lgeom.hessian.power.power_eigenvalues` on it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from lgeom._checks import check_choice, expected
from lgeom.data import Batches
from lgeom.hessian.block_lanczos import block_lanczos_eigenvalues
from lgeom.hessian.lanczos import EigenResult, lanczos_eigenvalues
from lgeom.hessian.operator import HessianOperator
from lgeom.hessian.power import power_eigenvalues

# The methods ProbeConfig.hessian_method accepts (lgeom.probes dispatches on these two names);
# top_eigenvalues also takes "block_lanczos".
EIGEN_METHODS = ("lanczos", "power")
_TOP_EIGEN_METHODS = ("block_lanczos", *EIGEN_METHODS)

__all__ = ["EIGEN_METHODS", "top_eigenvalues"]


def top_eigenvalues(
    model: nn.Module,
    data: Batches,
    k: int = 5,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
    bn_batches: Batches | None = None,
    method: str = "lanczos",
    block_size: int | None = None,
    tol: float = 1e-3,
    max_iter: int | None = None,
    seed: int = 0,
    engine: str = "auto",
    return_vectors: bool = False,
    confirm: bool = False,
    progress: bool = False,
) -> EigenResult:
    """The ``k`` largest algebraic eigenvalues of the loss Hessian over ``data``.

    Args:
        model, data, params, buffers, bn_batches: as in :class:`HessianOperator` (eval mode; a BN model at
            ``params`` without ``buffers`` gets statistics recomputed there, on ``bn_batches`` or ``data``).
        k: how many eigenvalues.
        method: ``"lanczos"`` (:func:`lanczos_eigenvalues`), ``"block_lanczos"``
            (:func:`block_lanczos_eigenvalues`: several vectors per pass over the data, finds repeated
            eigenvalues up to ``block_size`` copies) or ``"power"`` (:func:`power_eigenvalues`).
        block_size: ``"block_lanczos"`` only: vectors per block (default ``k``).
        tol: relative residual per eigenpair (bounds the relative eigenvalue error).
        max_iter: Lanczos steps, block steps, or power iterations per eigenvalue.
        seed: seeds the start vectors.
        engine: Hessian-vector product engine (``"auto"``, ``"rop"``, ``"cached"``, ``"stream"`` or ``"forward"``).
        return_vectors: also return eigenvectors as ``(k, P)`` rows.
        confirm: Lanczos only: check for eigenvalues a single Krylov space misses (repeated ones), see
            :func:`lanczos_eigenvalues`.
        progress: tqdm bar.

    Returns:
        :class:`EigenResult` with values descending, in nats per squared parameter unit.

    Raises:
        ValueError: ``k`` larger than the parameter count, empty data, an unknown method or engine, a
            ``block_size`` for another method than ``"block_lanczos"``.
    """
    check_choice("method", method, _TOP_EIGEN_METHODS)
    if block_size is not None and method != "block_lanczos":
        raise expected("block_size", "None unless method='block_lanczos'", block_size)
    op = HessianOperator(model, data, params=params, buffers=buffers, bn_batches=bn_batches, engine=engine)
    if method == "lanczos":
        return lanczos_eigenvalues(
            op,
            k,
            tol=tol,
            max_iter=max_iter,
            seed=seed,
            return_vectors=return_vectors,
            confirm=confirm,
            progress=progress,
        )
    if method == "block_lanczos":
        return block_lanczos_eigenvalues(
            op,
            k,
            block_size=block_size,
            tol=tol,
            max_iter=max_iter,
            seed=seed,
            return_vectors=return_vectors,
            progress=progress,
        )
    return power_eigenvalues(
        op, k, tol=tol, max_iter=max_iter, seed=seed, return_vectors=return_vectors, progress=progress
    )
