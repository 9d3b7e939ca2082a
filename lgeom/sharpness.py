"""Flatness around a parameter point: epsilon-sharpness, perturbation flatness, Monte-Carlo curvature.

Every estimator works on a :class:`Landscape`: the loss as a function of parameter points near a centre.
:class:`ModelLandscape` is the metric contract's loss of a model over fixed data under the BN policy;
:class:`lgeom.reference.QuadraticLandscape` is a closed-form quadratic the tests check against.

* :func:`average_sharpness`: ``L(theta + delta) - L(theta)`` for ``M`` Gaussian, filter-normalised
  perturbations of radius ``eps`` (each output filter ``i`` moved by ``eps * ||w_i||``, filters along axis 0
  of every parameter as in :func:`lgeom.params.filter_normalized_direction`): mean, max and the
  whole sample (for a histogram), plus the perturbation flatness ``mean |L(theta + delta) - L(theta)|``.
* :func:`worst_sharpness`: ``max L(theta + delta) - L(theta)`` over a ball, by projected gradient ascent;
  l2 or l-inf, with absolute, element-wise (adaptive, ASAM) or filter-wise scaling of the ball.
* :func:`perturbation_flatness`: ``|L(theta + delta) - L(theta)|`` for given perturbations.
* :func:`mc_curvature`: ``(L(theta + eps d) - 2 L(theta) + L(theta - eps d)) / eps^2`` over random unit
  directions ``d`` (each estimates ``d^T H d``): mean, standard deviation and the fraction that is negative.

Losses are in nats; curvatures in nats per squared parameter unit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from lgeom._checks import check_choice, check_positive, check_positive_int, expected
from lgeom.batchnorm import bn_statistics, has_batchnorm
from lgeom.data import Batches, as_batches
from lgeom.gradients import Objective
from lgeom.multipoint import evaluate_points
from lgeom.params import ParamLayout, Params, filter_normalized_direction, get_params
from lgeom.progress import TASK_SHARPNESS, TASK_WORST, Callback, ProgressEvent, emit

NORMS = ("l2", "linf")
SCALINGS = ("none", "elementwise", "filter")

__all__ = [
    "AverageSharpness",
    "Curvature",
    "Landscape",
    "ModelLandscape",
    "WorstSharpness",
    "average_sharpness",
    "mc_curvature",
    "perturbation_flatness",
    "worst_sharpness",
]


class Landscape(Protocol):
    """The loss near ``center``: at many points at once, and with its gradient at one point."""

    center: Params

    def losses(self, points: Sequence[Mapping[str, torch.Tensor]]) -> np.ndarray:
        """Loss at each point (float64 array)."""
        ...

    def loss_and_grad(self, point: Mapping[str, torch.Tensor]) -> tuple[float, Params]:
        """Loss and its gradient (a dict shaped like the point) at one point."""
        ...


class ModelLandscape:
    """The metric contract's loss of ``model`` over ``data`` near ``params``, under the BN policy.

    Every loss (the centre's included, so that ``delta -> 0`` gives a zero difference) is taken in eval mode;
    for models with BatchNorm the running statistics are first recomputed at that point on ``bn_batches``
    (DESIGN.md: perturbed points are not trained endpoints). Many points are evaluated per pass over the
    data through :func:`lgeom.multipoint.evaluate_points`.

    Args:
        model: the architecture (not mutated).
        data: ``(inputs, targets)`` batches or a Dataset, materialised once.
        params: the centre (default: the model's parameters).
        bn_batches: training batches for the BatchNorm recompute (default: ``data``).
        chunk_size: points evaluated together.

    Raises:
        ValueError: empty data.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Batches,
        *,
        params: Mapping[str, torch.Tensor] | None = None,
        bn_batches: Batches | None = None,
        chunk_size: int = 64,
    ) -> None:
        self.model = model
        self.data = [(x, y) for x, y in as_batches(data) if int(y.shape[0]) > 0]
        if not self.data:
            raise expected("data", "a non-empty dataset", "an empty one (0 samples)")
        source = get_params(model) if params is None else params
        self.center: Params = {n: p.detach() for n, p in source.items()}
        self.bn = has_batchnorm(model)
        self.bn_batches = (list(as_batches(bn_batches)) if bn_batches is not None else self.data) if self.bn else None
        self.chunk_size = chunk_size

    def losses(
        self, points: Sequence[Mapping[str, torch.Tensor]], callbacks: Sequence[Callback] | None = None
    ) -> np.ndarray:
        """Mean cross-entropy at each point (BN statistics recomputed per point for BN models); ``callbacks``
        receive the evaluation's progress (task ``"grid"``, ``step`` = points done).
        """
        res = evaluate_points(
            self.model,
            list(points),
            self.data,
            bn_batches=self.bn_batches,
            chunk_size=self.chunk_size,
            callbacks=callbacks,
        )
        return np.asarray(res.loss, dtype=np.float64)

    def loss_and_grad(self, point: Mapping[str, torch.Tensor]) -> tuple[float, Params]:
        """Loss and gradient at ``point`` in eval mode (BN statistics recomputed there for BN models)."""
        buffers = bn_statistics(self.model, point, endpoint=False, bn_batches=self.bn_batches).buffers
        return Objective(self.model, self.data, params=point, buffers=buffers).loss_and_grad()


# --- results -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AverageSharpness:
    """Average-case eps-sharpness.

    Attributes:
        eps: perturbation radius (relative to each filter's norm when filter-normalised, else absolute l2).
        base_loss: ``L(theta)``.
        increases: ``L(theta + delta_i) - L(theta)`` for every sample (the histogram's data).
        mean: mean increase (the ``eps_avg`` metric).
        max: largest increase.
        std: standard deviation of the increases (0 for one sample).
        flatness: perturbation flatness ``mean |L(theta + delta) - L(theta)|`` over the same samples.
    """

    eps: float
    base_loss: float
    increases: np.ndarray
    mean: float
    max: float
    std: float
    flatness: float

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {
            "eps": self.eps,
            "base_loss": self.base_loss,
            "increases": self.increases.tolist(),
            "mean": self.mean,
            "max": self.max,
            "std": self.std,
            "flatness": self.flatness,
        }


@dataclass(frozen=True)
class WorstSharpness:
    """Worst-case eps-sharpness from projected gradient ascent.

    Attributes:
        eps: radius of the ball (see :func:`worst_sharpness` for its units per scaling).
        norm: ``"l2"`` or ``"linf"``.
        scaling: ``"none"``, ``"elementwise"`` or ``"filter"``.
        base_loss: ``L(theta)``.
        increase: the largest ``L(theta + delta_t) - L(theta)`` over the ascent's iterates (``eps_worst``).
        losses: ``L(theta + delta_t)`` at every iterate ``t = 0..steps``.
        delta_norm: l2 norm of the best perturbation, in parameter units.
        steps: gradient-ascent steps taken.
    """

    eps: float
    norm: str
    scaling: str
    base_loss: float
    increase: float
    losses: np.ndarray
    delta_norm: float
    steps: int

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {
            "eps": self.eps,
            "norm": self.norm,
            "scaling": self.scaling,
            "base_loss": self.base_loss,
            "increase": self.increase,
            "losses": self.losses.tolist(),
            "delta_norm": self.delta_norm,
            "steps": self.steps,
        }


@dataclass(frozen=True)
class Curvature:
    """Monte-Carlo curvature along random unit directions.

    Attributes:
        eps: finite-difference step (parameter units).
        base_loss: ``L(theta)``.
        curvatures: ``(L(theta + eps d) - 2 L(theta) + L(theta - eps d)) / eps^2`` per direction.
        mean, std: their mean and standard deviation (ddof 1; 0 for one direction).
        frac_negative: fraction of directions with negative curvature.
    """

    eps: float
    base_loss: float
    curvatures: np.ndarray
    mean: float
    std: float
    frac_negative: float

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {
            "eps": self.eps,
            "base_loss": self.base_loss,
            "curvatures": self.curvatures.tolist(),
            "mean": self.mean,
            "std": self.std,
            "frac_negative": self.frac_negative,
        }


# --- estimators ----------------------------------------------------------------------------------------------


def _shift(center: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor], scale: float = 1.0) -> Params:
    return {n: center[n] + scale * delta[n] for n in center}


def _std(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def _loss_changes(
    landscape: Landscape, deltas: Sequence[Mapping[str, torch.Tensor]], callbacks: Sequence[Callback] | None = None
) -> tuple[float, np.ndarray]:
    """``L(theta)`` and ``L(theta + delta_i) - L(theta)``, all from one batched evaluation; ``callbacks`` get
    its progress as task ``"sharpness"`` (``step`` of ``total`` = points evaluated).
    """
    c = landscape.center
    points = [c] + [_shift(c, d) for d in deltas]
    cbs = list(callbacks or [])
    total = len(points)
    emit(cbs, ProgressEvent(TASK_SHARPNESS, "start", 0, total))
    if isinstance(landscape, ModelLandscape):
        bridge = [lambda e: emit(cbs, ProgressEvent(TASK_SHARPNESS, "step", e.step, total))] if cbs else None
        losses = landscape.losses(points, callbacks=bridge)
    else:
        losses = landscape.losses(points)
    emit(cbs, ProgressEvent(TASK_SHARPNESS, "end", total, total))
    return float(losses[0]), losses[1:] - losses[0]


def perturbation_flatness(
    landscape: Landscape, deltas: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]]
) -> np.ndarray:
    """``|L(theta + delta) - L(theta)|`` for each given perturbation (the MNIST comparison's metric).

    Args:
        landscape: the loss near ``theta``.
        deltas: one perturbation (a parameter dict) or several.

    Returns:
        One non-negative loss change (nats) per perturbation.

    Raises:
        ValueError: no perturbation given.
    """
    items = [deltas] if isinstance(deltas, Mapping) else list(deltas)
    if not items:
        raise expected("deltas", "at least one perturbation", 0)
    return np.abs(_loss_changes(landscape, items)[1])


def average_sharpness(
    landscape: Landscape,
    *,
    eps: float,
    n_samples: int = 16,
    seed: int = 0,
    filter_normalized: bool = True,
    callbacks: Sequence[Callback] | None = None,
) -> AverageSharpness:
    """Average-case eps-sharpness over ``n_samples`` random perturbations of radius ``eps``.

    With ``filter_normalized`` (default) each perturbation is a Gaussian direction whose output filters are
    scaled to ``eps`` times the matching weight filter's norm (1-D parameters unperturbed, Li et al. 2018);
    otherwise a Gaussian direction of l2 norm ``eps``. ``callbacks`` receive progress events (task
    ``"sharpness"``, ``step`` = points evaluated of ``n_samples + 1``).

    Returns:
        :class:`AverageSharpness` (loss increases in nats).

    Raises:
        ValueError: ``eps <= 0`` or ``n_samples < 1``.
    """
    check_positive("eps", eps)
    check_positive_int("n_samples", n_samples)
    gen = torch.Generator().manual_seed(seed)
    c = landscape.center
    deltas = []
    for _ in range(n_samples):
        if filter_normalized:
            d = filter_normalized_direction(c, generator=gen)
            deltas.append({n: eps * v for n, v in d.items()})
        else:
            layout = ParamLayout.of(c)
            g = torch.randn(layout.size, generator=gen, dtype=torch.float64)
            flat = layout.flatten(c)
            deltas.append(layout.unflatten((eps * g / g.norm()).to(flat.device, flat.dtype)))
    base, inc = _loss_changes(landscape, deltas, callbacks)
    return AverageSharpness(
        float(eps), base, inc, float(inc.mean()), float(inc.max()), _std(inc), float(np.abs(inc).mean())
    )


def _scales_and_groups(center: Params, scaling: str, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat scale ``T`` (``delta = T * xi``) and the group id of every coordinate of ``xi`` (l2 balls per group)."""
    layout = ParamLayout.of(center)
    w = layout.flatten(center).detach()
    if scaling == "none":
        return torch.ones_like(w), torch.zeros(w.numel(), dtype=torch.long, device=w.device)
    if scaling == "elementwise":
        return w.abs(), torch.zeros(w.numel(), dtype=torch.long, device=w.device)
    scales, groups, next_id = [], [], 0
    for name in layout.names:
        p = center[name].detach()
        if p.dim() <= 1:
            scales.append(torch.zeros(p.numel(), dtype=w.dtype, device=w.device))
            groups.append(torch.full((p.numel(),), next_id, dtype=torch.long, device=w.device))
            next_id += 1
            continue
        rows = p.reshape(p.shape[0], -1)
        per = rows[0].numel()
        scales.append(rows.norm(dim=1).repeat_interleave(per))
        groups.append(torch.arange(next_id, next_id + p.shape[0], device=w.device).repeat_interleave(per))
        next_id += p.shape[0]
    return torch.cat(scales), torch.cat(groups)


def _group_norms(x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    sq = torch.zeros(int(groups.max()) + 1, dtype=x.dtype, device=x.device).scatter_add_(0, groups, x * x)
    return sq.sqrt()[groups]


def worst_sharpness(
    landscape: Landscape,
    *,
    eps: float,
    steps: int = 10,
    norm: str = "l2",
    scaling: str = "filter",
    step_size: float | None = None,
    seed: int = 0,
    callbacks: Sequence[Callback] | None = None,
) -> WorstSharpness:
    """Worst-case eps-sharpness ``max_{delta in B} L(theta + delta) - L(theta)`` by projected gradient ascent.

    The ball is ``{delta = T * xi : xi in ball(eps)}``:

    * ``scaling="none"``: ``T = 1``, ``||delta||_p <= eps`` (absolute, parameter units);
    * ``"elementwise"`` (adaptive, ASAM): ``T = |w|``, ``||delta / |w| ||_p <= eps``;
    * ``"filter"`` (l2 only): every output filter ``i`` of a weight moves by at most ``eps * ||w_i||``
      (1-D parameters stay fixed), the set whose boundary :func:`average_sharpness` samples, so
      ``eps_avg <= eps_worst`` at equal ``eps``.

    The ascent starts at a random point of the boundary. With ``step_size=None`` (default) every step jumps
    to the maximiser of the loss's linearisation on the ball (``eps * g / ||g||`` per l2 group,
    ``eps * sign(g)`` for l-inf, with ``g`` the gradient in ``xi``): iterated SAM steps, exact in one step for
    a linear loss and a power iteration for a quadratic one. With a number it takes damped steps of
    ``step_size * eps`` along that direction from the current point, each followed by projection. The result
    is the largest loss seen over all iterates. ``callbacks`` receive progress events (task
    ``"sharpness_worst"``, a step per gradient evaluation of ``steps + 2``).

    Returns:
        :class:`WorstSharpness` (loss increase in nats).

    Raises:
        ValueError: ``eps <= 0``, ``steps < 1``, ``step_size <= 0``, unknown norm/scaling, or filter scaling
            with the l-inf norm.
    """
    check_positive("eps", eps)
    check_positive_int("steps", steps)
    if step_size is not None:
        check_positive("step_size", step_size)
    check_choice("norm", norm, NORMS)
    check_choice("scaling", scaling, SCALINGS)
    if scaling == "filter" and norm != "l2":
        raise expected("norm", "'l2' with filter scaling (filter-wise balls are l2 balls)", norm)
    c = landscape.center
    layout = ParamLayout.of(c)
    scale, groups = _scales_and_groups(c, scaling, norm)
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randn(layout.size, generator=gen, dtype=torch.float64).to(scale.device, scale.dtype)

    def project(xi: torch.Tensor) -> torch.Tensor:
        if norm == "linf":
            return xi.clamp(-eps, eps)
        return xi * (eps / _group_norms(xi, groups).clamp_min(eps)).clamp(max=1.0)

    if norm == "linf":
        xi = (torch.rand(layout.size, generator=gen, dtype=torch.float64).to(scale.device, scale.dtype) * 2 - 1) * eps
    else:
        xi = eps * raw / _group_norms(raw, groups).clamp_min(1e-30)
    cbs = list(callbacks or [])
    total = steps + 2  # the centre, then every iterate
    emit(cbs, ProgressEvent(TASK_WORST, "start", 0, total))
    base, _ = landscape.loss_and_grad(c)
    emit(cbs, ProgressEvent(TASK_WORST, "step", 1, total))
    losses, best, best_delta = [], -math.inf, torch.zeros_like(xi)
    for t in range(steps + 1):
        delta = scale * xi
        loss, g = landscape.loss_and_grad(_shift(c, layout.unflatten(delta)))
        emit(cbs, ProgressEvent(TASK_WORST, "step", t + 2, total))
        losses.append(loss)
        if loss > best:
            best, best_delta = loss, delta
        if t == steps:
            break
        g_xi = scale * layout.flatten(g).to(scale.dtype)
        ascent = eps * (g_xi.sign() if norm == "linf" else g_xi / _group_norms(g_xi, groups).clamp_min(1e-30))
        xi = ascent if step_size is None else project(xi + step_size * ascent)
    emit(cbs, ProgressEvent(TASK_WORST, "end", total, total))
    return WorstSharpness(
        float(eps), norm, scaling, base, best - base, np.asarray(losses), float(best_delta.norm()), steps
    )


def mc_curvature(
    landscape: Landscape,
    *,
    eps: float,
    n_directions: int = 16,
    seed: int = 0,
    directions: Sequence[Mapping[str, torch.Tensor]] | None = None,
) -> Curvature:
    """Monte-Carlo curvature: central second differences of the loss along random unit directions.

    For a quadratic loss every sample equals ``d^T H d`` exactly; in general it estimates it with an
    ``O(eps^2)`` error. The mean over isotropic unit directions estimates ``tr(H) / P``.

    Args:
        landscape: the loss near ``theta``.
        eps: step along each direction, in parameter units.
        n_directions: random Gaussian directions normalised to unit l2 norm (ignored with ``directions``).
        seed: seeds the directions.
        directions: explicit directions (each normalised to unit norm here).

    Returns:
        :class:`Curvature` (nats per squared parameter unit).

    Raises:
        ValueError: ``eps <= 0``, ``n_directions < 1``, or a zero direction.
    """
    check_positive("eps", eps)
    c = landscape.center
    layout = ParamLayout.of(c)
    flat_c = layout.flatten(c)
    if directions is None:
        check_positive_int("n_directions", n_directions)
        gen = torch.Generator().manual_seed(seed)
        flats = [torch.randn(layout.size, generator=gen, dtype=torch.float64) for _ in range(n_directions)]
    else:
        flats = [layout.flatten(d).detach().to("cpu", torch.float64) for d in directions]
        if not flats:
            raise expected("directions", "at least one direction", 0)
    units = []
    for f in flats:
        if float(f.norm()) == 0.0:
            raise expected("direction", "a non-zero vector", "a zero vector")
        units.append(layout.unflatten((f / f.norm()).to(flat_c.device, flat_c.dtype)))
    points = [c] + [_shift(c, d, eps) for d in units] + [_shift(c, d, -eps) for d in units]
    losses = landscape.losses(points)
    m = len(units)
    base = float(losses[0])
    curv = (losses[1 : m + 1] - 2 * base + losses[m + 1 :]) / eps**2
    return Curvature(float(eps), base, curv, float(curv.mean()), _std(curv), float((curv < 0).mean()))
