"""Curves in weight space between two endpoints A (t = 0) and B (t = 1), for any ``nn.Module``.

Points are parameter dicts evaluated through ``torch.func.functional_call``; there are no per-layer curve
modules. With control points ``P_0 = A, P_1..P_k`` (the *bends*) and ``P_{k+1} = B``:

* ``Line``: ``phi(t) = (1 - t) A + t B`` (no bends).
* ``Bezier``: ``phi(t) = sum_i binom(k+1, i) t^i (1 - t)^(k+1-i) P_i``; for one bend C,
  ``(1 - t)^2 A + 2 t (1 - t) C + t^2 B`` (Garipov et al. 2018).
* ``PolyChain``: piecewise linear through the control points at ``t = i / (k + 1)``; for one bend,
  ``A + 2t (C - A)`` for ``t <= 1/2`` and ``C + (2t - 1)(B - C)`` after.

Bends start on the straight line (one bend: ``C = (A + B) / 2``) and are the only trainable tensors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lgeom._checks import check_positive_int, check_same_structure, check_ts, expected
from lgeom.params import Params, combine

CURVE_KINDS: dict[str, type["Curve"]] = {}


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
        """Parameters at ``t`` (differentiable with respect to the bends).

        Raises:
            ValueError: ``t`` outside [0, 1].
        """
        t_val = float(check_ts([float(t)])[0])
        return combine(self.coefficients(t_val), self.control_points())

    def midpoint(self) -> Params:
        """``phi(0.5)`` detached."""
        return {n: v.detach() for n, v in self.point(0.5).items()}

    def to_state(self) -> dict[str, Any]:
        """Everything needed to rebuild the curve: kind, endpoints and bends (detached CPU tensors)."""
        cpu = lambda d: {n: v.detach().cpu().clone() for n, v in d.items()}  # noqa: E731
        return {"kind": self.kind, "start": cpu(self.start), "end": cpu(self.end), "bends": [cpu(b) for b in self.bends]}

    def to(self, device: torch.device | str) -> "Curve":
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
    """Straight line ``(1 - t) A + t B``."""

    kind = "line"

    def __init__(self, start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor], bends: int | Sequence[Any] = 0) -> None:
        if not isinstance(bends, int) or bends != 0:
            if not (isinstance(bends, Sequence) and len(bends) == 0):
                raise expected("line bends", "0 (a line has no control points)", bends)
        super().__init__(start, end, 0)

    def coefficients(self, t: float) -> list[float]:
        return [1.0 - t, t]


@_register
class Bezier(Curve):
    """Bezier curve of degree ``bends + 1`` with Bernstein weights."""

    kind = "bezier"

    def coefficients(self, t: float) -> list[float]:
        n = self.n_bends + 1
        return [math.comb(n, i) * t**i * (1.0 - t) ** (n - i) for i in range(n + 1)]


@_register
class PolyChain(Curve):
    """Polygonal chain through ``A, bends..., B`` with knots at ``t = i / (bends + 1)``."""

    kind = "polychain"

    def coefficients(self, t: float) -> list[float]:
        segments = self.n_bends + 1
        coeffs = [0.0] * (segments + 1)
        pos = t * segments
        i = min(int(math.floor(pos)), segments - 1)
        frac = pos - i
        coeffs[i] = 1.0 - frac
        coeffs[i + 1] = frac
        return coeffs


def build_curve(
    kind: str, start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor], bends: int = 1
) -> Curve:
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

    Written atomically with ``torch.save``: ``{"curve": curve.to_state(), "extra": extra}``.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    torch.save({"curve": curve.to_state(), "extra": extra}, tmp)
    os.replace(tmp, p)
    return p


def load_curve(path: str | os.PathLike[str]) -> tuple[Curve, dict[str, Any]]:
    """Load a curve saved by :func:`save_curve`; returns ``(curve, extra)``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a saved curve.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"curve: expected a file at {p}, got nothing there")
    data = torch.load(p, map_location="cpu", weights_only=False)
    if not isinstance(data, dict) or "curve" not in data:
        raise expected("curve file", "a file written by save_curve", str(p))
    return curve_from_state(data["curve"]), dict(data.get("extra", {}))
