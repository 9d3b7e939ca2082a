"""Progress events: callbacks get every event in order, the tqdm bar follows start/step/epoch/end and
ignores events before its start, and a bar is added only when asked for.
"""

from __future__ import annotations

import pytest

from lgeom.progress import ProgressEvent, TqdmProgress, emit, resolve_callbacks


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


def test_resolve_callbacks_adds_a_bar_only_with_progress() -> None:
    def mine(event: ProgressEvent) -> None:
        pass

    assert resolve_callbacks(None, False, "x") == [] and resolve_callbacks([mine], False, "x") == [mine]
    with_bar = resolve_callbacks([mine], True, "fit")
    assert with_bar[0] is mine and isinstance(with_bar[1], TqdmProgress) and with_bar[1].desc == "fit"


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
