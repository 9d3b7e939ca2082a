"""The whole experiment's config: :class:`Config`, built from a nested dict (:func:`config_from_dict`) and
checked as a whole (:func:`validate`), every matrix cell included (:func:`expand_matrix`).

These live together because they call each other: building a config checks its matrix cells, each cell is
a config built from a dict, and :meth:`Config.replace` builds a config again.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from lgeom.specs import RESULT_NEUTRAL, neutral_setting
from pipelines.config.coerce import coerce_checked, read_open_section, read_section
from pipelines.config.errors import ConfigError
from pipelines.config.matrix import (
    Cell,
    cell_name,
    cell_name_problems,
    cell_settings,
    chosen_builders,
    labels_to_qualify,
)
from pipelines.config.sections import (
    SECTIONS,
    CurveConfig,
    DataConfig,
    ModelConfig,
    ProbeConfig,
    StudyConfig,
    TrainConfig,
    plain,
    section_dict,
    set_dotted,
    type_hints,
)
from pipelines.config.validate import (
    matrix_axis_problems,
    model_and_data_problems,
    name_problems,
)


@dataclass(frozen=True)
class Config:
    """A whole experiment: what to train, connect and probe, and how the study runs."""

    name: str = neutral_setting("default", "names the study and its folders")
    description: str = neutral_setting("", "documentation")
    output_dir: str = neutral_setting("outputs", "where results are written")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    curve: CurveConfig = field(default_factory=CurveConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    study: StudyConfig = field(default_factory=StudyConfig, metadata={RESULT_NEUTRAL: "how the cells are run"})

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict in the YAML's shape (tuples as lists), loadable again by :func:`config_from_dict`."""
        return {
            f.name: section_dict(getattr(self, f.name)) if f.name in SECTIONS else plain(getattr(self, f.name))
            for f in fields(self)
        }

    def flat(self, *, skip: Sequence[str] = ("study", "description")) -> dict[str, Any]:
        """``{"train.lr": 0.05, ...}`` for every key outside ``skip`` sections (MLflow params)."""
        out: dict[str, Any] = {}
        for top, value in self.to_dict().items():
            if top in skip:
                continue
            if top in SECTIONS:
                out.update({f"{top}.{k}": v for k, v in value.items()})
            else:
                out[top] = value
        return out

    def replace(self, **changes: Any) -> Config:
        """A copy with dotted keys changed, e.g. ``cfg.replace(**{"train.lr": 0.1})`` (validated; no matrix
        rule: a program changing a config knows which cells it builds).

        Raises:
            ConfigError: a key of the wrong shape, or every problem of the changed config.
        """
        data = self.to_dict()
        problems: list[str] = []
        for key, value in changes.items():
            set_dotted(data, key, value, problems)
        if problems:
            raise ConfigError(problems)
        return config_from_dict(data)


#: The keys of a config outside its sections.
TOP_KEYS = tuple(f.name for f in fields(Config) if f.name not in SECTIONS)


def config_from_dict(data: Mapping[str, Any], *, source: str = "config") -> Config:
    """Build and validate a :class:`Config` from a nested dict (the YAML's shape).

    Raises:
        ConfigError: every unknown key, wrong type and bad value at once.
    """
    problems: list[str] = []
    top = {f.name: f for f in fields(Config)}
    for key in data:
        if key != "base" and key not in top:
            close = difflib.get_close_matches(str(key), list(top), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{key}: unknown key, expected one of {', '.join(top)}{hint}")
    kwargs: dict[str, Any] = {}
    for key in TOP_KEYS:
        if key in data:
            ok, converted = coerce_checked(data[key], type_hints(Config)[key], key, problems)
            if ok:
                kwargs[key] = converted
    kwargs["model"] = read_open_section(ModelConfig, data.get("model") or {}, "model", problems)
    kwargs["data"] = read_open_section(DataConfig, data.get("data") or {}, "data", problems)
    kwargs["train"] = read_section(TrainConfig, data.get("train") or {}, "train", problems)
    kwargs["curve"] = read_section(
        CurveConfig, data.get("curve") or {}, "curve", problems, {"eval_batch_size": kwargs["data"].eval_batch_size}
    )
    kwargs["probe"] = read_section(ProbeConfig, data.get("probe") or {}, "probe", problems)
    kwargs["study"] = read_section(StudyConfig, data.get("study") or {}, "study", problems)
    cfg = Config(**kwargs)
    problems.extend(p for p in validate(cfg) if p not in problems)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def validate(cfg: Config, *, check_matrix: bool = True) -> list[str]:
    """Every problem of ``cfg`` its sections cannot see alone: the model's and dataset's options against their
    builders (and that they build together), the name, the matrix axes and every matrix cell, as messages.
    (Each section checks its own values when it is constructed.)
    """
    problems = model_and_data_problems(cfg.model, cfg.data)
    problems.extend(engine_problems(cfg))
    problems.extend(name_problems(cfg.name))
    problems.extend(matrix_axis_problems(cfg.study, TOP_KEYS, {"model": cfg.model.arch, "data": cfg.data.name}))
    # Cells are checked only once the base config is sound, so each problem is reported once.
    if check_matrix and cfg.study.matrix and not problems:
        try:
            expand_matrix(cfg)
        except ConfigError as err:
            problems.extend(err.problems)
    return problems


def engine_problems(cfg: Config) -> list[str]:
    """``probe.hessian_engine: rop`` with a model it is not written out for (lgeom's ``mlp`` only; ``auto`` takes
    it wherever it applies), reported before anything trains rather than at the probe stage.
    """
    if cfg.probe.hessian_engine == "rop" and cfg.model.arch != "mlp":
        return [
            f"probe.hessian_engine: expected 'auto' or a graph engine for model.arch {cfg.model.arch!r} ('rop' is "
            "written out for lgeom's mlp only; 'auto' takes it wherever it applies), got 'rop'"
        ]
    return []


def expand_matrix(cfg: Config) -> list[Cell]:
    """One :class:`~pipelines.config.matrix.Cell` per combination of ``cfg.study.matrix`` (one cell of ``cfg``
    itself when empty).

    Raises:
        ConfigError: any cell's config is invalid, or a value would not make a plain folder name of the
            cell's name (all cells' problems listed, each naming its cell).
    """
    qualify = labels_to_qualify(chosen_builders(cfg.study, {"model": cfg.model.arch, "data": cfg.data.name}))
    if not cfg.study.matrix:
        problems = cell_name_problems(cfg, {}, qualify)
        if problems:
            raise ConfigError(problems)
        return [Cell(cell_name(cfg, {}, qualify), {}, cfg)]
    cells: list[Cell] = []
    problems = []
    names: set[str] = set()
    for values, data in cell_settings(cfg):
        try:
            cell_cfg = config_from_dict(data)
        except ConfigError as err:
            problems.extend(f"study.matrix cell {values}: {p}" for p in err.problems)
            continue
        bad = [f"study.matrix cell {values}: {p}" for p in cell_name_problems(cell_cfg, values, qualify)]
        if bad:
            problems.extend(bad)
            continue
        name = cell_name(cell_cfg, values, qualify)
        if name in names:
            problems.append(f"study.matrix: two cells share the name {name!r}")
        names.add(name)
        cells.append(Cell(name, values, dataclasses.replace(cell_cfg, study=cfg.study)))
    if problems:
        raise ConfigError(problems)
    return cells
