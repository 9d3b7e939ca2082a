"""What every settings dataclass of lgeom shares: problems as ``(field, message)`` pairs, one error listing
them all, and the mark of settings that do not change results.

A spec's ``problems()`` returns :class:`Problem` values; :func:`raise_problems` turns them into one
:class:`SpecError`, which keeps them, so a caller (e.g. a config parser) can report each under its own key
without parsing the error's text:

>>> p = Problem("lr", "expected a finite number > 0, got -1.0")
>>> p.field, p.message
('lr', 'expected a finite number > 0, got -1.0')
>>> str(p)
'lr: expected a finite number > 0, got -1.0'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

#: Field metadata key marking a setting that does not change results (its value is why).
RESULT_NEUTRAL = "lgeom.result_neutral"


class Problem(str):
    """One invalid field: the text ``"<field>: <message>"`` that also carries ``field`` and ``message``.

    It is a ``str`` so that lists of problems join and compare as text (``"; ".join(spec.problems())``).
    """

    field: str
    message: str

    def __new__(cls, field: str, message: str) -> Problem:
        """A problem whose string is ``"<field>: <message>"``, keeping both parts as attributes."""
        self = super().__new__(cls, f"{field}: {message}")
        self.field = field
        self.message = message
        return self

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        # str pickles itself as one argument; a Problem needs its two parts back.
        return self.field, self.message


class SpecError(ValueError):
    """A spec refused its values; ``problems`` lists every :class:`Problem` (the message joins them)."""

    def __init__(self, what: str, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(f"invalid {what}: " + "; ".join(self.problems))


def raise_problems(spec: object, problems: list[Problem]) -> None:
    """Raise one :class:`SpecError` listing every problem of ``spec`` (no-op when there are none)."""
    if problems:
        raise SpecError(type(spec).__name__, problems)


def neutral_setting(default: Any, reason: str) -> Any:
    """A dataclass field holding a setting that does not change results (e.g. the device or the number of
    loader workers): caches and config hashes leave it out. ``reason`` says why it is neutral.
    """
    return dataclasses.field(default=default, metadata={RESULT_NEUTRAL: reason})


def changes_results(field: dataclasses.Field) -> bool:  # type: ignore[type-arg]
    """Whether a dataclass field's value can change results (False for :func:`neutral_setting` fields)."""
    return RESULT_NEUTRAL not in field.metadata


__all__ = ["RESULT_NEUTRAL", "Problem", "SpecError", "changes_results", "neutral_setting", "raise_problems"]
