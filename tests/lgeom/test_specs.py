"""What specs share: problems as (field, message) text, one error listing them, neutral settings."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from lgeom.specs import (
    RESULT_NEUTRAL,
    Problem,
    SpecError,
    changes_results,
    neutral_setting,
    raise_problems,
)


@dataclasses.dataclass(frozen=True)
class _Spec:
    lr: float = 0.1
    device: str = neutral_setting("cpu", "where it runs does not change the numbers")


def test_a_problem_is_text_with_its_parts() -> None:
    p = Problem("lr", "expected a number > 0, got -1")
    assert p == "lr: expected a number > 0, got -1" and isinstance(p, str)
    assert (p.field, p.message) == ("lr", "expected a number > 0, got -1")
    back = pickle.loads(pickle.dumps(p))
    assert back == p and (back.field, back.message) == (p.field, p.message)


def test_raise_problems_lists_every_problem_in_one_error() -> None:
    raise_problems(_Spec(), [])  # none: no error
    problems = [Problem("lr", "expected > 0, got 0"), Problem("device", "expected cpu, got tpu")]
    with pytest.raises(SpecError) as err:
        raise_problems(_Spec(), problems)
    assert str(err.value) == "invalid _Spec: lr: expected > 0, got 0; device: expected cpu, got tpu"
    assert err.value.problems == problems and isinstance(err.value, ValueError)


def test_neutral_settings_are_marked_with_their_reason() -> None:
    fields = {f.name: f for f in dataclasses.fields(_Spec)}
    assert changes_results(fields["lr"]) and not changes_results(fields["device"])
    assert fields["device"].metadata[RESULT_NEUTRAL] == "where it runs does not change the numbers"
    assert _Spec().device == "cpu"
