"""Raw values (YAML, overrides) against annotations: a value checked and converted to a section key's type
(:func:`coerce`), a raw mapping read into its section dataclass (:func:`read_section`,
:func:`read_open_section`), and model/data options typed by their builder's annotations.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from lgeom.specs import SpecError
from pipelines.config.builders import CHOSEN_BY, builder_options
from pipelines.config.sections import section_keys, type_hints

#: The plain types a value must already have (no conversion), with what the message says is expected.
_EXACT: dict[type, tuple[str, Callable[[Any], bool]]] = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
}


def coerce(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """Check ``value`` against the annotation ``tp``; returns the converted value (or None on error, with
    the problem, naming ``where``, appended to ``problems``).

    Raises:
        TypeError: an annotation this parser does not know (a programming error in a section class).
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        # The first alternative that takes the value wins; otherwise the first one's complaint is reported.
        first: list[str] = []
        for alt in (a for a in args if a is not type(None)):
            tried: list[str] = []
            converted = coerce(value, alt, where, tried)
            if not tried:
                return converted
            first = first or tried
        problems.extend(first)
        return None
    if tp is Any:
        return value
    if tp in _EXACT:
        expected, accepts = _EXACT[tp]
        if accepts(value):
            return value
        problems.append(f"{where}: expected {expected}, got {value!r}")
        return None
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads "1e-3" as a string
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        problems.append(f"{where}: expected a number, got {value!r}")
        return None
    if origin in (tuple, list):
        if isinstance(value, (str, int, float, bool)) and not isinstance(value, str):
            value = [value]
        if isinstance(value, str) and origin is tuple:
            value = [value]
        if not isinstance(value, (list, tuple)):
            problems.append(f"{where}: expected a list, got {value!r}")
            return None
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(value)
        elif origin is tuple:
            if len(value) != len(args):
                problems.append(f"{where}: expected a list of {len(args)} values, got {value!r}")
                return None
            item_types = list(args)
        else:
            item_types = [args[0] if args else Any] * len(value)
        out = [coerce(v, t, f"{where}[{i}]", problems) for i, (v, t) in enumerate(zip(value, item_types))]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            problems.append(f"{where}: expected a mapping, got {value!r}")
            return None
        return {str(k): coerce(v, args[1], f"{where}.{k}", problems) for k, v in value.items()}
    raise TypeError(f"unsupported config annotation {tp!r} at {where}")


def coerce_checked(value: Any, tp: Any, where: str, problems: list[str]) -> tuple[bool, Any]:
    """``(True, converted value)`` when :func:`coerce` takes ``value``; ``(False, None)`` when it adds problems.

    Raises:
        TypeError: as :func:`coerce`.
    """
    n_before = len(problems)
    converted = coerce(value, tp, where, problems)
    return len(problems) == n_before, converted


# --- reading a section ------------------------------------------------------------------------------------


def _unknown_key(cls: type, prefix: str, key: str) -> str:
    """The problem of ``key``, not a key of section ``cls``: where its value comes from when it is derived, else
    the section's keys and the closest one.
    """
    derived = getattr(cls, "derived_fields", {})
    if key in derived:
        return f"{prefix}.{key}: expected a key of {prefix}, got {key!r}, whose value comes from {derived[key]}"
    names = list(section_keys(cls))
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean '{prefix}.{close[0]}'?)" if close else ""
    return f"{prefix}.{key}: unknown key, expected one of {', '.join(names)}{hint}"


def _read_keys(
    cls: type, raw: Any, prefix: str, problems: list[str], *, open_section: bool = False
) -> tuple[dict[tuple[str, ...], Any], dict[str, Any]]:
    """Typed values of ``raw`` by attribute path, and (for an open section) the keys that are not fixed."""
    if not isinstance(raw, Mapping):
        problems.append(f"{prefix}: expected a mapping of settings, got {raw!r}")
        raw = {}
    keys = section_keys(cls)
    values: dict[tuple[str, ...], Any] = {}
    rest: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        if key not in keys:
            if open_section:
                rest[key] = value
            else:
                problems.append(_unknown_key(cls, prefix, key))
            continue
        ok, converted = coerce_checked(value, keys[key].hint, f"{prefix}.{key}", problems)
        if ok:
            for path in keys[key].paths:
                values[path] = converted
    return values, rest


def _construct(
    cls: type,
    values: Mapping[tuple[str, ...], Any],
    prefix: str,
    problems: list[str],
    derived: Mapping[str, Any] | None = None,
) -> Any:
    """``cls`` built from typed values (nested specs first). The spec's own problems are reported under
    ``prefix.<field>``, each once, and the fields they name fall back to their defaults.
    """
    kwargs: dict[str, Any] = dict(derived or {})
    for f in fields(cls):
        tp = type_hints(cls)[f.name]
        if f.name in kwargs:
            continue
        if dataclasses.is_dataclass(tp):
            nested = {path[1:]: v for path, v in values.items() if path[0] == f.name and len(path) > 1}
            kwargs[f.name] = _construct(tp, nested, prefix, problems)
        elif (f.name,) in values:
            kwargs[f.name] = values[(f.name,)]
    for _ in range(len(kwargs) + 1):
        try:
            return cls(**kwargs)
        except SpecError as err:
            for p in err.problems:
                text = f"{prefix}.{p.field}: {p.message}"
                if text not in problems:
                    problems.append(text)
            blamed = {p.field for p in err.problems} & set(kwargs)
            if not blamed:
                break
            kwargs = {k: v for k, v in kwargs.items() if k not in blamed}
    return cls()


def read_section(
    cls: type, raw: Any, prefix: str, problems: list[str], derived: Mapping[str, Any] | None = None
) -> Any:
    """The section ``cls`` from the raw mapping ``raw`` of section ``prefix``, ``derived`` fields given; every
    problem is appended to ``problems`` and a field with a problem takes its default.
    """
    values, _ = _read_keys(cls, raw, prefix, problems)
    return _construct(cls, values, prefix, problems, derived)


def _typed_options(
    prefix: str,
    options: Mapping[str, Any],
    defaults: Mapping[str, Any] | None,
    hints: Mapping[str, Any],
    problems: list[str],
) -> dict[str, Any]:
    """Options set (not null), each known one checked against the builder's annotation (or its default's
    type); unknown ones are kept for :func:`pipelines.config.validate` to report against the builder's options.
    """
    out: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:  # null: the builder's default (a matrix cell unsets a base option this way)
            continue
        hint = hints.get(key)
        if hint is None and defaults is not None and key in defaults:
            d = defaults[key]
            hint = type(d) if type(d) in (bool, int, float, str) else None
        if defaults is not None and key in defaults and hint is not None:
            n_before = len(problems)
            try:
                value = coerce(value, hint, f"{prefix}.{key}", problems)
            except TypeError:  # an annotation the parser does not know: the build check judges the value
                pass
            if len(problems) != n_before:
                continue
        out[key] = value
    return out


def read_open_section(cls: type, raw: Any, prefix: str, problems: list[str]) -> Any:
    """A model or data section (``prefix``): its fixed keys, and every other key as an option of the chosen
    builder, typed by the builder's annotations; problems as :func:`read_section`.
    """
    values, rest = _read_keys(cls, raw, prefix, problems, open_section=True)
    chosen = CHOSEN_BY[prefix]
    known = builder_options(prefix, values.get((chosen,), section_keys(cls)[chosen].default))
    options = _typed_options(prefix, rest, known[0] if known else None, known[1] if known else {}, problems)
    return _construct(cls, values, prefix, problems, {"options": options})
