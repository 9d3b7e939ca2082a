"""Progress events: callbacks get every event in order, the tqdm bar follows start/step/epoch/end of its own
loop and ignores events before its start, a display is added only when asked for (a bar on a terminal, one
line per 10% elsewhere), the fraction reporter follows nested loops at whole percents, and every stage that
can run for minutes (plane, path evaluation, Hessian along a path, density, sharpness) reports fractions that
rise to 1.0.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import pytest

from lgeom.curves import Bezier
from lgeom.hessian import HessianOperator, slq_density
from lgeom.multipoint import evaluate_path
from lgeom.probes import ProbeSettings, probe_path, probe_point
from lgeom.progress import (
    LONG_TASKS,
    FractionReporter,
    PercentLines,
    ProgressEvent,
    TqdmProgress,
    emit,
    fraction,
    progress_display,
    resolve_callbacks,
    scoped,
)
from lgeom.sharpness import ModelLandscape, average_sharpness, worst_sharpness
from lgeom.surfaces import plane
from tests.lgeom.cases import get_case


def test_emit_sends_each_event_to_every_callback_in_order() -> None:
    seen: list[tuple[str, str, int]] = []
    callbacks = [lambda e: seen.append(("first", e.kind, e.step)), lambda e: seen.append(("second", e.kind, e.step))]
    for event in (ProgressEvent("t", "start", 0, total=2), ProgressEvent("t", "step", 1), ProgressEvent("t", "end", 2)):
        emit(callbacks, event)
    assert seen == [
        ("first", "start", 0),
        ("second", "start", 0),
        ("first", "step", 1),
        ("second", "step", 1),
        ("first", "end", 2),
        ("second", "end", 2),
    ]


def test_event_defaults() -> None:
    event = ProgressEvent("lanczos", "step", 3)
    assert (event.total, event.epoch, event.metrics) == (0, -1, {})
    assert ProgressEvent("a", "step", 1).metrics is not event.metrics


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_resolve_callbacks_adds_a_display_only_with_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    def mine(event: ProgressEvent) -> None:
        pass

    assert resolve_callbacks(None, False, "x") == [] and resolve_callbacks([mine], False, "x") == [mine]
    monkeypatch.setattr("sys.stderr", _Terminal())
    with_bar = resolve_callbacks([mine], True, "fit")
    assert with_bar[0] is mine and isinstance(with_bar[1], TqdmProgress) and with_bar[1].desc == "fit"
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a log file, a Ray worker's output
    with_lines = resolve_callbacks([mine], True, "fit")
    assert with_lines[0] is mine and isinstance(with_lines[1], PercentLines)


def test_the_display_is_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    assert isinstance(progress_display("plane", stream=_Terminal()), TqdmProgress)
    log = io.StringIO()
    lines = progress_display("plane", stream=log)
    assert isinstance(lines, PercentLines)
    for event in _loop("plane", 20):
        lines(event)
    assert log.getvalue().count("\n") == 11 and "plane: 100% (20/20" in log.getvalue()


def test_the_bar_follows_the_events(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TqdmProgress(leave=True, mininterval=0)
    bar(ProgressEvent("train", "step", 1))  # before start: ignored
    assert bar.bar is None
    bar(ProgressEvent("train", "start", 0, total=4))
    bar(ProgressEvent("train", "step", 3, total=4, metrics={"loss": 0.123456}))
    assert bar.bar.n == 3 and "loss=0.1235" in str(bar.bar)
    bar(ProgressEvent("train", "epoch", 3, total=4, epoch=0, metrics={"acc": 97.5}))
    assert "acc=97.5" in str(bar.bar)
    bar(ProgressEvent("train", "end", 4, total=4))
    assert bar.bar is None
    err = capsys.readouterr().err
    assert "train: 100%" in err and "4/4" in err


def test_an_unknown_total_and_an_end_short_of_the_steps(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TqdmProgress(desc="probe", leave=True, mininterval=0)
    bar(ProgressEvent("x", "start", 0))
    assert bar.bar.total is None
    bar(ProgressEvent("x", "step", 5))
    bar(ProgressEvent("x", "end", 2))  # never goes back
    err = capsys.readouterr().err
    assert "probe: 5it" in err and bar.bar is None


def _loop(task: str, total: int, scope: str = "") -> list[ProgressEvent]:
    steps = [ProgressEvent(task, "step", i, total, scope=scope) for i in range(1, total + 1)]
    return [
        ProgressEvent(task, "start", 0, total, scope=scope),
        *steps,
        ProgressEvent(task, "end", total, total, scope=scope),
    ]


def test_fraction_of_each_kind_of_event() -> None:
    assert fraction(ProgressEvent("plane", "start", 0, 441)) == 0.0
    assert fraction(ProgressEvent("plane", "step", 147, 441)) == pytest.approx(1 / 3)
    assert fraction(ProgressEvent("plane", "step", 500, 441)) == 1.0  # clipped
    assert fraction(ProgressEvent("lanczos", "end", 7, 40)) == 1.0  # stopped early: done all the same
    assert fraction(ProgressEvent("x", "step", 5)) is None  # unknown length


def test_lines_are_one_per_tenth_of_a_loop() -> None:
    out: list[str] = []
    lines = PercentLines("[cell] ", write=out.append)
    for event in _loop("plane", 100, scope="bezier"):
        lines(event)
    assert out[0] == "[cell] plane bezier: started (100 steps)"
    assert [line.split(": ")[1].split(" ")[0] for line in out[1:]] == [f"{p}%" for p in range(10, 101, 10)]
    assert "(100/100, " in out[-1] and len(out) == 11  # the end event adds nothing after 100%


def test_a_jump_past_several_tenths_writes_one_line_and_an_early_end_closes_the_loop() -> None:
    out: list[str] = []
    lines = PercentLines(write=out.append)
    lines(ProgressEvent("slq", "start", 0, 40))
    lines(ProgressEvent("slq", "step", 2, 40))  # 5%: nothing
    lines(ProgressEvent("slq", "step", 14, 40))  # 35%: one line
    lines(ProgressEvent("slq", "step", 15, 40))  # still below 40%
    lines(ProgressEvent("slq", "end", 15, 40))  # converged early
    lines(ProgressEvent("slq", "step", 30, 40))  # after the end: ignored
    assert out[1:] == [out[1], out[2]] and out[1].startswith("slq: 35% (14/40") and out[2].startswith("slq: 100%")


def test_lines_follow_nested_loops_apart_and_only_the_tasks_asked_for() -> None:
    out: list[str] = []
    lines = PercentLines(tasks=LONG_TASKS, write=out.append)
    lines(ProgressEvent("probe_path", "start", 0, 2, scope="bezier"))
    for event in _loop("slq", 10):
        lines(event)
    for event in _loop("lanczos", 10):  # not a long task
        lines(event)
    lines(ProgressEvent("probe_path", "step", 1, 2, scope="bezier"))
    assert len(out) == 13 and out[-1].startswith("probe_path bezier: 50%")
    assert not any("lanczos" in line for line in out)
    with pytest.raises(ValueError, match="every: expected a fraction in"):
        PercentLines(every=0)


def test_the_bar_follows_its_own_loop_only(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TqdmProgress(leave=True, mininterval=0)
    bar(ProgressEvent("probes", "start", 0, total=3))
    for event in _loop("slq", 10):  # an inner loop sharing the callbacks
        bar(event)
    assert bar.bar is not None and bar.bar.n == 0
    bar(ProgressEvent("probes", "step", 2, total=3))
    assert bar.bar.n == 2
    bar(ProgressEvent("probes", "end", 3, total=3))
    assert bar.bar is None and "probes: 100%" in capsys.readouterr().err


def test_the_fraction_reporter_says_where_the_open_loops_stand_at_whole_percents() -> None:
    texts: list[str] = []
    reporter = FractionReporter(texts.append)
    reporter(ProgressEvent("probe_path", "start", 0, 4, scope="bezier"))
    reporter(ProgressEvent("probe_path", "step", 1, 4, scope="bezier"))
    for i in range(0, 1001):  # a thousand steps: reported at most once per percent
        reporter(ProgressEvent("slq", "step" if i else "start", i, 1000))
    assert texts[:3] == ["probe_path bezier 0%", "probe_path bezier 25%", "probe_path bezier 25% > slq 0%"]
    assert texts[-1] == "probe_path bezier 25% > slq 100%" and len(texts) == 3 + 100
    reporter(ProgressEvent("slq", "end", 1000, 1000))
    reporter(ProgressEvent("train", "step", 5, 10))  # not a long loop
    reporter(ProgressEvent("probe_path", "end", 4, 4, scope="bezier"))
    assert texts[-2:] == ["probe_path bezier 25%", "probe_path bezier 100%"]  # the last loop closed, done
    reporter(ProgressEvent("plane", "start", 0, 9))
    assert texts[-1] == "plane 0%" and reporter.text() == "plane 0%"
    assert FractionReporter(texts.append).text() == ""


# --- every long stage reports fractions rising to 1.0 -------------------------------------------------------


def _stage(name: str) -> Callable[[list], None]:
    """Run stage ``name`` on a tiny float64 case, its progress going to the given callbacks."""
    mlp, bn = get_case("mlp"), get_case("bn_cnn")
    settings = ProbeSettings(hessian_k=1, hessian_points=3, density_runs=1, density_steps=4, sharpness_steps=3)

    def run(cbs: list) -> None:
        if name == "plane":
            a = bn.params
            b = {n: v + 0.1 for n, v in a.items()}
            c = {n: 0.5 * (a[n] + b[n]) + 0.05 * (i + 1) for i, n in enumerate(a)}
            plane(bn.model, a, c, b, test=bn.data, bn_batches=bn.bn_batches, grid=3, chunk_size=2, callbacks=cbs)
        elif name == "path":
            a = mlp.params
            curve = Bezier(a, {n: v + 0.2 for n, v in a.items()}, [{n: v - 0.1 for n, v in a.items()}])
            evaluate_path(mlp.model, curve, np.linspace(0, 1, 5), mlp.data, mlp.data, callbacks=cbs)
        elif name == "probe_path":
            a = mlp.params
            curve = Bezier(a, {n: v + 0.2 for n, v in a.items()}, [{n: v - 0.1 for n, v in a.items()}])
            probe_path(mlp.model, curve, None, mlp.data, settings=settings, callbacks=cbs, progress=False)
        elif name == "slq":
            slq_density(HessianOperator(mlp.model, mlp.data, params=mlp.params), n_runs=2, n_steps=5, callbacks=cbs)
        elif name == "sharpness":
            average_sharpness(
                ModelLandscape(bn.model, bn.data, params=bn.params, bn_batches=bn.bn_batches, chunk_size=2),
                eps=0.05,
                n_samples=5,
                callbacks=cbs,
            )
        elif name == "sharpness_worst":
            worst_sharpness(ModelLandscape(mlp.model, mlp.data, params=mlp.params), eps=0.05, steps=3, callbacks=cbs)
        elif name == "probes":
            probe_point(
                mlp.model,
                mlp.params,
                mlp.data,
                settings,
                probes=("density", "sharpness", "worst"),
                callbacks=cbs,
                progress=False,
            )

    return run


@pytest.mark.parametrize("stage", LONG_TASKS)
def test_every_long_stage_reports_rising_fractions_that_end_at_one(stage: str) -> None:
    events: list[ProgressEvent] = []
    _stage(stage)(scoped([events.append], "here"))
    own = [e for e in events if e.task == stage]
    fractions = [fraction(e) for e in own]
    assert own[0].kind == "start" and own[-1].kind == "end" and all(e.scope == "here" for e in own)
    assert all(f is not None for f in fractions) and fractions[-1] == 1.0
    assert all(later >= earlier for earlier, later in zip(fractions, fractions[1:])), fractions
    assert any(0 < f < 1 for f in fractions), fractions  # progress in between, not only start and end
    assert all(e.step <= e.total for e in own) and not any(math.isnan(f) for f in fractions)


class _Clock:
    """A settable time source for :class:`PercentLines`."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_quiet_for_keeps_short_loops_out_and_shows_long_ones_from_the_delay() -> None:
    out: list[str] = []
    clock = _Clock()
    lines = PercentLines("[c] ", write=out.append, quiet_for=5.0, clock=clock)
    for event in _loop("plane", 20):  # a loop of 1 s in all: nothing
        clock.now += 0.05
        lines(event)
    assert out == []
    lines(ProgressEvent("plane", "start", 0, 20))
    for step in range(1, 21):  # 1 s per step: the delay passes at step 5 (25%), then one line per 10%
        clock.now += 1.0
        lines(ProgressEvent("plane", "step", step, 20))
    lines(ProgressEvent("plane", "end", 20, 20))
    assert [line.split(": ")[1].split(" ")[0] for line in out] == [
        "25%",
        "30%",
        "40%",
        "50%",
        "60%",
        "70%",
        "80%",
        "90%",
        "100%",
    ]
    assert out[0] == "[c] plane: 25% (5/20, 5.0 s)" and out[-1] == "[c] plane: 100% (20/20, 20.0 s)"


def test_quiet_for_a_loop_without_steps_or_total() -> None:
    out: list[str] = []
    clock = _Clock()
    lines = PercentLines(write=out.append, quiet_for=2.0, clock=clock)
    lines(ProgressEvent("slq", "start", 0, 40))
    clock.now += 3.0
    lines(ProgressEvent("slq", "end", 7, 40))  # no step event, past the delay: the end is shown
    assert out == ["slq: 100% (7/40, 3.0 s)"]
    lines(ProgressEvent("x", "start", 0))
    clock.now += 3.0
    lines(ProgressEvent("x", "step", 9))  # unknown length: a "running" line once past the delay
    lines(ProgressEvent("x", "step", 10))
    assert out[1:] == ["x: running (step 9, 3.0 s)"]
    with pytest.raises(ValueError, match="quiet_for: expected seconds >= 0, got -1"):
        PercentLines(quiet_for=-1)
