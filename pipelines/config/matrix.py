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
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lgeom.data import available_datasets, is_dataset_plugin
from lgeom.models import available_models, is_model_plugin, model_arch_args
from lgeom.plugins import plugin_label, qualified_label
from pipelines.config.builders import CHOSEN_BY
from pipelines.config.sections import ModelConfig, StudyConfig, set_dotted

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


def builder_label(section: str, name: str, qualify: Collection[str] = ()) -> str:
    """A model's arch (``section`` "model") or dataset's name (``section`` "data") as a cell name shows it:
    a plug-in ``module:callable`` by its callable's name (``build_vit``), or ``<module's last name>.<callable>``
    when in ``qualify`` (two builders of one study would share the short label); any other name as it is.
    """
    if is_model_plugin(name) if section == "model" else is_dataset_plugin(name):
        return qualified_label(name) if name in qualify else plugin_label(name)
    return name


def model_label(m: ModelConfig, qualify: Collection[str] = ()) -> str:
    """Short architecture label, e.g. ``preresnet8``, ``mlp2x64``, ``cnn16``, ``resmlp2x64``, ``wideresnet16x4``
    or ``build_vit4`` (a plug-in ``mynets:build_vit`` with ``depth=4``): the arch (:func:`builder_label`), its
    size option and ``x`` its width option (builder defaults where not set).
    """
    defaults = {k: v for k, v in model_arch_args(m.arch).items() if v is not inspect.Parameter.empty}
    opts = {**defaults, **m.options}
    size = next((str(opts[k]) for k in _LABEL_SIZES if k in opts), "")
    width = next((f"x{opts[k]}" for k in _LABEL_WIDTHS if k in opts), "")
    return f"{builder_label('model', m.arch, qualify)}{size}{width}"


def labels_to_qualify(chosen: Collection[tuple[str, str]]) -> frozenset[str]:
    """The plug-ins among ``chosen`` (``(section, name)`` pairs) whose short label another chosen builder of
    the same section shares (another plug-in's, or a registered name): they are labelled with their module.
    """
    out: set[str] = set()
    for sec, name in chosen:
        label = builder_label(sec, name)
        if label == name:
            continue
        others = {n for s, n in chosen if s == sec and n != name}
        if any(builder_label(sec, n) == label for n in others) or label in _registered(sec):
            out.add(name)
    return frozenset(out)


def _registered(section: str) -> list[str]:
    return available_models() if section == "model" else available_datasets()


def chosen_builders(s: StudyConfig, chosen: Mapping[str, str]) -> set[tuple[str, str]]:
    """``(section, name)`` of every builder the base config (``chosen``) or a matrix axis chooses."""
    found = {(sec, name) for sec, name in chosen.items()}
    for key, values in s.matrix.items():
        if not isinstance(values, list):
            continue
        for sec, leaf in CHOSEN_BY.items():
            if key == f"{sec}.{leaf}":
                found.update((sec, v) for v in values if isinstance(v, str))
            elif key == sec:
                found.update((sec, v[leaf]) for v in values if isinstance(v, dict) and isinstance(v.get(leaf), str))
    return found


_AXIS_LABELS = {"train.weight_decay": "wd", "train.seeds": "seeds", "train.batch_size": "bs", "model.activation": "act"}

#: Axes whose values a cell's name shows without ``key=value`` (model label, dataset, optimizer).
NAMED_AXES = frozenset(
    {"model.arch", *(f"model.{k}" for k in _LABEL_SIZES + _LABEL_WIDTHS), "data.name", "train.optimizer"}
)


def _cell_name_parts(cfg: Config, axes: Mapping[str, Any], qualify: Collection[str] = ()) -> list[tuple[str, str]]:
    """``(what, folder name)`` for each part of a cell's name."""
    parts = [
        ("model", model_label(cfg.model, qualify)),
        ("data.name", builder_label("data", cfg.data.name, qualify)),
        ("train.optimizer", cfg.train.optimizer),
    ]
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


def cell_name(cfg: Config, axes: Mapping[str, Any], qualify: Collection[str] = ()) -> str:
    """``<model>/<dataset>/<optimizer>`` plus ``key=value`` for every other axis, e.g.
    ``mlp2x64/moons/sgd/activation=tanh`` or ``build_vit/blobs/sgd`` (plug-ins by :func:`builder_label`, those
    in ``qualify`` with their module's name).
    """
    return "/".join(part for _, part in _cell_name_parts(cfg, axes, qualify))


def folder_name_problem(text: str) -> str | None:
    """Why ``text`` cannot be one folder name inside a study's output folder (None when it can)."""
    if text in ("", ".", "..") or any(c in text for c in "/\\\0"):
        return "expected a value that makes a plain folder name of the cell (no '/', '\\', '..'), got " + repr(text)
    return None


def cell_name_problems(cfg: Config, axes: Mapping[str, Any], qualify: Collection[str] = ()) -> list[str]:
    """Every part of the name of the cell of ``cfg`` (with axis values ``axes``) that would not make a plain
    folder name, as ``<what>: <problem>``.
    """
    return [f"{what}: {p}" for what, part in _cell_name_parts(cfg, axes, qualify) if (p := folder_name_problem(part))]


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
