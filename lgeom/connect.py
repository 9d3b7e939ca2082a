"""Connect two trained endpoints: line, Bezier and PolyChain paths, path metrics, triangle geometry and the
plane through A, C, B, with and without permutation alignment of B onto A.

``connect_pair`` runs everything and returns a :class:`ConnectResult`; the stages it is made of
(:func:`prepare_data`, :func:`evaluate_endpoints`, :func:`align_endpoint`, :func:`connect_path`) are public so
that a caller that checkpoints between stages (a study trial) can run them one by one.

Path names: ``linear``, ``bezier``, ``polychain``, each with a ``_aligned`` twin when B is aligned. Metric
names (:meth:`ConnectResult.metrics`) follow DESIGN.md's contract.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from lgeom import names
from lgeom._checks import check_same_structure, expected
from lgeom.align import Alignment, weight_matching
from lgeom.batchnorm import has_batchnorm
from lgeom.curves import (
    CURVE_KINDS,
    Curve,
    CurveFitResult,
    CurveFitSpec,
    build_curve,
    check_model_matches,
    fit_curve,
)
from lgeom.data import EVAL_BATCH_SIZE, fixed_batches, make_loader, random_subset, stratified_subset
from lgeom.evaluate import EvalResult, evaluate_point
from lgeom.multipoint import evaluate_path
from lgeom.params import Params, get_buffers
from lgeom.path import Triangle, path_metrics, triangle, with_gen_gap
from lgeom.progress import Callback, ProgressEvent, emit, resolve_callbacks, scoped
from lgeom.specs import Problem, neutral_setting, raise_problems
from lgeom.surfaces.three_point_plane import PlaneResult, plane
from lgeom.table import Table

FITTED_KINDS = names.CURVES
LINE_NAME = names.LINE
ALIGNED_SUFFIX = names.ALIGNED_SUFFIX
#: The timed parts of a path (:attr:`PathResult.timings`).
PATH_PARTS = ("fit", "evaluate", "plane")


@dataclass(frozen=True)
class ConnectSpec:
    """Settings of :func:`connect_pair`.

    Attributes:
        kinds: fitted curve kinds (``bezier``, ``polychain``); the line is always evaluated.
        bends: control points per fitted curve.
        fit: how curves are fitted (:class:`~lgeom.curves.CurveFitSpec`).
        points: evenly spaced values of t evaluated along every path (>= 2).
        align: also connect A with B permuted onto A (weight matching); results under ``<path>_aligned``.
        bn_batches, bn_batch_size: fixed training batches for the BatchNorm recompute at path and grid points.
        eval_train_samples: cap on the training samples evaluated along paths (``None``: all).
        eval_batch_size: batch size of evaluation.
        plane: compute the plane through A, C, B for every fitted curve (the aligned ones with ``plane_aligned``).
        plane_grid, plane_margin: plane grid points per axis and margin (fraction of the extent).
        plane_samples: training and test samples (each) the plane grid is evaluated on: a seeded subset
            stratified by class (:func:`lgeom.data.stratified_subset`), independent of ``eval_train_samples``
            (``None``: every sample). The plane is a picture: its grid costs ``plane_grid**2`` evaluations over
            these samples, while the paths are measured on all of them. With 2,000 samples per split, a
            Fashion-MNIST CNN's loss and accuracy grids stayed within 0.04 nats and 1.9 percentage points
            (mean 0.02 nats, 0.7 points) of those on the full 10,000 + 10,000 samples, at 4.4x less CPU time;
            1,000 allowed 0.10 nats and 2.2 points (``bench/plane_samples.py``, ``bench/RESULTS.md``).
        plane_aligned: also compute the plane of the aligned curves (``align``); off by default, as it repeats
            the plane's cost for a second picture of the same kind.
        seed: seeds the training subset, the BatchNorm batches and the alignment's visiting order.
    """

    kinds: tuple[str, ...] = FITTED_KINDS
    bends: int = 1
    fit: CurveFitSpec = field(default_factory=CurveFitSpec)
    points: int = 61
    align: bool = False
    bn_batches: int = 10
    bn_batch_size: int = 128
    eval_train_samples: int | None = None
    eval_batch_size: int = neutral_setting(EVAL_BATCH_SIZE, "batch-size-weighted means do not depend on the batching")
    plane: bool = True
    plane_grid: int = 21
    plane_margin: float = 0.2
    plane_samples: int | None = 2000
    plane_aligned: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        raise_problems(self, self.problems())

    def problems(self) -> list[Problem]:
        """Every invalid field, as a :class:`~lgeom.specs.Problem` ``"<field>: expected X, got Y"`` (empty when
        valid).
        """
        out: list[Problem] = []
        bad = [k for k in self.kinds if k not in FITTED_KINDS]
        if bad or len(set(self.kinds)) != len(self.kinds):
            out.append(
                Problem("kinds", f"expected distinct names among {', '.join(FITTED_KINDS)}, got {list(self.kinds)!r}")
            )
        if not isinstance(self.fit, CurveFitSpec):
            out.append(Problem("fit", f"expected a CurveFitSpec, got {type(self.fit).__name__}"))
        for name, lo in (
            ("bends", 1),
            ("points", 2),
            ("bn_batches", 1),
            ("bn_batch_size", 1),
            ("eval_batch_size", 1),
            ("plane_grid", 2),
            ("seed", 0),
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                out.append(Problem(name, f"expected an integer >= {lo}, got {v!r}"))
        for name in ("eval_train_samples", "plane_samples"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                out.append(Problem(name, f"expected an integer >= 1 or None, got {v!r}"))
        for name in ("align", "plane", "plane_aligned"):
            v = getattr(self, name)
            if not isinstance(v, bool):
                out.append(Problem(name, f"expected true or false, got {v!r}"))
        if (
            not isinstance(self.plane_margin, (int, float))
            or not math.isfinite(self.plane_margin)
            or self.plane_margin < 0
        ):
            out.append(Problem("plane_margin", f"expected a finite number >= 0, got {self.plane_margin!r}"))
        return out


@dataclass
class ConnectData:
    """The data every stage evaluates on (built once by :func:`prepare_data`).

    Attributes:
        train: the training set curves are fitted on (as trained on, possibly augmented).
        train_batches: fixed unaugmented training batches for evaluation (capped by ``eval_train_samples``).
        test_batches: test batches for evaluation.
        bn_batches: fixed training batches for the BatchNorm recompute (``None`` for models without BN).
        plane_train_batches, plane_test_batches: the class-stratified subsets of ``plane_samples`` training
            (unaugmented) and test samples the plane grid is evaluated on (the same lists as
            ``train_batches`` / ``test_batches`` when the cap takes every sample).
    """

    train: Dataset
    train_batches: list[tuple[torch.Tensor, torch.Tensor]]
    test_batches: list[tuple[torch.Tensor, torch.Tensor]]
    bn_batches: list[tuple[torch.Tensor, torch.Tensor]] | None
    plane_train_batches: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    plane_test_batches: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Built by hand without plane batches: the plane uses the evaluation batches.
        self.plane_train_batches = self.plane_train_batches or self.train_batches
        self.plane_test_batches = self.plane_test_batches or self.test_batches


@dataclass
class PathResult:
    """One evaluated path.

    Attributes:
        name: ``linear``, ``bezier``, ``polychain`` (plus ``_aligned``).
        curve: the path (a :class:`~lgeom.curves.Line` for ``linear``).
        table: column ``t`` and ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``, ``gen_gap``,
            ``gen_gap_acc`` (accuracy in percent).
        metrics: :func:`lgeom.path.path_metrics` of the table (keys without the path name).
        fit: the curve fit (``None`` for the line).
        triangle: A, C, B geometry with C the curve's control point (``None`` for the line).
        mid_triangle: A, phi(0.5), B geometry (``None`` for the line).
        plane: the plane through A, C, B (``None`` for the line or when not asked for).
        aligned: whether B was permuted onto A.
        timings: wall seconds of this path's parts: ``fit`` (the curve fit), ``evaluate`` (train/test loss and
            accuracy at every point) and ``plane``; a part that did not run is absent.
    """

    name: str
    curve: Curve
    table: Table
    metrics: dict[str, float]
    fit: CurveFitResult | None = None
    triangle: Triangle | None = None
    mid_triangle: Triangle | None = None
    plane: PlaneResult | None = None
    aligned: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def flat_metrics(self) -> dict[str, float]:
        """This path's scalar metrics under the contract's names (``<path>.test.loss_barrier``,
        ``<path>.gen_gap_max``, ``<curve>.dist_ac`` ...; phi(0.5)'s triangle under ``<curve>.mid.*``).
        """
        out = path_metrics(self.table, self.name)
        if self.triangle is not None:
            out.update({names.triangle_metric(self.name, k): v for k, v in self.triangle.as_dict().items()})
        if self.mid_triangle is not None:
            out.update(
                {
                    names.triangle_metric(self.name, k, point=names.MID): v
                    for k, v in self.mid_triangle.as_dict().items()
                }
            )
        if self.triangle is None:
            out[names.triangle_metric(self.name, "dist_ab")] = distance(self.curve.start, self.curve.end)
        if self.fit is not None and len(self.fit.history):
            out[names.fit_metric(self.name, "fit_loss")] = float(self.fit.history["loss"][-1])
            out[names.fit_metric(self.name, "fit_time_s")] = float(self.fit.wall_time_s)
        return out


@dataclass
class ConnectResult:
    """Everything :func:`connect_pair` computed.

    Attributes:
        a_params, a_buffers, b_params, b_buffers: the endpoints as given (B not permuted).
        endpoints: ``{"a": {"train": EvalResult, "test": EvalResult}, "b": {...}}`` (trained statistics).
        paths: path name -> :class:`PathResult`, in the order they were computed.
        alignment: the weight matching of B onto A (``None`` without alignment).
    """

    a_params: Params
    a_buffers: Params
    b_params: Params
    b_buffers: Params
    endpoints: dict[str, dict[str, EvalResult]]
    paths: dict[str, PathResult]
    alignment: Alignment | None = None

    def metrics(self) -> dict[str, float]:
        """Every scalar metric under DESIGN.md's names: ``a.train_loss``, ``a.test_acc``, ``b.…``, then each
        path's :meth:`PathResult.flat_metrics`, and ``align.iterations`` / ``align.similarity_before`` /
        ``align.similarity_after`` when aligned.
        """
        out: dict[str, float] = {}
        for ep, results in self.endpoints.items():
            for split, res in results.items():
                out[names.endpoint_metric(ep, split, "loss")] = res.loss
                out[names.endpoint_metric(ep, split, "acc")] = res.acc
        for p in self.paths.values():
            out.update(p.flat_metrics())
        if self.alignment is not None:
            out[names.align_metric("iterations")] = float(self.alignment.iterations)
            out[names.align_metric("similarity_before")] = self.alignment.similarity_before
            out[names.align_metric("similarity_after")] = self.alignment.similarity_after
        return out

    def seconds(self) -> dict[str, float]:
        """Wall seconds per part summed over every path: ``{"fit", "evaluate", "plane"}`` (0 for a part that
        never ran).
        """
        return {part: sum(p.timings.get(part, 0.0) for p in self.paths.values()) for part in PATH_PARTS}


def distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Euclidean distance ``||A - B||`` over all parameters (float64)."""
    return math.sqrt(sum(float((a[n].detach().double() - b[n].detach().double()).square().sum()) for n in a))


def path_names(spec: ConnectSpec) -> list[str]:
    """Names of the paths :func:`connect_pair` computes for ``spec``, in order."""
    base = [LINE_NAME, *spec.kinds]
    return base + ([names.aligned(n) for n in base] if spec.align else [])


def prepare_data(
    model: nn.Module, train: Dataset, test: Dataset, spec: ConnectSpec, *, train_eval: Dataset | None = None
) -> ConnectData:
    """Fix the evaluation batches, the plane's (class-stratified, ``spec.plane_samples`` per split) and the
    BatchNorm batches once for every stage.

    Args:
        model: the architecture (decides whether BN batches are needed).
        train: training set as trained on (curves are fitted on it).
        test: test set.
        spec: connection settings.
        train_eval: unaugmented training set for evaluation and BN statistics (default: ``train``).

    Returns:
        :class:`ConnectData`.

    Raises:
        ValueError: an empty dataset.
    """
    train_eval = train if train_eval is None else train_eval
    for what, ds in (("train data", train), ("train_eval data", train_eval), ("test data", test)):
        if len(ds) == 0:  # type: ignore[arg-type]
            raise expected(what, "a non-empty dataset", "an empty one (0 samples)")
    evaluated = random_subset(train_eval, spec.eval_train_samples, seed=spec.seed)
    bn = None
    if has_batchnorm(model):
        bn = fixed_batches(train_eval, spec.bn_batch_size, n_batches=spec.bn_batches, seed=spec.seed)
    train_batches = list(make_loader(evaluated, spec.eval_batch_size))
    test_batches = list(make_loader(test, spec.eval_batch_size))

    def plane_batches(ds: Dataset, full: list[tuple[torch.Tensor, torch.Tensor]] | None) -> list:
        # ``full``: the evaluation batches when they hold all of ``ds`` (reused rather than copied).
        cap = spec.plane_samples
        if not spec.plane:
            return []
        if cap is None or cap >= len(ds):  # type: ignore[arg-type]
            return full if full is not None else list(make_loader(ds, spec.eval_batch_size))
        return list(make_loader(stratified_subset(ds, cap, seed=spec.seed), spec.eval_batch_size))

    all_train = evaluated is train_eval
    return ConnectData(
        train=train,
        train_batches=train_batches,
        test_batches=test_batches,
        bn_batches=bn,
        plane_train_batches=plane_batches(train_eval, train_batches if all_train else None),
        plane_test_batches=plane_batches(test, test_batches),
    )


def evaluate_endpoints(
    model: nn.Module,
    endpoints: Mapping[str, tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]],
    data: ConnectData,
) -> dict[str, dict[str, EvalResult]]:
    """Train/test loss and accuracy of trained endpoints with their own BatchNorm statistics.

    Args:
        endpoints: name -> ``(params, buffers)``.

    Returns:
        name -> ``{"train": EvalResult, "test": EvalResult}``.
    """
    splits = {"train": data.train_batches, "test": data.test_batches}
    return {
        name: evaluate_point(model, dict(params), splits, buffers=dict(buffers), endpoint=True)
        for name, (params, buffers) in endpoints.items()
    }


def align_endpoint(
    model: nn.Module,
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    b_buffers: Mapping[str, torch.Tensor],
    *,
    seed: int = 0,
) -> Alignment:
    """B permuted onto A by weight matching (see :func:`lgeom.align.weight_matching`).

    Returns:
        :class:`~lgeom.align.Alignment` with tensors on B's device.
    """
    return weight_matching(model, a, b, buffers_b=b_buffers if b_buffers else None, seed=seed)


def connect_path(
    model: nn.Module,
    kind: str,
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    *,
    a_buffers: Mapping[str, torch.Tensor],
    b_buffers: Mapping[str, torch.Tensor],
    data: ConnectData,
    spec: ConnectSpec,
    aligned: bool = False,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = True,
) -> PathResult:
    """Build (and for ``bezier`` / ``polychain`` fit) one path from A to B and measure it.

    Args:
        model: the architecture.
        kind: ``line``, ``bezier`` or ``polychain``.
        a, b: endpoint parameters (B already aligned when ``aligned``).
        a_buffers, b_buffers: the endpoints' trained buffers (t = 0 and t = 1 keep them).
        data: from :func:`prepare_data`.
        spec: connection settings.
        aligned: whether B was permuted onto A (only names the result).
        callbacks, progress: passed to :func:`~lgeom.curves.fit_curve`, the path evaluation (task ``"path"``)
            and the plane (task ``"plane"``), scoped by the path's name; ``progress`` adds a bar (a line per
            10% when the output is not a terminal) to each.

    Returns:
        :class:`PathResult` named ``linear`` / ``bezier`` / ``polychain`` (+ ``_aligned``).

    Raises:
        ValueError: unknown kind, or endpoints of different architectures.
    """
    if kind not in CURVE_KINDS:
        raise expected("curve kind", "one of " + ", ".join(sorted(CURVE_KINDS)), kind)
    name = LINE_NAME if kind == "line" else kind
    name = names.aligned(name) if aligned else name
    curve = build_curve(kind, a, b, spec.bends)
    cbs = scoped(callbacks, name)
    fit = None
    timings: dict[str, float] = {}
    if curve.bends:
        t0 = time.perf_counter()
        fit = fit_curve(model, curve, data.train, spec.fit, callbacks=cbs, progress=progress)
        timings["fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ts = np.linspace(0.0, 1.0, spec.points)
    table = evaluate_path(
        model,
        curve,
        ts,
        data.train_batches,
        data.test_batches,
        bn_batches=data.bn_batches,
        endpoint_buffers=(a_buffers, b_buffers),
        callbacks=resolve_callbacks(cbs, progress, f"path {name}"),
    )
    table = with_gen_gap(table)
    timings["evaluate"] = time.perf_counter() - t0
    result = PathResult(
        name=name, curve=curve, table=table, metrics=path_metrics(table), fit=fit, aligned=aligned, timings=timings
    )
    if curve.bends:
        apex = curve.apex()
        result.triangle = triangle(curve.start, apex, curve.end)
        result.mid_triangle = triangle(curve.start, curve.midpoint(), curve.end)
        if spec.plane and (spec.plane_aligned or not aligned):
            t0 = time.perf_counter()
            result.plane = plane(
                model,
                curve.start,
                apex,
                curve.end,
                train=data.plane_train_batches,
                test=data.plane_test_batches,
                bn_batches=data.bn_batches,
                grid=spec.plane_grid,
                margin=spec.plane_margin,
                curve=curve,
                curve_points=spec.points,
                callbacks=cbs,
                progress=progress,
            )
            timings["plane"] = time.perf_counter() - t0
    return result


def connect_pair(
    model: nn.Module,
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    *,
    a_buffers: Mapping[str, torch.Tensor] | None = None,
    b_buffers: Mapping[str, torch.Tensor] | None = None,
    train: Dataset,
    test: Dataset,
    train_eval: Dataset | None = None,
    spec: ConnectSpec | None = None,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = True,
) -> ConnectResult:
    """Connect endpoints A and B of ``model``: evaluate both, then the line and every fitted curve between
    them (and, with ``spec.align``, the same between A and B permuted onto A).

    Tensors may live on any device (A's device is used; data batches are moved there).

    Args:
        model: the architecture (not mutated).
        a, b: endpoint parameters (names and shapes of the model's trainable parameters).
        a_buffers, b_buffers: the endpoints' trained buffers; required for models with BatchNorm.
        train: training set as trained on (curves are fitted on it).
        test: test set.
        train_eval: unaugmented training set for evaluation (default: ``train``).
        spec: settings (default ``ConnectSpec()``).
        callbacks: receive :class:`~lgeom.progress.ProgressEvent` (task ``"connect"``, one step per path,
            plus the events of curve fitting and planes).
        progress: show tqdm bars.

    Returns:
        :class:`ConnectResult`; :meth:`ConnectResult.metrics` gives the contract's metric names.

    Raises:
        ValueError: endpoints of different architectures or not matching ``model`` (naming the first
            mismatching parameter), missing BatchNorm buffers, or an empty dataset.
    """
    spec = spec or ConnectSpec()
    check_same_structure(a, b, first_name="A", second_name="B")
    check_model_matches(model, a, what="A")
    if has_batchnorm(model) and (a_buffers is None or b_buffers is None):
        raise expected("a_buffers/b_buffers", "the endpoints' BatchNorm running statistics (trained buffers)", None)
    device = next(iter(a.values())).device
    own = get_buffers(model)
    a_buf = {n: v.to(device) for n, v in (a_buffers if a_buffers is not None else own).items()}
    b_buf = {n: v.to(device) for n, v in (b_buffers if b_buffers is not None else own).items()}
    b = {n: v.to(device) for n, v in b.items()}
    data = prepare_data(model, train, test, spec, train_eval=train_eval)
    cbs = list(callbacks or [])
    total = len(path_names(spec))
    emit(cbs, ProgressEvent("connect", "start", 0, total))
    endpoints = evaluate_endpoints(model, {"a": (a, a_buf), "b": (b, b_buf)}, data)
    variants: list[tuple[bool, Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]] = [(False, b, b_buf)]
    alignment = None
    if spec.align:
        alignment = align_endpoint(model, a, b, b_buf, seed=spec.seed)
        variants.append((True, alignment.params, alignment.buffers or b_buf))
    paths: dict[str, PathResult] = {}
    for aligned, b_params, b_buffers_v in variants:
        for kind in ("line", *spec.kinds):
            res = connect_path(
                model,
                kind,
                a,
                b_params,
                a_buffers=a_buf,
                b_buffers=b_buffers_v,
                data=data,
                spec=spec,
                aligned=aligned,
                callbacks=cbs,
                progress=progress,
            )
            paths[res.name] = res
            emit(
                cbs,
                ProgressEvent(
                    "connect",
                    "step",
                    len(paths),
                    total,
                    metrics={
                        names.barrier_metric(res.name, "test", "loss_barrier"): res.metrics.get(
                            names.barrier_metric(None, "test", "loss_barrier"), math.nan
                        )
                    },
                ),
            )
    emit(cbs, ProgressEvent("connect", "end", len(paths), total))
    return ConnectResult(
        a_params={n: v.detach() for n, v in a.items()},
        a_buffers=a_buf,
        b_params={n: v.detach() for n, v in b.items()},
        b_buffers=b_buf,
        endpoints=endpoints,
        paths=paths,
        alignment=alignment,
    )
