"""Raw values against the keys' annotations: values converted where YAML leaves them loose (``1e-3`` read as a
string, a scalar for a list), every other mismatch a problem naming its key; an unknown annotation is a
programming error.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.config import TrainConfig
from pipelines.config.coerce import coerce, coerce_checked, read_section


@pytest.mark.parametrize(
    ("value", "tp", "expected"),
    [
        ("1e-3", float, 0.001),
        (2, float, 2.0),
        (3, tuple[int, ...], (3,)),
        ("adam", tuple[str, ...], ("adam",)),
        ([0.8, 0.9], tuple[float, float], (0.8, 0.9)),
        ([1, 2], list[int], [1, 2]),
        (None, int | None, None),
        ("x", int | str, "x"),
        ({"a": 1}, dict[str, float], {"a": 1.0}),
        (object, Any, object),
    ],
)
def test_values_are_converted_to_the_annotation(value: Any, tp: Any, expected: Any) -> None:
    problems: list[str] = []
    assert coerce(value, tp, "k", problems) == expected
    assert problems == []


@pytest.mark.parametrize(
    ("value", "tp", "problem"),
    [
        (1, bool, "k: expected true or false, got 1"),
        (True, int, "k: expected an integer, got True"),
        (2.5, int, "k: expected an integer, got 2.5"),
        (3, str, "k: expected a string, got 3"),
        ("abc", float, "k: expected a number, got 'abc'"),
        ({"a": 1}, list[int], "k: expected a list, got {'a': 1}"),
        ([1, 2, 3], tuple[float, float], "k: expected a list of 2 values, got [1, 2, 3]"),
        ([1, "x"], list[int], "k[1]: expected an integer, got 'x'"),
        ([1], dict[str, int], "k: expected a mapping, got [1]"),
        ("x", int | None, "k: expected an integer, got 'x'"),  # the first alternative's complaint
    ],
)
def test_a_mismatch_is_one_problem_naming_its_key(value: Any, tp: Any, problem: str) -> None:
    problems: list[str] = []
    coerce(value, tp, "k", problems)
    assert problems == [problem]
    assert coerce_checked(value, tp, "k", [])[0] is False


def test_an_unknown_annotation_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="unsupported config annotation"):
        coerce(1, set[int], "k", [])


def test_a_section_is_read_with_every_problem_and_defaults_where_they_are() -> None:
    problems: list[str] = []
    section = read_section(TrainConfig, {"lr": "x", "epochs": 0, "lrr": 1, "seeds": [3]}, "train", problems)
    assert isinstance(section, TrainConfig) and section.seeds == (3,)
    assert section.lr == TrainConfig().lr and section.epochs == TrainConfig().epochs
    assert problems[0] == "train.lr: expected a number, got 'x'"
    assert any(p.startswith("train.lrr: unknown key") and "did you mean 'train.lr'" in p for p in problems)
    assert "train.epochs: expected an integer > 0, got 0" in problems and len(problems) == 3
    problems = []
    read_section(TrainConfig, [1], "train", problems)
    assert problems == ["train: expected a mapping of settings, got [1]"]
