"""Progress reporting without dependencies on the outer layers.

Long loops in lgeom report :class:`ProgressEvent` objects to callbacks (``start``, ``step`` with ``step`` of
``total`` done, ``end``). What shows them:

* :class:`TqdmProgress`: a tqdm bar, for a terminal;
* :class:`PercentLines`: one plain line per 10% (by default) of every long loop, for logs that are not a
  terminal (a Ray worker's output, a redirected run); :func:`resolve_callbacks` picks one of the two;
* :class:`FractionReporter`: the loops open now and their fraction done as one short text, handed to a
  ``report`` function only when it changes by a whole percent; the tracking layer installs one that puts
  the text on the MLflow run as a tag (lgeom itself never imports MLflow).

The loops that can run for minutes, and their task names, are :data:`LONG_TASKS`: the plane through A, C, B
(``plane``), the path evaluation (``path``), the Hessian along a path (``probe_path``), the spectral density
(``slq``), average and worst-case sharpness (``sharpness``, ``sharpness_worst``) and the probes at a point
(``probes``). :func:`fraction` is the fraction done of an event (1.0 at ``end``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from tqdm.auto import tqdm

TASK_PLANE = "plane"
TASK_PATH = "path"
TASK_PROBE_PATH = "probe_path"
TASK_DENSITY = "slq"
TASK_SHARPNESS = "sharpness"
TASK_WORST = "sharpness_worst"
TASK_PROBES = "probes"
#: Loops that can run for minutes on a realistic cell: shown as lines / fractions (see the module doc).
LONG_TASKS = (TASK_PLANE, TASK_PATH, TASK_PROBE_PATH, TASK_DENSITY, TASK_SHARPNESS, TASK_WORST, TASK_PROBES)


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


def fraction(event: ProgressEvent) -> float | None:
    """The fraction done that ``event`` reports: ``step / total`` clipped to [0, 1], 0.0 at ``start``, 1.0 at
    ``end`` (a loop that stops early, e.g. Lanczos on convergence, is done all the same); ``None`` for other
    events of a loop of unknown length.

    >>> fraction(ProgressEvent("plane", "step", 110, 441)), fraction(ProgressEvent("slq", "end", 7, 10))
    (0.2494331065759637, 1.0)
    """
    if event.kind == "end":
        return 1.0
    if event.kind == "start":
        return 0.0
    if event.total <= 0:
        return None
    return min(max(event.step / event.total, 0.0), 1.0)


def _label(event: ProgressEvent) -> str:
    return f"{event.task} {event.scope}" if event.scope else event.task


class TqdmProgress:
    """A tqdm bar driven by :class:`ProgressEvent` (``start`` opens it, ``step`` advances, ``end`` closes).

    The bar follows the loop whose ``start`` opened it: events of other loops (an inner loop sharing the
    callbacks) are ignored until it closes.
    """

    def __init__(self, desc: str | None = None, leave: bool = False, **kwargs: Any) -> None:
        self.desc = desc
        self.leave = leave
        self.kwargs = kwargs
        self.bar: Any = None
        self._following: tuple[str, str] | None = None

    def __call__(self, event: ProgressEvent) -> None:
        """Open, advance or close the bar for one progress event; returns nothing."""
        if self.bar is not None and (event.task, event.scope) != self._following:
            return
        if event.kind == "start":
            self.bar = tqdm(total=event.total or None, desc=self.desc or event.task, leave=self.leave, **self.kwargs)
            self._following = (event.task, event.scope)
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


class PercentLines:
    """One plain line per ``every`` (10%) of each loop: ``<prefix>plane bezier: 30% (133/441, 12.3 s)``.

    Lines go to ``write`` (default: standard error, flushed), at ``start``, each time a loop's fraction done
    passes the next multiple of ``every`` (one line however many multiples one step passes), and at ``end``
    (unless 100% was just written). Several loops (an outer one and the inner loops it runs) are followed at
    once, each by its task and scope.

    With ``quiet_for`` > 0 a loop is shown only once it has run that many seconds: nothing is written for a
    loop that ends sooner, and its ``started`` line is replaced by its first percentage line after the delay
    (a log of many small cells then shows the stages that take long, not a started/100% pair per short loop).

    Args:
        prefix: text put before every line (e.g. ``"[mlp/moons/sgd] "``).
        every: fraction between lines (0 < every <= 1).
        tasks: the tasks shown (default: every task).
        write: receives each line (without a newline).
        quiet_for: seconds a loop runs before its lines are written (0: from its start).
        clock: the time source in seconds (default :func:`time.monotonic`).
    """

    def __init__(
        self,
        prefix: str = "",
        *,
        every: float = 0.1,
        tasks: Collection[str] | None = None,
        write: Callable[[str], None] | None = None,
        quiet_for: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < every <= 1:
            raise ValueError(f"every: expected a fraction in (0, 1], got {every!r}")
        if not (isinstance(quiet_for, (int, float)) and math.isfinite(quiet_for) and quiet_for >= 0):
            raise ValueError(f"quiet_for: expected seconds >= 0, got {quiet_for!r}")
        self.prefix = prefix
        self.every = every
        self.tasks = None if tasks is None else frozenset(tasks)
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.quiet_for = float(quiet_for)
        self.clock = clock
        self._open: dict[tuple[str, str], tuple[int, float, bool]] = {}  # next multiple, start time, 100% shown
        self._shown: set[tuple[str, str]] = set()  # loops past quiet_for (their lines are written)

    def __call__(self, event: ProgressEvent) -> None:
        """Write the line ``event`` calls for, if any."""
        if self.tasks is not None and event.task not in self.tasks:
            return
        key = (event.task, event.scope)
        if event.kind == "start":
            self._open[key] = (1, self.clock(), False)
            self._shown.discard(key)
            if self.quiet_for <= 0:
                self._shown.add(key)
                total = f" ({event.total} steps)" if event.total else ""
                self.write(f"{self.prefix}{_label(event)}: started{total}")
            return
        if key not in self._open or event.kind not in ("step", "end"):
            return
        nxt, t0, full = self._open[key]
        if key not in self._shown:
            if self.clock() - t0 < self.quiet_for:
                if event.kind == "end":
                    del self._open[key]
                return
            self._shown.add(key)  # past the delay: its next line is written whatever multiple it reached
            nxt = 0
        f = fraction(event)
        if event.kind == "end":
            del self._open[key]
            self._shown.discard(key)
            if not full:
                self._line(event, 1.0, t0)
            return
        if f is None:
            if nxt == 0:  # no fraction to show (unknown total): say the loop is still running
                self._open[key] = (1, t0, full)
                self._line(event, None, t0)
            return
        reached = math.floor(f / self.every + 1e-9)
        if reached >= nxt:
            self._open[key] = (max(reached, nxt) + 1, t0, f >= 1.0)
            self._line(event, f, t0)

    def _line(self, event: ProgressEvent, f: float | None, t0: float) -> None:
        count = f"{event.step}/{event.total}, " if event.total else f"step {event.step}, " if f is None else ""
        done = "running" if f is None else f"{100 * f:.0f}%"
        self.write(f"{self.prefix}{_label(event)}: {done} ({count}{self.clock() - t0:.1f} s)")


class FractionReporter:
    """Follows the open loops among ``tasks`` and hands ``report`` one text saying where they stand, e.g.
    ``"probe_path bezier 36% > slq 50%"`` (outer loop first), whenever a loop starts or ends or a whole
    percent (``resolution``) more of one is done. Once no loop is open the text is the last one that closed,
    at 100% (``"probe_path bezier 100%"``), so the last report says how far the work got. Cheap enough to
    call on every event: it reports at most ``1 / resolution + 2`` times per loop.

    Args:
        report: receives the text (the tracking layer sets it as a run tag).
        tasks: the loops followed (default :data:`LONG_TASKS`).
        resolution: the change of a loop's fraction that is reported.
    """

    def __init__(
        self, report: Callable[[str], None], *, tasks: Collection[str] = LONG_TASKS, resolution: float = 0.01
    ) -> None:
        self.report = report
        self.tasks = frozenset(tasks)
        self.resolution = resolution
        self._open: dict[tuple[str, str], int] = {}  # insertion order = nesting order
        self._closed = ""

    def __call__(self, event: ProgressEvent) -> None:
        """Update the open loops with ``event`` and report when the text changed."""
        if event.task not in self.tasks:
            return
        key = (event.task, event.scope)
        f = fraction(event)
        if event.kind == "end":
            if self._open.pop(key, None) is not None:
                self._closed = self._render([(key, round(1 / self.resolution))])
                self.report(self.text())
            return
        if f is None or (event.kind != "start" and key not in self._open):
            return
        units = int(math.floor(f / self.resolution + 1e-9))
        if event.kind == "start":
            self._open.pop(key, None)
        elif units <= self._open[key]:
            return
        self._open[key] = units
        self.report(self.text())

    def text(self) -> str:
        """Where the open loops stand now (the last loop closed, at 100%, when none is open; ``""`` before any)."""
        return self._render(list(self._open.items())) if self._open else self._closed

    def _render(self, loops: list[tuple[tuple[str, str], int]]) -> str:
        return " > ".join(
            f"{task} {scope} {u * self.resolution:.0%}" if scope else f"{task} {u * self.resolution:.0%}"
            for (task, scope), u in loops
        )


def progress_display(desc: str | None = None, *, stream: TextIO | None = None) -> Callback:
    """What shows progress on ``stream`` (default standard error): a :class:`TqdmProgress` bar when it is a
    terminal, else :class:`PercentLines` (one line per 10% of each loop, what a log file or Ray's log wants).
    """
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return TqdmProgress(desc)
    return PercentLines(write=lambda line: print(line, file=stream, flush=True))


def resolve_callbacks(callbacks: Sequence[Callback] | None, progress: bool, desc: str) -> list[Callback]:
    """The callbacks to call: those given, plus, when ``progress``, a display (:func:`progress_display`: a tqdm
    bar named ``desc`` on a terminal, a line per 10% elsewhere).
    """
    out = list(callbacks or [])
    if progress:
        out.append(progress_display(desc))
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
