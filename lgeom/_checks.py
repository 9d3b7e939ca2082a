"""Argument validators shared by the library.

Every check raises ``ValueError("<what>: expected X, got Y")`` so that messages read the same across the
package and tests can match them.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import torch


def expected(what: str, wanted: str, got: Any) -> ValueError:
    """Build the package's standard error: ``"<what>: expected <wanted>, got <got!r>"``."""
    return ValueError(f"{what}: expected {wanted}, got {got!r}")


def check_positive(what: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a finite number > 0 (or >= 0 with ``allow_zero``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise expected(what, "a finite number >= 0" if allow_zero else "a finite number > 0", value)


def check_positive_int(what: str, value: int, *, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is an int > 0 (or >= 0 with ``allow_zero``)."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise expected(what, "an integer >= 0" if allow_zero else "an integer > 0", value)


def check_choice(what: str, value: Any, choices: Collection[Any]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise expected(what, "one of " + ", ".join(repr(c) for c in sorted(choices, key=str)), value)


def check_unit_interval(what: str, value: float) -> None:
    """Raise unless ``0 <= value <= 1``."""
    if not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0):
        raise expected(what, "a number in [0, 1]", value)


def check_ts(ts: Any) -> torch.Tensor:
    """Return ``ts`` as a 1-D float64 tensor after checking it is non-empty and inside [0, 1]."""
    t = torch.as_tensor(ts, dtype=torch.float64).reshape(-1)
    if t.numel() == 0:
        raise expected("ts", "at least one value of t", list(ts) if not isinstance(ts, torch.Tensor) else ts)
    bad = t[(t < 0) | (t > 1) | torch.isnan(t)]
    if bad.numel():
        raise expected("t", "a value in [0, 1]", float(bad[0]))
    return t


def check_same_structure(
    first: Mapping[str, torch.Tensor],
    second: Mapping[str, torch.Tensor],
    *,
    first_name: str = "start",
    second_name: str = "end",
) -> None:
    """Raise naming the first parameter whose name, shape or dtype differs between two parameter dicts."""
    names_a, names_b = list(first), list(second)
    for name in names_a:
        if name not in second:
            raise ValueError(
                f"parameters of {first_name} and {second_name} differ: {first_name} has {name!r}, "
                f"{second_name} does not (different architectures?)"
            )
        a, b = first[name], second[name]
        if a.shape != b.shape:
            raise ValueError(
                f"parameter {name!r}: expected shape {tuple(a.shape)} (from {first_name}), "
                f"got {tuple(b.shape)} in {second_name}"
            )
        if a.dtype != b.dtype:
            raise ValueError(
                f"parameter {name!r}: expected dtype {a.dtype} (from {first_name}), got {b.dtype} in {second_name}"
            )
    extra = [n for n in names_b if n not in first]
    if extra:
        raise ValueError(
            f"parameters of {first_name} and {second_name} differ: {second_name} has {extra[0]!r}, "
            f"{first_name} does not (different architectures?)"
        )


def keyword_types(fn: Callable[..., Any], names: Iterable[str]) -> dict[str, Any]:
    """The resolved annotations of ``fn``'s parameters ``names`` (e.g. ``int``, ``bool | None``), for type
    checks of options before ``fn`` is called; unannotated ones are left out, and all of them when an
    annotation cannot be resolved (that only loses the type check).
    """
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - any failure to resolve means "no annotation"
        return {}
    return {k: hints[k] for k in names if k in hints}
