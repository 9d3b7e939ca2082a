"""The matrix: its cells, their names and labels, and the settings of each cell.

Matrix axes live under ``study.matrix`` as ``dotted.key: [values]`` or ``section: [{key: value, ...}]``; every
combination of axis values is one :class:`Cell`, named ``<model>/<dataset>/<optimizer>`` plus ``key=value``
for every other axis (:func:`cell_name`). :func:`pipelines.config.expand_matrix` builds the cells' configs
from :func:`cell_settings`.
"""

from __future__ import annotations

import inspect
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lgeom.models import model_arch_args
from pipelines.config.sections import ModelConfig, set_dotted

if TYPE_CHECKING:
    from pipelines.config.experiment import Config


@dataclass(frozen=True)
class Cell:
    """One matrix cell: its name, the axis values that define it, and its full config."""

    name: str
    values: dict[str, Any]
    config: Config


#: A model's label is its arch, then the first of these sizes it takes, then "x" and the first width it takes.
_LABEL_SIZES = ("depth", "blocks", "channels")
_LABEL_WIDTHS = ("width", "widen_factor")


def model_label(m: ModelConfig) -> str:
    """Short architecture label, e.g. ``preresnet8``, ``mlp2x64``, ``cnn16``, ``resmlp2x64``, ``wideresnet16x4``:
    the arch, its size option and ``x`` its width option (builder defaults where not set).
    """
    defaults = {k: v for k, v in model_arch_args(m.arch).items() if v is not inspect.Parameter.empty}
    opts = {**defaults, **m.options}
    size = next((str(opts[k]) for k in _LABEL_SIZES if k in opts), "")
    width = next((f"x{opts[k]}" for k in _LABEL_WIDTHS if k in opts), "")
    return f"{m.arch}{size}{width}"


_AXIS_LABELS = {"train.weight_decay": "wd", "train.seeds": "seeds", "train.batch_size": "bs", "model.activation": "act"}

#: Axes whose values a cell's name shows without ``key=value`` (model label, dataset, optimizer).
NAMED_AXES = frozenset(
    {"model.arch", *(f"model.{k}" for k in _LABEL_SIZES + _LABEL_WIDTHS), "data.name", "train.optimizer"}
)


def _cell_name_parts(cfg: Config, axes: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(what, folder name)`` for each part of a cell's name."""
    parts = [("model", model_label(cfg.model)), ("data.name", cfg.data.name), ("train.optimizer", cfg.train.optimizer)]
    for key, value in axes.items():
        if key in NAMED_AXES or isinstance(value, dict):
            continue
        parts.append((f"study.matrix.{key}", axis_part(key, value)))
    return parts


def axis_part(key: str, value: Any) -> str:
    """The ``label=value`` part of a cell's name for one value of the axis ``key``."""
    label = _AXIS_LABELS.get(key, key.split(".")[-1])
    text = "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return f"{label}={text}"


def cell_name(cfg: Config, axes: Mapping[str, Any]) -> str:
    """``<model>/<dataset>/<optimizer>`` plus ``key=value`` for every other axis, e.g.
    ``mlp2x64/moons/sgd/activation=tanh``.
    """
    return "/".join(part for _, part in _cell_name_parts(cfg, axes))


def folder_name_problem(text: str) -> str | None:
    """Why ``text`` cannot be one folder name inside a study's output folder (None when it can)."""
    if text in ("", ".", "..") or any(c in text for c in "/\\\0"):
        return "expected a value that makes a plain folder name of the cell (no '/', '\\', '..'), got " + repr(text)
    return None


def cell_name_problems(cfg: Config, axes: Mapping[str, Any]) -> list[str]:
    """Every part of the name of the cell of ``cfg`` (with axis values ``axes``) that would not make a plain
    folder name, as ``<what>: <problem>``.
    """
    return [f"{what}: {p}" for what, part in _cell_name_parts(cfg, axes) if (p := folder_name_problem(part))]


def cell_settings(cfg: Config) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``(axis values, the cell's settings as a nested dict)`` for each combination of ``cfg.study.matrix``,
    in order; the settings carry an empty matrix. A section axis' mapping sets each of its keys.
    """
    axes = list(cfg.study.matrix.items())
    base = cfg.to_dict()
    base["study"]["matrix"] = {}
    for combo in itertools.product(*[values for _, values in axes]):
        values = {k: v for (k, _), v in zip(axes, combo)}
        data = json.loads(json.dumps(base))
        local: list[str] = []
        for k, v in values.items():
            if isinstance(v, dict):
                for kk, vv in v.items():
                    set_dotted(data, f"{k}.{kk}", vv, local)
            else:
                set_dotted(data, k, v, local)
        yield values, data
