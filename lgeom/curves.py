"""Curves in weight space between two endpoints A (t = 0) and B (t = 1), for any ``nn.Module``.

Points are parameter dicts evaluated through ``torch.func.functional_call``; there are no per-layer curve
modules. With control points ``P_0 = A, P_1..P_k`` (the *bends*) and ``P_{k+1} = B``:

* ``Line``: ``phi(t) = (1 - t) A + t B`` (no bends).
* ``Bezier``: ``phi(t) = sum_i binom(k+1, i) t^i (1 - t)^(k+1-i) P_i``; for one bend C,
  ``(1 - t)^2 A + 2 t (1 - t) C + t^2 B`` (Garipov et al. 2018).
* ``PolyChain``: piecewise linear through the control points at ``t = i / (k + 1)``; for one bend,
  ``A + 2t (C - A)`` for ``t <= 1/2`` and ``C + (2t - 1)(B - C)`` after.

Bends start on the straight line (one bend: ``C = (A + B) / 2``) and are the only trainable tensors.
:func:`fit_curve` trains them on ``E_{t~U(0,1)} L(phi(t))``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import Dataset

from lgeom._checks import check_positive_int, check_same_structure, expected
from lgeom.batchnorm import has_batchnorm
from lgeom.data import make_loader
from lgeom.models._layers import channels_last_steps
from lgeom.optim import OptimSpec, build_optimizer, lr_factor, set_lr
from lgeom.params import Params, get_buffers, has_tied_tensors
from lgeom.progress import Callback, ProgressEvent, emit, resolve_callbacks
from lgeom.safe_io import load_plain, save_plain
from lgeom.specs import Problem
from lgeom.table import Table
from lgeom.train import check_finite_losses

CURVE_KINDS: dict[str, type[Curve]] = {}


def check_t(t: float | torch.Tensor) -> float:
    """``t`` as a Python float after checking it lies in [0, 1].

    Raises:
        ValueError: ``t`` is NaN or outside [0, 1].
    """
    value = float(t)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise expected("t", "a value in [0, 1]", value)
    return value


class Curve:
    """A parametric path ``phi: [0, 1] -> parameters`` through fixed endpoints and trainable bends.

    Attributes:
        start: parameters of A (detached).
        end: parameters of B (detached).
        bends: trainable control points, each a dict of leaf tensors with ``requires_grad``.
    """

    kind = "curve"

    def __init__(
        self,
        start: Mapping[str, torch.Tensor],
        end: Mapping[str, torch.Tensor],
        bends: int | Sequence[Mapping[str, torch.Tensor]] = 1,
    ) -> None:
        check_same_structure(start, end, first_name="start (A)", second_name="end (B)")
        self.start: Params = {n: t.detach() for n, t in start.items()}
        self.end: Params = {n: t.detach() for n, t in end.items()}
        self._names = tuple(self.start)
        if isinstance(bends, int):
            check_positive_int(f"{self.kind} bends", bends, allow_zero=self.kind == "line")
            k = bends
            self.bends: list[Params] = [
                {n: ((1 - s) * self.start[n] + s * self.end[n]).clone().requires_grad_(True) for n in self.start}
                for s in (i / (k + 1) for i in range(1, k + 1))
            ]
        else:
            self.bends = []
            for i, b in enumerate(bends):
                check_same_structure(self.start, b, first_name="start (A)", second_name=f"bend {i}")
                self.bends.append({n: t.detach().clone().requires_grad_(True) for n, t in b.items()})

    @property
    def n_bends(self) -> int:
        """Number of trainable control points."""
        return len(self.bends)

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names, in the order of ``start``."""
        return self._names

    def control_points(self) -> list[Params]:
        """``[A, *bends, B]``."""
        return [self.start, *self.bends, self.end]

    def parameters(self) -> list[torch.Tensor]:
        """The trainable leaf tensors (every bend's tensors), for an optimiser."""
        return [t for b in self.bends for t in b.values()]

    def coefficients(self, t: float) -> list[float]:
        """Weights of ``[A, *bends, B]`` at ``t`` (they sum to 1)."""
        raise NotImplementedError

    def point(self, t: float | torch.Tensor) -> Params:
        """Parameters at ``t`` (differentiable with respect to the bends, constant in A and B).

        The weights sum to 1, so ``phi(t)`` is a chain of ``torch._foreach_lerp`` list operations: first
        ``lerp(A, B, w_B / (w_A + w_B))``, then ``lerp(., P_i, w_i / (w_A + w_B + w_1 + ... + w_i))`` for
        each bend. One bend costs two passes over the parameters (instead of three multiply-adds), the
        Python cost does not grow with the number of tensors, and t = 0 and t = 1 give A and B exactly.
        Every bend stays in the graph, so a bend of weight 0 gets a zero gradient rather than none.

        Raises:
            ValueError: ``t`` outside [0, 1].
        """
        weights = self.coefficients(check_t(t))
        names = self._names
        start = [self.start[n] for n in names]
        cum = weights[0] + weights[-1]
        with torch.no_grad():
            out = torch._foreach_lerp(start, [self.end[n] for n in names], weights[-1] / cum) if cum > 0 else start
        for w, bend in zip(weights[1:-1], self.bends):
            cum += w
            out = torch._foreach_lerp(out, [bend[n] for n in names], w / cum if cum > 0 else 0.0)
        return dict(zip(names, out))

    def midpoint(self) -> Params:
        """``phi(0.5)`` detached."""
        return {n: v.detach() for n, v in self.point(0.5).items()}

    def apex(self) -> Params:
        """The control point used for triangle geometry: the middle bend (``C`` for one bend), detached.

        With an even number of bends the one just before the middle is taken; a line has no apex.

        Raises:
            ValueError: for a curve without bends.
        """
        if not self.bends:
            raise expected(f"{self.kind} bends", "at least one control point for a triangle", 0)
        return {n: v.detach() for n, v in self.bends[(self.n_bends - 1) // 2].items()}

    def to_state(self) -> dict[str, Any]:
        """Everything needed to rebuild the curve: kind, endpoints and bends (detached CPU tensors)."""
        cpu = lambda d: {n: v.detach().cpu().clone() for n, v in d.items()}  # noqa: E731
        return {
            "kind": self.kind,
            "start": cpu(self.start),
            "end": cpu(self.end),
            "bends": [cpu(b) for b in self.bends],
        }

    def to(self, device: torch.device | str) -> Curve:
        """The same curve with every tensor on ``device`` (bends stay trainable leaves)."""
        return type(self)(
            {n: v.to(device) for n, v in self.start.items()},
            {n: v.to(device) for n, v in self.end.items()},
            [{n: v.detach().to(device) for n, v in b.items()} for b in self.bends] if self.kind != "line" else 0,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bends={self.n_bends}, params={len(self.start)} tensors)"


def _register(cls: type[Curve]) -> type[Curve]:
    CURVE_KINDS[cls.kind] = cls
    return cls


@_register
class Line(Curve):
    """Straight line ``(1 - t) A + t B``.

    >>> a, b = {"w": torch.tensor([0.0, 0.0])}, {"w": torch.tensor([2.0, 4.0])}
    >>> Line(a, b).point(0.25)["w"]
    tensor([0.5000, 1.0000])
    """

    kind = "line"

    def __init__(
        self, start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor], bends: int | Sequence[Any] = 0
    ) -> None:
        if not isinstance(bends, int) or bends != 0:
            if not (isinstance(bends, Sequence) and len(bends) == 0):
                raise expected("line bends", "0 (a line has no control points)", bends)
        super().__init__(start, end, 0)

    def coefficients(self, t: float) -> list[float]:
        """The weights ``[1 - t, t]`` of ``A`` and ``B`` at ``t``."""
        return [1.0 - t, t]


@_register
class Bezier(Curve):
    """Bezier curve of degree ``bends + 1`` with Bernstein weights.

    One bend C: ``phi(t) = (1 - t)^2 A + 2 t (1 - t) C + t^2 B``, so ``phi(1/2) = A/4 + C/2 + B/4``:

    >>> a, c, b = {"w": torch.tensor([0.0, 0.0])}, {"w": torch.tensor([2.0, 0.0])}, {"w": torch.tensor([2.0, 4.0])}
    >>> Bezier(a, b, [c]).point(0.5)["w"].detach()
    tensor([1.5000, 1.0000])
    """

    kind = "bezier"

    def coefficients(self, t: float) -> list[float]:
        """The Bernstein weights of ``A, bends..., B`` at ``t`` (``bends + 2`` numbers summing to 1)."""
        n = self.n_bends + 1
        return [math.comb(n, i) * t**i * (1.0 - t) ** (n - i) for i in range(n + 1)]


@_register
class PolyChain(Curve):
    """Polygonal chain through ``A, bends..., B`` with knots at ``t = i / (bends + 1)``.

    One bend C: ``phi(t) = A + 2 t (C - A)`` for ``t <= 1/2``, ``C + (2 t - 1) (B - C)`` after:

    >>> a, c, b = {"w": torch.tensor([0.0, 0.0])}, {"w": torch.tensor([2.0, 0.0])}, {"w": torch.tensor([2.0, 4.0])}
    >>> chain = PolyChain(a, b, [c])
    >>> chain.point(0.25)["w"].detach(), chain.point(0.75)["w"].detach()
    (tensor([1., 0.]), tensor([2., 2.]))
    """

    kind = "polychain"

    def coefficients(self, t: float) -> list[float]:
        """The weights of ``A, bends..., B`` at ``t``: nonzero only at the two knots around ``t``."""
        segments = self.n_bends + 1
        coeffs = [0.0] * (segments + 1)
        pos = t * segments
        i = min(int(math.floor(pos)), segments - 1)
        frac = pos - i
        coeffs[i] = 1.0 - frac
        coeffs[i + 1] = frac
        return coeffs


def build_curve(kind: str, start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor], bends: int = 1) -> Curve:
    """A curve by name (``line``, ``bezier``, ``polychain``) with ``bends`` control points on the segment.

    Raises:
        ValueError: unknown kind, or endpoints of different architectures (names the first mismatch).
    """
    if kind not in CURVE_KINDS:
        raise expected("curve kind", "one of " + ", ".join(sorted(CURVE_KINDS)), kind)
    return CURVE_KINDS[kind](start, end, 0 if kind == "line" else bends)


def curve_from_state(state: Mapping[str, Any]) -> Curve:
    """Rebuild a curve from :meth:`Curve.to_state` output."""
    kind = state.get("kind")
    if kind not in CURVE_KINDS:
        raise expected("curve state kind", "one of " + ", ".join(sorted(CURVE_KINDS)), kind)
    return CURVE_KINDS[kind](state["start"], state["end"], state["bends"] if kind != "line" else 0)


def save_curve(path: str | os.PathLike[str], curve: Curve, **extra: Any) -> Path:
    """Save a curve with ``extra`` metadata (e.g. the model config needed to rebuild the architecture).

    Written atomically with ``torch.save``: ``{"curve": curve.to_state(), "extra": extra}``, plain data
    only (``extra`` must hold dicts, lists, numbers and strings) so that :func:`load_curve` can read it
    with ``weights_only=True``.

    Raises:
        TypeError: ``extra`` holds something other than plain data (nothing is written).
    """
    return save_plain({"curve": curve.to_state(), "extra": extra}, path)


def load_curve(path: str | os.PathLike[str]) -> tuple[Curve, dict[str, Any]]:
    """Load a curve saved by :func:`save_curve`; returns ``(curve, extra)``.

    The file is read as plain data (``torch.load(weights_only=True)``): nothing in it is executed.

    Raises:
        FileNotFoundError: no file at ``path``.
        lgeom.safe_io.UnsafeFileError: (a ValueError) not plain data or not a torch file.
        ValueError: the file is not a saved curve.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"curve: expected a file at {p}, got nothing there")
    data = load_plain(p, "curve", "a curve written by lgeom connect (save_curve)")
    if not isinstance(data, dict) or not isinstance(data.get("curve"), dict) or "kind" not in data["curve"]:
        raise expected("curve file", "a curve written by lgeom connect (save_curve)", str(p))
    try:
        curve = curve_from_state(data["curve"])
    except (KeyError, TypeError, AttributeError) as err:
        raise expected(
            "curve file", "a curve written by lgeom connect (save_curve)", f"{p} ({type(err).__name__}: {err})"
        ) from None
    extra = data.get("extra", {})
    return curve, dict(extra) if isinstance(extra, dict) else {}


# --- fitting ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurveFitSpec(OptimSpec):
    """How :func:`fit_curve` trains the bends (optimiser fields as in :class:`~lgeom.optim.OptimSpec`).

    Defaults follow Garipov et al. (2018): SGD with momentum and the ``piecewise`` schedule.

    Attributes:
        weight_decay: L2 penalty ``weight_decay / 2 * ||phi(t)||^2`` on the point of the curve (not on the
            bends themselves), as in the mode-connectivity papers.
        epochs: passes over the training data.
        batch_size: samples per step.
        t_per_batch: values of t drawn per batch; the loss is averaged over them (each evaluated on the
            whole batch), which lowers the variance of the estimate of ``E_t L(phi(t))`` at that many
            forward/backward passes per step.
        seed: seeds batch shuffling and the draws of t.
    """

    lr: float = 0.05
    schedule: str = "piecewise"
    epochs: int = 10
    batch_size: int = 128
    t_per_batch: int = 1
    seed: int = 0

    def problems(self) -> list[Problem]:
        """Every invalid field (empty when valid)."""
        out = super().problems()
        for name in ("epochs", "batch_size", "t_per_batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                out.append(Problem(name, f"expected an integer > 0, got {v!r}"))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            out.append(Problem("seed", f"expected an integer >= 0, got {self.seed!r}"))
        return out


@dataclass
class CurveFitResult:
    """What :func:`fit_curve` returns.

    Attributes:
        curve: the fitted curve (the object passed in; its bends were trained in place).
        history: per-epoch table: ``epoch`` (1-based), ``lr`` (at the epoch's end), ``loss`` (mean
            cross-entropy at the sampled points, sample-weighted, without the weight-decay term),
            ``time_s`` (seconds since the start).
        steps: optimiser steps taken.
        wall_time_s: seconds spent fitting.
    """

    curve: Curve
    history: Table
    steps: int
    wall_time_s: float


def fit_curve(
    model: nn.Module,
    curve: Curve,
    train_data: Dataset,
    spec: CurveFitSpec | None = None,
    *,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = True,
) -> CurveFitResult:
    """Train the bends of ``curve`` on ``E_{t ~ U(0, 1)} L(phi(t))`` (A and B stay fixed).

    Each step draws ``spec.t_per_batch`` values of t, evaluates ``model`` at ``phi(t)`` through
    ``functional_call`` on a training batch with BatchNorm in train mode (batch statistics; running
    statistics go to a scratch copy, so ``model`` is not mutated), adds ``weight_decay / 2 * ||phi(t)||^2``,
    and steps the optimiser on the bends only. The learning rate follows ``spec.schedule`` over all steps.

    Args:
        model: the architecture the curve's parameters belong to.
        curve: the curve to fit; its tensors' device is used for the data.
        train_data: training set (map-style dataset, e.g. from :func:`~lgeom.data.build_dataset`).
        spec: optimiser, schedule and loop settings (default ``CurveFitSpec()``).
        callbacks: receive :class:`~lgeom.progress.ProgressEvent` with task ``"fit_curve"`` per step and
            epoch.
        progress: add a tqdm bar.

    Returns:
        :class:`CurveFitResult` (the curve is fitted in place and returned in it).

    Raises:
        ValueError: a curve without bends, empty training data, or parameters that do not match ``model``.
        NonFiniteLossError: the loss became NaN or infinite (names the epoch and step).
    """
    spec = spec or CurveFitSpec()
    if not curve.bends:
        raise expected(f"{curve.kind} bends", "at least one trainable control point to fit", 0)
    if len(train_data) == 0:  # type: ignore[arg-type]
        raise expected("train_data", "a non-empty dataset", "an empty one (0 samples)")
    device = next(iter(curve.start.values())).device
    dtype = next(iter(curve.start.values())).dtype
    check_model_matches(model, curve.start, what="curve")
    # Scratch buffers: BatchNorm in train mode writes running statistics here, not into the model.
    buffers = {
        n: b.to(device, dtype=dtype if b.is_floating_point() else b.dtype) for n, b in get_buffers(model).items()
    }
    bn = has_batchnorm(model)
    n_train = len(train_data)  # type: ignore[arg-type]
    # A final batch of one sample breaks BatchNorm in train mode; drop it only then.
    drop_last = bn and n_train % spec.batch_size == 1 and n_train > 1
    loader = make_loader(train_data, spec.batch_size, shuffle=True, seed=spec.seed, drop_last=drop_last)
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * spec.epochs
    optimizer = build_optimizer(curve.parameters(), spec, weight_decay=0.0)
    t_gen = torch.Generator().manual_seed(spec.seed + 1)
    wd = float(spec.weight_decay)
    k = spec.t_per_batch

    tie = has_tied_tensors(model)

    def forward(params: Params, xb: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**params, **buffers}, (xb,), tie_weights=tie)

    cbs = resolve_callbacks(callbacks, progress, "fit_curve")
    emit(cbs, ProgressEvent("fit_curve", "start", 0, total_steps, 0))
    rows: list[dict[str, float]] = []
    step = 0
    was_training = model.training
    model.train()
    t0 = time.perf_counter()
    try:
        for epoch in range(spec.epochs):
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            n_epoch = 0
            lr = spec.lr
            pending: list[tuple[int, torch.Tensor]] = []
            for xb, yb in loader:
                xb = xb.to(device, non_blocking=True)
                if xb.is_floating_point() and xb.dtype != dtype:
                    xb = xb.to(dtype)
                yb = yb.to(device, non_blocking=True)
                lr = spec.lr * lr_factor(spec, step / total_steps)
                set_lr(optimizer, lr)
                optimizer.zero_grad(set_to_none=True)
                ces: list[torch.Tensor] = []
                for t in torch.rand(k, generator=t_gen, dtype=torch.float64).tolist():
                    phi = curve.point(t)
                    with channels_last_steps():
                        logits = forward(phi, xb)
                    ce = F.cross_entropy(
                        logits if logits.dtype in (torch.float32, torch.float64) else logits.float(), yb
                    )
                    loss = ce
                    if wd > 0:
                        loss = loss + 0.5 * wd * torch.stack(torch._foreach_norm(list(phi.values()))).square().sum()
                    (loss / k if k > 1 else loss).backward()
                    ces.append(ce.detach())
                optimizer.step()
                step += 1
                bs = int(yb.shape[0])
                n_epoch += bs
                mean_ce = ces[0] if k == 1 else torch.stack(ces).mean()
                loss_sum += mean_ce.double() * bs
                pending.append((step, mean_ce))
                # A finiteness check forces a device sync; batching it keeps GPU steps asynchronous.
                if len(pending) >= 25 or device.type == "cpu":
                    check_finite_losses(pending, epoch, task="curve fitting")
                    pending = []
                emit(cbs, ProgressEvent("fit_curve", "step", step, total_steps, epoch))
            check_finite_losses(pending, epoch, task="curve fitting")
            row = {
                "epoch": epoch + 1,
                "lr": lr,
                "loss": float(loss_sum) / max(n_epoch, 1),
                "time_s": time.perf_counter() - t0,
            }
            rows.append(row)
            emit(
                cbs,
                ProgressEvent(
                    "fit_curve", "epoch", step, total_steps, epoch, {k_: v for k_, v in row.items() if k_ != "epoch"}
                ),
            )
    finally:
        model.train(was_training)
    wall = time.perf_counter() - t0
    emit(
        cbs,
        ProgressEvent(
            "fit_curve", "end", step, total_steps, spec.epochs - 1, {"loss": rows[-1]["loss"]} if rows else {}
        ),
    )
    return CurveFitResult(curve=curve, history=Table.from_rows(rows), steps=step, wall_time_s=wall)


def check_model_matches(model: nn.Module, params: Mapping[str, torch.Tensor], *, what: str = "params") -> None:
    """Raise unless ``params`` has exactly the names and shapes of ``model``'s trainable parameters.

    Dtypes and devices may differ (``functional_call`` evaluates the model at whatever tensors it gets).

    Raises:
        ValueError: naming the first parameter whose name or shape differs.
    """
    dtype = next(iter(params.values())).dtype if params else torch.float32
    shapes = {
        n: torch.empty(p.shape, dtype=dtype, device="meta") for n, p in model.named_parameters() if p.requires_grad
    }
    check_same_structure(shapes, {n: v.to("meta") for n, v in params.items()}, first_name="model", second_name=what)
