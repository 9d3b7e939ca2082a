"""Optimisers and learning-rate schedules shared by endpoint training and curve fitting."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from lgeom.specs import Problem, raise_problems

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "piecewise", "cosine")


@dataclass(frozen=True)
class OptimSpec:
    """Optimiser and learning-rate schedule.

    Attributes:
        optimizer: ``sgd`` (with momentum), ``adam`` or ``adamw``.
        lr: base learning rate.
        momentum: SGD momentum.
        nesterov: Nesterov momentum for SGD.
        betas: Adam/AdamW betas.
        weight_decay: L2 (SGD, Adam) or decoupled (AdamW) weight decay.
        schedule: ``constant``; ``step`` (multiply by ``gamma`` at each fraction of training in
            ``milestones``); ``piecewise`` (constant for the first 50% of training, linear decay to 1% of
            the base rate by 90%, then flat: the mode-connectivity schedule); ``cosine`` (to 0).
        milestones: fractions of training (0-1) where the ``step`` schedule decays.
        gamma: decay factor of the ``step`` schedule.
    """

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "constant"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        raise_problems(self, self.problems())

    def problems(self) -> list[Problem]:
        """Every invalid field, each a :class:`~lgeom.specs.Problem` ``"<field>: expected X, got Y"`` (empty when
        valid).
        """
        out: list[Problem] = []
        if self.optimizer not in OPTIMIZERS:
            out.append(Problem("optimizer", f"expected one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"))
        if not _finite(self.lr) or self.lr <= 0:
            out.append(Problem("lr", f"expected a finite number > 0, got {self.lr!r}"))
        if not _finite(self.momentum) or not 0 <= self.momentum < 1:
            out.append(Problem("momentum", f"expected a number in [0, 1), got {self.momentum!r}"))
        if not _finite(self.weight_decay) or self.weight_decay < 0:
            out.append(Problem("weight_decay", f"expected a finite number >= 0, got {self.weight_decay!r}"))
        if self.schedule not in SCHEDULES:
            out.append(Problem("schedule", f"expected one of {', '.join(SCHEDULES)}, got {self.schedule!r}"))
        if len(tuple(self.betas)) != 2 or not all(_finite(b) and 0 <= b < 1 for b in self.betas):
            out.append(Problem("betas", f"expected two numbers in [0, 1), got {self.betas!r}"))
        if not all(_finite(m) and 0 < m < 1 for m in self.milestones):
            out.append(Problem("milestones", f"expected fractions of training in (0, 1), got {self.milestones!r}"))
        if not _finite(self.gamma) or not 0 < self.gamma <= 1:
            out.append(Problem("gamma", f"expected a number in (0, 1], got {self.gamma!r}"))
        return out


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def lr_factor(spec: OptimSpec, progress: float) -> float:
    """Multiplier of the base learning rate at ``progress`` (fraction of training done, 0-1)."""
    p = min(max(progress, 0.0), 1.0)
    if spec.schedule == "constant":
        return 1.0
    if spec.schedule == "step":
        return spec.gamma ** sum(p >= m for m in spec.milestones)
    if spec.schedule == "piecewise":
        if p <= 0.5:
            return 1.0
        if p <= 0.9:
            return 1.0 - (p - 0.5) / 0.4 * 0.99
        return 0.01
    if spec.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {spec.schedule!r}")


def build_optimizer(
    params: Iterable[torch.Tensor], spec: OptimSpec, *, weight_decay: float | None = None
) -> torch.optim.Optimizer:
    """A torch optimiser for ``params`` from ``spec``; ``weight_decay`` overrides the spec's (curve fitting
    applies its decay to phi(t) itself and passes 0 here).
    """
    wd = spec.weight_decay if weight_decay is None else weight_decay
    params = list(params)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov and spec.momentum > 0, weight_decay=wd
        )
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, betas=tuple(spec.betas), weight_decay=wd)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, betas=tuple(spec.betas), weight_decay=wd)
    raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {spec.optimizer!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
