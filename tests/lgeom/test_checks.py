"""The validators of :mod:`lgeom._checks`: every error reads "<what>: expected X, got Y"."""

from __future__ import annotations

import math

import pytest
import torch

from lgeom._checks import (
    check_choice,
    check_positive,
    check_positive_int,
    check_same_structure,
    check_ts,
    expected,
)


def test_expected_builds_the_standard_message() -> None:
    assert str(expected("k", "an integer > 0", 0)) == "k: expected an integer > 0, got 0"
    assert str(expected("kind", "one of 'a', 'b'", "c")) == "kind: expected one of 'a', 'b', got 'c'"


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan, True, "1"])
def test_check_positive_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="lr: expected a finite number > 0, got"):
        check_positive("lr", value)  # type: ignore[arg-type]


def test_check_positive_and_int_accept_and_allow_zero() -> None:
    check_positive("lr", 1e-3)
    check_positive("wd", 0.0, allow_zero=True)
    check_positive_int("k", 3)
    check_positive_int("bends", 0, allow_zero=True)
    with pytest.raises(ValueError, match="k: expected an integer > 0, got 2.0"):
        check_positive_int("k", 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bends: expected an integer >= 0, got -1"):
        check_positive_int("bends", -1, allow_zero=True)


def test_check_choice_lists_the_choices() -> None:
    check_choice("engine", "auto", ("auto", "forward"))
    with pytest.raises(ValueError, match="engine: expected one of 'auto', 'forward', got 'reverse'"):
        check_choice("engine", "reverse", ("forward", "auto"))


def test_check_ts_returns_float64_inside_the_unit_interval() -> None:
    t = check_ts([0.0, 0.5, 1.0])
    assert t.dtype == torch.float64 and t.tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match=r"t: expected a value in \[0, 1\], got 1.5"):
        check_ts([0.2, 1.5])
    with pytest.raises(ValueError, match="ts: expected at least one value of t"):
        check_ts([])


def test_check_same_structure_names_the_first_mismatch() -> None:
    a = {"w": torch.zeros(2), "b": torch.zeros(1)}
    check_same_structure(a, {"w": torch.ones(2), "b": torch.ones(1)})
    with pytest.raises(ValueError, match="B"):
        check_same_structure(a, {"w": torch.zeros(3), "b": torch.zeros(1)}, first_name="A", second_name="B")
