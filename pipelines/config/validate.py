"""Checks a section cannot make alone: the model's and dataset's options against their builders (and that
they build together), the config's name, and the matrix axes. Each problem is a message naming its key;
:func:`pipelines.config.validate` reports them together with every matrix cell's.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lgeom.data import available_datasets
from lgeom.models import available_models, model_arch_args
from lgeom.plugins import is_plugin_ref
from pipelines.config.builders import (
    CHOSEN_BY,
    builder_options,
    builder_problem,
    check_model_builds,
    data_option_defaults,
    data_shape,
    hashable_options,
)
from pipelines.config.matrix import NAMED_AXES, axis_part, chosen_builders, folder_name_problem
from pipelines.config.sections import (
    SECTIONS,
    DataConfig,
    ModelConfig,
    StudyConfig,
    section_keys,
)

#: A plain name: it names folders under ``output_dir`` and MLflow experiments, so no path parts.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")


def name_problems(name: Any) -> list[str]:
    """The problem of the config's ``name`` when it is not a plain name (it names a folder under output_dir)."""
    if isinstance(name, str) and _PLAIN_NAME.fullmatch(name):
        return []
    return [
        (
            f"name: expected a plain name (letters, digits, '.', '_', '-', '+'; it names a folder under "
            f"output_dir), got {name!r}"
        )
    ]


def model_and_data_problems(m: ModelConfig, d: DataConfig) -> list[str]:
    """Every problem of the dataset's and the model's names and options: options their builders lack, split
    sizes, and each option the builder refuses (found by building the data, then the model for its shape).
    """
    problems, data_options = _option_problems("data", d.name, d.options, available_datasets())
    shape = None
    if data_options is not None:
        for k in ("n_train", "n_test"):  # split sizes are not needed to learn the shape below
            v = d.options.get(k)
            if v is not None and v <= 0:
                problems.append(f"data.{k}: expected an integer > 0, got {v!r}")
        try:
            shape = data_shape(dataclasses.replace(d, options=data_options))
        except Exception as err:  # noqa: BLE001 - report the dataset's own message, per option where possible
            problems.extend(
                _blame_options("data", data_options, lambda opts: data_shape(dataclasses.replace(d, options=opts)), err)
            )
    model_problems, model_options = _option_problems("model", m.arch, m.options, available_models())
    problems.extend(model_problems)
    if model_options is not None and shape is not None:
        in_shape, num_classes = shape
        try:
            check_model_builds(m.arch, hashable_options(model_options), in_shape, num_classes)
        except Exception as err:  # noqa: BLE001 - report the model's own message, per option where possible
            problems.extend(
                _blame_options(
                    "model",
                    model_options,
                    lambda opts: check_model_builds(m.arch, hashable_options(opts), in_shape, num_classes),
                    err,
                )
            )
    return problems


def _option_problems(
    prefix: str, name: str, options: Mapping[str, Any], registered: Sequence[str]
) -> tuple[list[str], dict[str, Any] | None]:
    """Problems of a model's or dataset's name and options, and the options its builder takes (None: unknown name)."""
    known = builder_options(prefix, name)
    if known is None:
        own = builder_problem(prefix, name)
        if own is not None:
            return [f"{prefix}.{CHOSEN_BY[prefix]}: {own}"], None
        return [
            f"{prefix}.{CHOSEN_BY[prefix]}: expected one of {', '.join(registered)} or a plug-in 'module:callable', "
            f"got {name!r}"
        ], None
    allowed = known[0]
    problems = [_not_an_option(prefix, k, v, name, allowed) for k, v in options.items() if k not in allowed]
    return problems, {k: v for k, v in options.items() if k in allowed}


def _not_an_option(prefix: str, key: str, value: Any, owner: str, allowed: Mapping[str, Any]) -> str:
    """The problem of option ``key``, which the builder of ``owner`` lacks: its options and the closest one."""
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.7)
    hint = f"; did you mean '{prefix}.{close[0]}'?" if close else ""
    return (
        f"{prefix}.{key}: not an option of {owner} (its options: {', '.join(allowed) or 'none'}{hint}), got {value!r}"
    )


def _blame_options(
    prefix: str, options: Mapping[str, Any], build: Callable[[dict[str, Any]], Any], err: Exception
) -> list[str]:
    """Every bad option, each found by building with that option alone (the others at their defaults).

    ``err`` is the error of building with all options; it is reported as it is when no option fails alone
    (a problem of the combination). When the builder fails with no option at all (e.g. the data's shape does
    not suit the architecture), that error is reported too, and an option is blamed only for another error.
    """
    out, bare = [], None
    try:
        build({})
    except Exception as failed:  # noqa: BLE001 - the defaults fail too: an option failing the same way is not to blame
        bare = str(failed)
        out.append(f"{prefix}: {bare}")
    for key, value in sorted(options.items()):
        try:
            build({key: value})
        except Exception as alone:  # noqa: BLE001 - report the builder's own message
            if str(alone) != bare:
                out.append(f"{prefix}.{key}: {alone}")
    return out or [f"{prefix}: {err}"]


def matrix_axis_problems(
    s: StudyConfig, top_keys: tuple[str, ...], chosen: Mapping[str, str] | None = None
) -> list[str]:
    """Every problem of the matrix axes themselves: unknown keys (``top_keys`` are the config's keys outside
    the sections), values that are not non-empty lists (of mappings, for a section axis), and values that
    would not make a plain folder name of a cell. Options of plug-ins (``module:callable``) chosen in the base
    config (``chosen``: ``{"model": arch, "data": name}``) or by an axis are axis keys too.
    """
    out = []
    leaf_keys = _leaf_keys(top_keys, tuple(available_models()), tuple(available_datasets()))
    leaf_keys |= _plugin_keys(s, chosen or {})
    for key, values in s.matrix.items():
        if key in SECTIONS and key != "study":
            # A section axis: each value is a mapping of several keys that vary together.
            if not isinstance(values, list) or not values or not all(isinstance(v, dict) for v in values):
                out.append(
                    f"study.matrix.{key}: expected a non-empty list of mappings of {key} settings, got {values!r}"
                )
            continue
        if key not in leaf_keys or key.startswith("study."):
            close = difflib.get_close_matches(key, sorted(leaf_keys), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            out.append(f"study.matrix.{key}: unknown axis, expected a dotted config key like 'train.lr'{hint}")
        if not isinstance(values, list) or not values:
            out.append(f"study.matrix.{key}: expected a non-empty list of values, got {values!r}")
            continue
        if key not in NAMED_AXES:
            # The value becomes part of each cell's folder name; checked once here rather than per cell.
            out.extend(f"study.matrix.{key}: {p}" for v in values if (p := folder_name_problem(axis_part(key, v))))
    return out


def _plugin_keys(s: StudyConfig, chosen: Mapping[str, str]) -> set[str]:
    """The option keys (``model.<option>``, ``data.<option>``) of the plug-ins a config chooses."""
    keys: set[str] = set()
    for sec, name in chosen_builders(s, chosen):
        if is_plugin_ref(name):
            known = builder_options(sec, name)
            keys.update(f"{sec}.{k}" for k in (known[0] if known else {}))
    return keys


@functools.lru_cache(maxsize=8)
def _leaf_keys(top_keys: tuple[str, ...], models: tuple[str, ...], datasets: tuple[str, ...]) -> frozenset[str]:
    """Every key a matrix axis may set (cached per registry contents)."""
    keys = set(top_keys)
    for sec, cls in SECTIONS.items():
        keys.update(f"{sec}.{k}" for k in section_keys(cls))
    keys.update(f"model.{k}" for arch in models for k in model_arch_args(arch))
    keys.update(f"data.{k}" for name in datasets for k in data_option_defaults(name))
    return frozenset(keys)
