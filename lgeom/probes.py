"""Run the configured geometry probes at a parameter point, or at sampled points along a path.

:func:`probe_point` applies the BN policy once and runs every enabled probe (Hessian top-k, trace, spectral
density, average and worst-case sharpness, Monte-Carlo curvature, 1-D and 2-D slices), returning a
:class:`PointProbes`. :func:`probe_path` runs chosen probes at sampled ``t`` along any object with
``point(t)`` (a curve) and returns a :class:`~lgeom.table.Table` with column ``t``, e.g.
``hessian_lambda_max`` and ``hessian_top1 .. hessian_top<k>``.

Settings come as a :class:`ProbeSettings`; its field names are those of the pipelines' ``ProbeConfig``
section, so ``ProbeSettings.from_object(cfg.probe)`` converts one without lgeom knowing about pipelines.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lgeom import names
from lgeom._checks import check_ts, expected
from lgeom.batchnorm import bn_statistics, has_batchnorm
from lgeom.data import Batches, as_batches
from lgeom.gradients import Objective
from lgeom.hessian import (
    EIGEN_METHODS,
    ENGINES,
    TRACE_METHODS,
    Density,
    EigenResult,
    HessianOperator,
    TraceResult,
    hutchinson_trace,
    lanczos_eigenvalues,
    power_eigenvalues,
    slq_density,
)
from lgeom.names import CURVATURE, HESSIAN, PROBE, SHARPNESS
from lgeom.params import Params
from lgeom.progress import TASK_PROBE_PATH, TASK_PROBES, Callback, ProgressEvent, emit, resolve_callbacks
from lgeom.sharpness import (
    NORMS,
    SCALINGS,
    AverageSharpness,
    Curvature,
    ModelLandscape,
    WorstSharpness,
    average_sharpness,
    mc_curvature,
    worst_sharpness,
)
from lgeom.specs import Problem
from lgeom.surfaces.slices import SliceResult, slice_1d, slice_2d
from lgeom.table import Table

#: Probe names accepted by :func:`probe_point` / :func:`probe_path`, in the order they run.
PROBES = ("hessian", "trace", "density", "sharpness", "worst", "curvature", "slices")

__all__ = [
    "PROBES",
    "MemoKey",
    "PointMemo",
    "PointProbes",
    "ProbeSettings",
    "enabled_probes",
    "probe_path",
    "probe_point",
]


@dataclass(frozen=True)
class ProbeSettings:
    """Settings of every probe (names as in the pipelines' ``ProbeConfig``).

    Attributes:
        hessian_k, hessian_tol, hessian_method, hessian_max_iter: top-k eigenvalues (see
            :func:`lgeom.hessian.top_eigenvalues`); ``hessian_tol`` is the relative residual per eigenpair.
        hessian_engine: Hessian-vector products: ``"auto"`` (``"rop"`` for lgeom's plain MLP, else cached graphs
            when they fit in memory, else ``"stream"``), ``"rop"`` (the MLP's products written out by hand),
            ``"forward"`` (forward-over-reverse), ``"cached"`` or ``"stream"`` (each chunk's
            gradient graph built once per pass) (see :class:`lgeom.hessian.HessianOperator`).
        hessian_points: points along a path where :func:`probe_path` runs (its default ``ts``).
        trace_probes, trace_method: Hutchinson products (0: no trace) and ``"hutchinson"`` / ``"hutch++"``.
        density, density_runs, density_steps, density_grid: stochastic Lanczos quadrature.
        sharpness_eps: radius of the sharpness perturbations (relative to filter norms by default).
        sharpness_samples: random perturbations for average-case sharpness (0: none).
        sharpness_worst, sharpness_steps, sharpness_norm, sharpness_scaling: worst-case sharpness by
            projected gradient ascent.
        curvature_samples, curvature_eps: Monte-Carlo curvature directions (0: none) and step (parameter
            units).
        slices, slice_points, slice2d_points: filter-normalised 1-D and 2-D slices on [-1, 1]. The 1-D slice
            takes :func:`~lgeom.surfaces.slices.slice_1d`'s 51 points; the 2-D slice defaults to a cheaper
            21 x 21 grid (441 evaluations, where :func:`~lgeom.surfaces.slices.slice_2d`'s own default of 51
            points per axis is 2601); set ``slice2d_points=51`` (``probe.slice2d_points=51`` in a preset or
            override) for the full grid. The PCA plane of the pipelines uses the same grid size.
        seed: seeds every random draw (start vectors, probes, perturbations, directions).
    """

    hessian_k: int = 5
    hessian_tol: float = 1e-3
    hessian_method: str = "lanczos"
    hessian_max_iter: int | None = None
    hessian_engine: str = "auto"
    hessian_points: int = 11
    trace_probes: int = 32
    trace_method: str = "hutchinson"
    density: bool = True
    density_runs: int = 4
    density_steps: int = 40
    density_grid: int = 500
    sharpness_eps: float = 0.05
    sharpness_samples: int = 16
    sharpness_worst: bool = True
    sharpness_steps: int = 10
    sharpness_norm: str = "l2"
    sharpness_scaling: str = "filter"
    curvature_samples: int = 16
    curvature_eps: float = 0.05
    slices: bool = True
    slice_points: int = 51
    slice2d_points: int = 21
    seed: int = 0

    @classmethod
    def from_object(cls, source: Any) -> ProbeSettings:
        """Settings from any object or mapping with (some of) these names, e.g. ``cfg.probe``; others keep
        their defaults and extra names are ignored.

        Raises:
            ValueError: the resulting settings are invalid (every problem listed).
        """
        names = [f.name for f in dataclasses.fields(cls)]
        if isinstance(source, Mapping):
            values = {n: source[n] for n in names if n in source}
        else:
            values = {n: getattr(source, n) for n in names if hasattr(source, n)}
        settings = cls(**values)
        problems = settings.problems()
        if problems:
            raise ValueError("probe settings: " + "; ".join(problems))
        return settings

    def problems(self) -> list[Problem]:
        """Every invalid setting as a :class:`~lgeom.specs.Problem` ``"<name>: expected X, got Y"`` (empty when
        valid).
        """
        out: list[Problem] = []
        for name in _INT_FIELDS:
            v = getattr(self, name)
            if v is None and name == "hessian_max_iter":
                continue
            lo = 0 if name in _ZERO_ALLOWED else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                out.append(Problem(name, f"expected an integer >= {lo}, got {v!r}"))
        for name in ("hessian_tol", "sharpness_eps", "curvature_eps"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                out.append(Problem(name, f"expected a finite number > 0, got {v!r}"))
        for name, choices in (
            ("hessian_method", EIGEN_METHODS),
            ("hessian_engine", ENGINES),
            ("trace_method", TRACE_METHODS),
            ("sharpness_norm", NORMS),
            ("sharpness_scaling", SCALINGS),
        ):
            if getattr(self, name) not in choices:
                out.append(
                    Problem(name, f"expected one of {', '.join(map(repr, choices))}, got {getattr(self, name)!r}")
                )
        if self.sharpness_scaling == "filter" and self.sharpness_norm != "l2":
            out.append(
                Problem("sharpness_norm", f"expected 'l2' with sharpness_scaling 'filter', got {self.sharpness_norm!r}")
            )
        if self.trace_method == "hutch++" and 0 < self.trace_probes < 3:
            out.append(Problem("trace_probes", f"expected 0 or at least 3 for hutch++, got {self.trace_probes!r}"))
        if self.density_grid == 1:
            out.append(Problem("density_grid", f"expected an integer >= 2, got {self.density_grid!r}"))
        return out


_INT_FIELDS = (
    "hessian_k",
    "hessian_max_iter",
    "hessian_points",
    "trace_probes",
    "density_runs",
    "density_steps",
    "density_grid",
    "sharpness_samples",
    "sharpness_steps",
    "curvature_samples",
    "slice_points",
    "slice2d_points",
    "seed",
)
_ZERO_ALLOWED = ("hessian_points", "trace_probes", "sharpness_samples", "curvature_samples", "seed")
_HESSIAN_PROBES = frozenset({"hessian", "trace", "density"})


def enabled_probes(settings: ProbeSettings) -> tuple[str, ...]:
    """The probes ``settings`` switch on (the Hessian top-k always), in :data:`PROBES` order."""
    on = {
        "hessian": True,
        "trace": settings.trace_probes > 0,
        "density": settings.density,
        "sharpness": settings.sharpness_samples > 0,
        "worst": settings.sharpness_worst,
        "curvature": settings.curvature_samples > 0,
        "slices": settings.slices,
    }
    return tuple(p for p in PROBES if on[p])


@dataclass
class PointProbes:
    """Everything measured at one parameter point (``None`` for probes that did not run).

    Attributes:
        loss: mean cross-entropy at the point over the probe data (eval mode, BN policy applied).
        n_params: trainable scalars.
        n_samples: samples the probes used.
        eigen: Hessian top-k (:class:`~lgeom.hessian.EigenResult`).
        trace: Hessian trace (:class:`~lgeom.hessian.TraceResult`).
        density: Hessian spectral density (:class:`~lgeom.hessian.Density`).
        average: average-case sharpness (:class:`~lgeom.sharpness.AverageSharpness`).
        worst: worst-case sharpness (:class:`~lgeom.sharpness.WorstSharpness`).
        curvature: Monte-Carlo curvature (:class:`~lgeom.sharpness.Curvature`).
        slice_1d, slice_2d: random slices (:class:`~lgeom.surfaces.slices.SliceResult`).
        timings: seconds per probe.
    """

    loss: float
    n_params: int
    n_samples: int
    eigen: EigenResult | None = None
    trace: TraceResult | None = None
    density: Density | None = None
    average: AverageSharpness | None = None
    worst: WorstSharpness | None = None
    curvature: Curvature | None = None
    slice_1d: SliceResult | None = None
    slice_2d: SliceResult | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def scalars(self, *, include_topk: bool = False) -> list[tuple[str, str, float]]:
        """``(family, quantity, value)`` of every scalar of the probes that ran (see :meth:`summary`);
        :mod:`lgeom.names` turns the first two into a metric name or a path-table column.
        """
        out: list[tuple[str, str, float]] = [(PROBE, "loss", self.loss)]
        if self.eigen is not None:
            out += [
                (HESSIAN, "lambda_max", self.eigen.lambda_max),
                (HESSIAN, "topk_mean", float(np.mean(self.eigen.values))),
                (HESSIAN, "converged", float(np.mean(self.eigen.converged))),
                (HESSIAN, "n_hvp", float(self.eigen.n_hvp)),
            ]
            if include_topk:
                out += [(HESSIAN, names.topk_quantity(i + 1), float(v)) for i, v in enumerate(self.eigen.values)]
        if self.trace is not None:
            out += [(HESSIAN, "trace", self.trace.mean), (HESSIAN, "trace_stderr", self.trace.stderr)]
        if self.density is not None:
            out.append((HESSIAN, "density_mean", self.density.mean()))
        if self.average is not None:
            out += [
                (SHARPNESS, "eps_avg", self.average.mean),
                (SHARPNESS, "eps_avg_max", self.average.max),
                (SHARPNESS, "flatness", self.average.flatness),
            ]
        if self.worst is not None:
            out.append((SHARPNESS, "eps_worst", self.worst.increase))
        if self.curvature is not None:
            out += [
                (CURVATURE, "mc_mean", self.curvature.mean),
                (CURVATURE, "mc_std", self.curvature.std),
                (CURVATURE, "mc_frac_negative", self.curvature.frac_negative),
            ]
        return out

    def summary(self, *, include_topk: bool = False) -> dict[str, float]:
        """Scalars as ``<family>.<name>`` (the metric contract without the point):

        ``probe.loss``, ``hessian.lambda_max``, ``hessian.topk_mean``, ``hessian.converged`` (share of the
        top k that converged), ``hessian.n_hvp``, ``hessian.top<i>`` (with ``include_topk``),
        ``hessian.trace``, ``hessian.trace_stderr``, ``hessian.density_mean``, ``sharpness.eps_avg``,
        ``sharpness.eps_avg_max``, ``sharpness.flatness``, ``sharpness.eps_worst``, ``curvature.mc_mean``,
        ``curvature.mc_std``, ``curvature.mc_frac_negative`` for the probes that ran.
        """
        return {names.probe_metric(f, q): v for f, q, v in self.scalars(include_topk=include_topk)}

    def metrics(self, point: str) -> dict[str, float]:
        """:meth:`summary` under the metric contract's names at ``point`` (``hessian.<point>.lambda_max`` ...)."""
        return {names.probe_metric(f, q, point=point): v for f, q, v in self.scalars()}

    def columns(self) -> dict[str, float]:
        """:meth:`summary` (with top-k) as path-table columns (``hessian_lambda_max``, ``hessian_top1``,
        ``sharpness_eps_avg``, ``probe_loss`` ...).
        """
        return {names.probe_column(f, q): v for f, q, v in self.scalars(include_topk=True)}

    def spectrum(self) -> dict[str, Any]:
        """The Hessian results as one JSON-ready document (``spectra/<point>.json``): ``eigenvalues``,
        ``converged``, ``residuals``, ``n_hvp``, ``method``, ``trace`` and ``density`` (``None`` when not run).
        """
        doc: dict[str, Any] = {"loss": self.loss, "n_params": self.n_params, "n_samples": self.n_samples}
        doc.update(self.eigen.to_dict() if self.eigen is not None else {"eigenvalues": None})
        doc["trace"] = self.trace.to_dict() if self.trace is not None else None
        doc["density"] = self.density.to_dict() if self.density is not None else None
        return doc


def _check_probes(probes: Collection[str]) -> tuple[str, ...]:
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise expected("probe", "one of " + ", ".join(PROBES), unknown[0])
    return tuple(p for p in PROBES if p in probes)


#: Probes whose results :class:`PointMemo` hands out again. The Hessian top-k runs first in every
#: :func:`probe_point` call, on a fresh operator, seeded by ``settings.seed``: its result at a point depends only
#: on the point, the statistics, the data and the settings, whatever other probes run after it.
_REUSABLE = frozenset({"hessian"})


def _same_tensors(a: Mapping[str, torch.Tensor] | None, b: Mapping[str, torch.Tensor] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.keys() == b.keys() and all(
        a[n] is b[n] or (a[n].shape == b[n].shape and a[n].dtype == b[n].dtype and torch.equal(a[n], b[n])) for n in a
    )


class MemoKey:
    """What makes two :func:`probe_point` calls compute the same values: the model object, the point's
    tensors, its BatchNorm statistics, the ``endpoint`` flag, the data and BN batches (the same tensor objects),
    and the settings. Keys compare by :meth:`matches` (tensors by ``torch.equal``, data by identity).
    """

    def __init__(
        self,
        model: nn.Module,
        params: Mapping[str, torch.Tensor],
        buffers: Mapping[str, torch.Tensor] | None,
        endpoint: bool,
        data: Sequence[tuple[torch.Tensor, torch.Tensor]],
        bn_batches: Sequence[Any] | None,
        settings: ProbeSettings,
    ) -> None:
        self.model = model
        self.params = dict(params)
        self.buffers = None if buffers is None else dict(buffers)
        self.endpoint = endpoint
        self.data = list(data)
        self.bn_batches = None if bn_batches is None else list(bn_batches)
        self.settings = settings

    @staticmethod
    def _same_data(a: Sequence[Any] | None, b: Sequence[Any] | None) -> bool:
        if a is None or b is None:
            return a is None and b is None
        return len(a) == len(b) and all(x is y or (x[0] is y[0] and x[1] is y[1]) for x, y in zip(a, b))

    def matches(self, other: MemoKey) -> bool:
        """Whether a probe at ``other`` computes what one at this key did (cheap checks first)."""
        return (
            self.model is other.model
            and self.endpoint == other.endpoint
            and self.settings == other.settings
            and self._same_data(self.data, other.data)
            and self._same_data(self.bn_batches, other.bn_batches)
            and _same_tensors(self.buffers, other.buffers)
            and _same_tensors(self.params, other.params)
        )


class PointMemo:
    """Probe results kept by :func:`probe_point` so that a point probed again is not computed twice.

    A study probes A, B and the curve's midpoint, then the Hessian top-k along every path: t = 0 and t = 1 of
    each path are A and B again (:meth:`lgeom.curves.Curve.point` gives them exactly) and t = 0.5 of the Bezier
    curve is its midpoint. A result is reused only when the new call's :class:`MemoKey` matches a stored one
    (the point and BatchNorm statistics equal tensor for tensor, the same ``endpoint`` flag, the same data and
    BN batches, the same settings), and only for the probes in which that is exact (the Hessian top-k, see
    :data:`_REUSABLE`), so the values are those a fresh computation gives.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._entries: list[tuple[MemoKey, PointProbes]] = []
        self.hits = 0

    def find(self, key: MemoKey, probes: Collection[str]) -> PointProbes | None:
        """A stored result holding ``probes`` at ``key`` (only those probes, timings empty), or ``None``."""
        if key.model is not self.model or not set(probes) <= _REUSABLE:
            return None
        for stored, r in self._entries:
            if (r.eigen is not None or "hessian" not in probes) and stored.matches(key):
                self.hits += 1
                return PointProbes(
                    loss=r.loss,
                    n_params=r.n_params,
                    n_samples=r.n_samples,
                    eigen=r.eigen if "hessian" in probes else None,
                )
        return None

    def add(self, key: MemoKey, result: PointProbes) -> None:
        """Store ``result`` (computed by :func:`probe_point` at ``key``) when it holds a reusable probe."""
        if key.model is self.model and result.eigen is not None:
            self._entries.append((key, result))


def probe_point(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    data: Batches,
    settings: ProbeSettings | None = None,
    *,
    buffers: Mapping[str, torch.Tensor] | None = None,
    endpoint: bool = False,
    bn_batches: Batches | None = None,
    probes: Collection[str] | None = None,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = True,
    memo: PointMemo | None = None,
) -> PointProbes:
    """Run the configured probes at one parameter point.

    BN policy: for a model with BatchNorm the Hessian, trace, density and the loss are taken in eval mode
    with the trained ``buffers`` at a trained ``endpoint``, and with statistics recomputed on ``bn_batches``
    anywhere else. Sharpness, curvature and slices recompute the statistics at every point they evaluate,
    the centre included (see :class:`lgeom.sharpness.ModelLandscape`). Every random draw is seeded by
    ``settings.seed``, so two calls give the same results.

    Args:
        model: the architecture (not mutated).
        params: the parameter point.
        data: the probe batches (e.g. a fixed subset of training samples) or a map-style ``Dataset``;
            materialised once.
        settings: probe settings (default :class:`ProbeSettings`).
        buffers: trained BatchNorm statistics of an endpoint.
        endpoint: whether ``params`` is a trained endpoint whose ``buffers`` are kept.
        bn_batches: training batches for the BatchNorm recompute (default: ``data``).
        probes: which probes to run (names from :data:`PROBES`; default: :func:`enabled_probes`).
        callbacks, progress: progress over the probes (task ``"probes"``, a step per probe) and within the
            density (``"slq"``) and sharpness (``"sharpness"``, ``"sharpness_worst"``) probes; ``progress``
            adds a display (:func:`lgeom.progress.progress_display`).
        memo: a :class:`PointMemo`: the result is taken from it when this point was probed before (exactly the
            same point, statistics, data and settings; Hessian top-k only), and stored in it otherwise.

    Returns:
        :class:`PointProbes`.

    Raises:
        ValueError: empty data, an unknown probe name, invalid settings, ``k`` larger than the parameter count.
    """
    s = settings or ProbeSettings()
    problems = s.problems()
    if problems:
        raise ValueError("probe settings: " + "; ".join(problems))
    chosen = enabled_probes(s) if probes is None else _check_probes(probes)
    data = [(x, y) for x, y in as_batches(data)]
    bn = has_batchnorm(model)
    given_bn = None if bn_batches is None else list(as_batches(bn_batches))
    bn_list = (given_bn if given_bn is not None else data) if bn else None
    point = {n: v.detach() for n, v in params.items()}
    key = MemoKey(model, point, buffers, endpoint, data, given_bn, s) if memo is not None else None
    if memo is not None and key is not None:
        found = memo.find(key, chosen)
        if found is not None:
            return found
    # An endpoint flagged without its trained buffers gets statistics recomputed, as any other point.
    hess_buffers = bn_statistics(
        model, point, endpoint=endpoint and buffers is not None, buffers=buffers, bn_batches=bn_list
    ).buffers
    op = (
        HessianOperator(model, data, params=point, buffers=hess_buffers, engine=s.hessian_engine)
        if _HESSIAN_PROBES & set(chosen)
        else None
    )
    objective = op.objective if op is not None else Objective(model, data, params=point, buffers=hess_buffers)
    result = PointProbes(loss=objective.loss(), n_params=objective.size, n_samples=objective.n_samples)
    cbs = resolve_callbacks(callbacks, progress, TASK_PROBES)
    emit(cbs, ProgressEvent(TASK_PROBES, "start", 0, len(chosen)))
    landscape = ModelLandscape(model, data, params=point, bn_batches=bn_list)

    def run(name: str) -> None:
        assert op is not None or name not in _HESSIAN_PROBES
        if name == "hessian":
            solver = lanczos_eigenvalues if s.hessian_method == "lanczos" else power_eigenvalues
            result.eigen = solver(op, s.hessian_k, tol=s.hessian_tol, max_iter=s.hessian_max_iter, seed=s.seed)
        elif name == "trace":
            result.trace = hutchinson_trace(op, s.trace_probes, seed=s.seed, method=s.trace_method)
        elif name == "density":
            result.density = slq_density(
                op,
                n_runs=s.density_runs,
                n_steps=s.density_steps,
                grid=s.density_grid,
                seed=s.seed,
                callbacks=cbs,
                progress=False,
            )
        elif name == "sharpness":
            result.average = average_sharpness(
                landscape, eps=s.sharpness_eps, n_samples=s.sharpness_samples, seed=s.seed, callbacks=cbs
            )
        elif name == "worst":
            result.worst = worst_sharpness(
                landscape,
                eps=s.sharpness_eps,
                steps=s.sharpness_steps,
                norm=s.sharpness_norm,
                scaling=s.sharpness_scaling,
                seed=s.seed,
                callbacks=cbs,
            )
        elif name == "curvature":
            result.curvature = mc_curvature(
                landscape, eps=s.curvature_eps, n_directions=s.curvature_samples, seed=s.seed
            )
        elif name == "slices":
            result.slice_1d = slice_1d(
                model, data, params=point, n_points=s.slice_points, bn_batches=bn_list, seed=s.seed
            )
            result.slice_2d = slice_2d(
                model, data, params=point, n_points=s.slice2d_points, bn_batches=bn_list, seed=s.seed
            )

    for i, name in enumerate(chosen):
        t0 = time.perf_counter()
        run(name)
        result.timings[name] = time.perf_counter() - t0
        emit(cbs, ProgressEvent(TASK_PROBES, "step", i + 1, len(chosen), metrics={"seconds": result.timings[name]}))
        if op is not None and not _HESSIAN_PROBES & set(chosen[i + 1 :]):
            op.release()  # frees the cached engine's graphs before the probes that evaluate many points
    emit(cbs, ProgressEvent(TASK_PROBES, "end", len(chosen), len(chosen)))
    if memo is not None and key is not None:
        memo.add(key, result)
    return result


def probe_path(
    model: nn.Module,
    path: Any,
    ts: Sequence[float] | np.ndarray | torch.Tensor | None,
    data: Batches,
    probes: Collection[str] = ("hessian",),
    *,
    settings: ProbeSettings | None = None,
    bn_batches: Batches | None = None,
    endpoint_buffers: tuple[Mapping[str, torch.Tensor] | None, Mapping[str, torch.Tensor] | None] | None = None,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = True,
    memo: PointMemo | None = None,
) -> Table:
    """Run ``probes`` at sampled points ``path.point(t)`` (Hessian top-k by default).

    Args:
        model: the architecture the path's parameters belong to.
        path: any object with ``point(t) -> parameter dict`` (``Line``, ``Bezier``, ``PolyChain``).
        ts: values of t in [0, 1] (``None``: ``settings.hessian_points`` evenly spaced, 11 by default).
        data: probe batches (or a map-style ``Dataset``).
        probes: probe names (scalar probes: ``hessian``, ``trace``, ``density``, ``sharpness``, ``worst``,
            ``curvature``).
        settings: probe settings.
        bn_batches: training batches for the BatchNorm recompute (default: ``data``).
        endpoint_buffers: trained statistics of A and B; with them t = 0 and t = 1 are probed as the
            trained endpoints (no recompute), as the BN policy says.
        callbacks, progress: progress over the points (task ``"probe_path"``).
        memo: a :class:`PointMemo` shared with other calls: a point probed before (A and B at t = 0 and 1 of
            several paths, a midpoint) is taken from it with the values a fresh computation gives.

    Returns:
        A :class:`~lgeom.table.Table` with column ``t`` and the probes' columns (:meth:`PointProbes.columns`):
        ``probe_loss``, ``hessian_lambda_max``, ``hessian_topk_mean``, ``hessian_top1`` .. ``hessian_top<k>``,
        ``hessian_trace``, ``sharpness_eps_avg``, ``sharpness_eps_worst``, ``curvature_mc_mean`` ...

    Raises:
        ValueError: t outside [0, 1], no t at all, an unknown probe, or as :func:`probe_point`.
    """
    s = settings or ProbeSettings()
    chosen = _check_probes(probes)
    if "slices" in chosen:
        raise expected("probes along a path", "scalar probes (not 'slices')", "slices")
    t_values = check_ts(np.linspace(0.0, 1.0, s.hessian_points) if ts is None else ts).tolist()
    data = [(x, y) for x, y in as_batches(data)]
    if bn_batches is not None:
        bn_batches = list(as_batches(bn_batches))
    cbs = resolve_callbacks(callbacks, progress, TASK_PROBE_PATH)
    emit(cbs, ProgressEvent(TASK_PROBE_PATH, "start", 0, len(t_values)))
    rows: list[dict[str, float]] = []
    for i, t in enumerate(t_values):
        params: Params = {n: p.detach() for n, p in path.point(t).items()}
        bufs = None
        if endpoint_buffers is not None and t in (0.0, 1.0):
            bufs = endpoint_buffers[0] if t == 0.0 else endpoint_buffers[1]
        res = probe_point(
            model,
            params,
            data,
            s,
            buffers=bufs,
            endpoint=bufs is not None,
            bn_batches=bn_batches,
            probes=chosen,
            progress=False,
            memo=memo,
        )
        rows.append({"t": t, **res.columns()})
        emit(cbs, ProgressEvent(TASK_PROBE_PATH, "step", i + 1, len(t_values), metrics={"t": t}))
    emit(cbs, ProgressEvent(TASK_PROBE_PATH, "end", len(t_values), len(t_values)))
    return Table.from_rows(rows)
