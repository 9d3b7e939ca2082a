"""Progress reporting without dependencies on the outer layers.

Long loops in lgeom report :class:`ProgressEvent` objects to callbacks. The default callback is a tqdm
bar; pipelines add callbacks that log to MLflow or report to Ray Tune.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tqdm.auto import tqdm


@dataclass(frozen=True)
class ProgressEvent:
    """One report from a long loop.

    Attributes:
        task: which loop (``"train"``, ``"fit_curve"``, ``"lanczos"`` ...).
        kind: ``"start"``, ``"step"``, ``"epoch"`` or ``"end"``.
        step: steps done so far.
        total: total steps expected (0 when unknown).
        epoch: current epoch (0-based) where the loop has epochs, else -1.
        metrics: numbers to report (e.g. ``{"loss": ...}``; per-epoch metrics on ``"epoch"`` events).
        scope: what the loop works on when a caller runs it several times (the endpoint ``"a"`` being
            trained, the path ``"bezier"`` being fitted); ``""`` when unset (see :func:`scoped`).
    """

    task: str
    kind: str
    step: int
    total: int = 0
    epoch: int = -1
    metrics: dict[str, float] = field(default_factory=dict)
    scope: str = ""


Callback = Callable[[ProgressEvent], None]


class TqdmProgress:
    """A tqdm bar driven by :class:`ProgressEvent` (``start`` opens it, ``step`` advances, ``end`` closes)."""

    def __init__(self, desc: str | None = None, leave: bool = False, **kwargs: Any) -> None:
        self.desc = desc
        self.leave = leave
        self.kwargs = kwargs
        self.bar: Any = None

    def __call__(self, event: ProgressEvent) -> None:
        """Open, advance or close the bar for one progress event; returns nothing."""
        if event.kind == "start":
            self.bar = tqdm(total=event.total or None, desc=self.desc or event.task, leave=self.leave, **self.kwargs)
        elif self.bar is None:
            return
        elif event.kind == "step":
            self.bar.update(event.step - self.bar.n)
            if event.metrics:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in event.metrics.items()}, refresh=False)
        elif event.kind == "epoch":
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in event.metrics.items()}, refresh=False)
        elif event.kind == "end":
            self.bar.update(max(event.step - self.bar.n, 0))
            self.bar.close()
            self.bar = None


def resolve_callbacks(callbacks: Sequence[Callback] | None, progress: bool, desc: str) -> list[Callback]:
    """The callbacks to call: those given, plus a tqdm bar when ``progress``."""
    out = list(callbacks or [])
    if progress:
        out.append(TqdmProgress(desc))
    return out


def scoped(callbacks: Sequence[Callback] | None, scope: str) -> list[Callback]:
    """``callbacks`` that receive every event with :attr:`ProgressEvent.scope` set to ``scope`` (events
    already scoped by an inner caller keep theirs).
    """

    def wrap(cb: Callback) -> Callback:
        def scoped_callback(event: ProgressEvent) -> None:
            cb(event if event.scope else replace(event, scope=scope))

        return scoped_callback

    return [wrap(cb) for cb in callbacks or []]


def emit(callbacks: Sequence[Callback], event: ProgressEvent) -> None:
    """Send ``event`` to every callback."""
    for cb in callbacks:
        cb(event)
