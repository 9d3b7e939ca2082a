"""Configuration: sections that are the lgeom specs they configure, YAML presets and dotted overrides.

``load_config("quick", ["train.epochs=5", "curve.align=false"])`` reads ``pipelines/presets/quick.yaml`` (or
a YAML path), follows its ``base:`` chain, applies the overrides, checks every key and value, and raises
one :class:`ConfigError` listing *all* problems. Presets ending in ``-tiny`` shrink a preset for tests.

Sections and their keys (one source of truth: defaults, types and checks live in the spec classes):

- ``train`` is a :class:`lgeom.train.TrainSpec` (every field but ``seed``) plus ``seeds``, one endpoint per seed.
- ``curve`` is a :class:`lgeom.connect.ConnectSpec`; the fields of its curve-fitting spec
  (:class:`lgeom.curves.CurveFitSpec`: ``lr``, ``epochs``, ``t_per_batch`` ...) are keys of the section itself
  (``curve.lr``), and ``curve.seed`` seeds both; its evaluation batch size is ``data.eval_batch_size``.
- ``probe`` is a :class:`lgeom.probes.ProbeSettings` plus what feeds the probes (``samples``, ``batch_size``,
  ``pca``, ``effective_dim``).
- ``model`` is ``arch`` plus any keyword option of that architecture's builder, checked against its
  signature (``model: {arch: mlp, depth: 2, width: 16}``); ``data`` is ``name``, ``root``, ``seed``,
  ``eval_batch_size`` plus any option of the dataset (``n_train``, ``n_test`` and the builder's keywords).
  An option set to ``null`` takes the builder's default (this is how a matrix cell unsets an option).

Settings that do not change results (device, loader workers, checkpoint frequency, data folder, evaluation
batch size, names, output folder, the study section) are marked once, with
:func:`lgeom.specs.neutral_setting`, and :func:`config_hash` leaves them out.

Matrix axes live under ``study.matrix`` as ``dotted.key: [values]`` or ``section: [{key: value, ...}]``;
:func:`expand_matrix` turns a config into one config per cell. An override of a key that an axis sets is
refused (the axis would silently win in every cell): override the axis instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import inspect
import itertools
import json
import math
import re
import shlex
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from lgeom._checks import keyword_types
from lgeom.connect import ConnectSpec
from lgeom.data import EVAL_BATCH_SIZE
from lgeom.probes import ProbeSettings
from lgeom.specs import (
    RESULT_NEUTRAL,
    Problem,
    SpecError,
    changes_results,
    neutral_setting,
    raise_problems,
)
from lgeom.train import TrainSpec

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """Every problem found in a configuration, reported together."""

    def __init__(self, problems: Sequence[str], source: str = "config") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")


# --- sections -------------------------------------------------------------------------------------------
# ``derived_fields`` names fields that are not keys of their section, with where their value comes from.


@dataclass(frozen=True)
class ModelConfig:
    """Architecture by registry name plus its options: any keyword option of the architecture's builder
    (``lgeom.models.model_arch_args``), checked against the builder's signature; options not set take the
    builder's defaults. In YAML the options sit beside ``arch``: ``model: {arch: mlp, depth: 2, width: 16}``.
    """

    derived_fields: ClassVar[Mapping[str, str]] = {"options": "every key of the section other than arch"}

    arch: str = "mlp"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """Dataset by registry name, its seed (synthetic draw, split, subsets), where its files are, the
    evaluation batch size, plus its options: ``n_train`` / ``n_test`` (samples per split: for synthetic sets
    the sizes drawn, for image sets a seeded subset; unset = the dataset's default / all) and any keyword
    option of the dataset's builder (``lgeom.data.dataset_options``). In YAML the options sit beside ``name``.
    """

    derived_fields: ClassVar[Mapping[str, str]] = {
        "options": "every key of the section other than name, root, seed, eval_batch_size"
    }

    name: str = "moons"
    root: str | None = neutral_setting(None, "where the files are read from")
    seed: int = 0
    eval_batch_size: int = neutral_setting(EVAL_BATCH_SIZE, "batch-size-weighted means do not depend on the batching")
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        raise_problems(self, self.problems())

    def problems(self) -> list[Problem]:
        """Invalid fixed fields (the options are checked against the dataset's builder by :func:`validate`)."""
        out = []
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            out.append(Problem("seed", f"expected an integer >= 0, got {self.seed!r}"))
        if (
            not isinstance(self.eval_batch_size, int)
            or isinstance(self.eval_batch_size, bool)
            or self.eval_batch_size <= 0
        ):
            out.append(Problem("eval_batch_size", f"expected an integer > 0, got {self.eval_batch_size!r}"))
        return out


@dataclass(frozen=True)
class TrainConfig(TrainSpec):
    """Endpoint training: every setting of :class:`lgeom.train.TrainSpec` (documented, defaulted and checked
    there) except ``seed``, plus ``seeds``: one endpoint is trained per seed (A, B, ...).
    """

    derived_fields: ClassVar[Mapping[str, str]] = {"seed": "train.seeds (one endpoint per seed)"}

    seeds: tuple[int, ...] = (0, 1)

    def problems(self) -> list[Problem]:
        """The spec's problems plus those of ``seeds``."""
        out = super().problems()
        seeds = list(self.seeds)
        if not seeds:
            out.append(Problem("seeds", "expected at least one seed, got []"))
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
            out.append(Problem("seeds", f"expected integers >= 0, got {seeds!r}"))
        if len(set(seeds)) != len(seeds):
            out.append(Problem("seeds", f"expected distinct seeds, got {seeds!r}"))
        return out

    def endpoint_spec(self, seed: int) -> TrainSpec:
        """The :class:`~lgeom.train.TrainSpec` that trains the endpoint with ``seed``."""
        values = {f.name: getattr(self, f.name) for f in fields(TrainSpec)}
        values["seed"] = seed
        return TrainSpec(**values)


@dataclass(frozen=True)
class CurveConfig(ConnectSpec):
    """Connecting endpoint pairs: a :class:`lgeom.connect.ConnectSpec` (documented, defaulted and checked
    there) whose curve-fitting settings (:class:`lgeom.curves.CurveFitSpec`: optimiser, ``lr``, ``epochs``,
    ``batch_size``, ``t_per_batch`` ...) are keys of this section (``curve.lr``, not ``curve.fit.lr``);
    ``curve.seed`` seeds both the fit (batch order, draws of t) and the rest (evaluation subset, BatchNorm
    batches, alignment). Pass it to ``lgeom.connect.connect_pair`` as it is.
    """

    derived_fields: ClassVar[Mapping[str, str]] = {"eval_batch_size": "data.eval_batch_size"}


@dataclass(frozen=True)
class ProbeConfig(ProbeSettings):
    """Geometry probes at endpoints, curve midpoints and along paths: every field of
    ``lgeom.probes.ProbeSettings`` (documented, defaulted and checked there) plus what feeds the probes.

    ``samples`` training samples (seeded subset, batches of ``batch_size``) feed every probe; ``pca`` and
    ``effective_dim`` need trajectory snapshots (``train.snapshot_every`` / ``train.grad_snapshot_every`` > 0).
    """

    samples: int = 512
    batch_size: int = 256
    pca: bool = True
    effective_dim: bool = True

    def __post_init__(self) -> None:
        raise_problems(self, self.problems())

    def problems(self) -> list[Problem]:
        """The settings' problems plus those of ``samples`` and ``batch_size``."""
        out = super().problems()
        for name in ("samples", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                out.append(Problem(name, f"expected an integer >= 1, got {v!r}"))
        return out


@dataclass(frozen=True)
class StudyConfig:
    """The matrix and how Ray Tune runs it.

    ``matrix`` maps dotted config keys to lists of values (one cell per combination); ``cpu`` / ``gpu``
    are per-trial resources (fractions allowed); ``max_concurrent`` = 0 lets resources decide;
    ``address`` is a Ray cluster (``null``: ``$RAY_ADDRESS`` or a local Ray).
    """

    matrix: dict[str, list[Any]] = field(default_factory=dict)
    cpu: float = 1.0
    gpu: float = 0.0
    reuse_actors: bool = True
    max_concurrent: int = 0
    address: str | None = None
    max_failures: int = 0

    def __post_init__(self) -> None:
        raise_problems(self, self.problems())

    def problems(self) -> list[Problem]:
        """Invalid resources and limits (the matrix is checked by :func:`validate`)."""
        out = []
        if not _finite(self.cpu) or self.cpu <= 0:
            out.append(Problem("cpu", f"expected a number > 0 (CPUs per trial), got {self.cpu!r}"))
        if not _finite(self.gpu) or self.gpu < 0:
            out.append(Problem("gpu", f"expected a number >= 0 (GPU fraction per trial), got {self.gpu!r}"))
        for name in ("max_concurrent", "max_failures"):
            if getattr(self, name) < 0:
                out.append(Problem(name, f"expected an integer >= 0, got {getattr(self, name)!r}"))
        return out


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


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
            f.name: _section_dict(getattr(self, f.name)) if f.name in SECTIONS else _plain(getattr(self, f.name))
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
        """A copy with dotted keys changed, e.g. ``cfg.replace(**{"train.lr": 0.1})`` (validated)."""
        return apply_overrides(self, dict(changes))


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "curve": CurveConfig,
    "probe": ProbeConfig,
    "study": StudyConfig,
}

#: The sections that determine a trained endpoint (besides its seed); see ``pipelines.common.endpoint_key``.
ENDPOINT_SECTIONS = ("model", "data", "train")

#: Sections whose keys besides the fixed ones are the options of a registered builder.
OPEN_SECTIONS = ("model", "data")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --- the keys of a section, derived from its dataclass -------------------------------------------------


@dataclass(frozen=True)
class SettingKey:
    """One key of a config section: its type and default (from the dataclass field), the attribute paths
    it sets (several when a nested spec shares the name), and whether it can change results.
    """

    name: str
    hint: Any
    default: Any
    paths: tuple[tuple[str, ...], ...]
    changes_results: bool


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def section_keys(cls: type) -> dict[str, SettingKey]:
    """The keys of a section class, in field order: its dataclass fields, where a field holding a nested spec
    (``ConnectSpec.fit``) contributes that spec's keys instead, and ``derived_fields`` are left out. A name
    the section shares with a nested spec (``seed``) is one key that sets both.
    """
    derived = getattr(cls, "derived_fields", {})
    keys: dict[str, SettingKey] = {}
    for f in fields(cls):
        if f.name in derived:
            continue
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            found = [
                dataclasses.replace(k, paths=tuple((f.name, *p) for p in k.paths)) for k in section_keys(tp).values()
            ]
        else:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            found = [SettingKey(f.name, tp, default, ((f.name,),), changes_results(f))]
        for k in found:
            if k.name in keys:
                have = keys[k.name]
                keys[k.name] = dataclasses.replace(
                    have, paths=have.paths + k.paths, changes_results=have.changes_results or k.changes_results
                )
            else:
                keys[k.name] = k
    return keys


def _section_dict(section: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in section_keys(type(section)).values():
        value: Any = section
        for part in key.paths[0]:
            value = getattr(value, part)
        out[key.name] = _plain(value)
    if isinstance(section, (ModelConfig, DataConfig)):
        out.update(_plain(section.options))
    return out


# --- type coercion ------------------------------------------------------------------------------------


def _coerce(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """Check ``value`` against the annotation ``tp``; returns the converted value (or None on error).

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
            converted = _coerce(value, alt, where, tried)
            if not tried:
                return converted
            first = first or tried
        problems.extend(first)
        return None
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{where}: expected true or false, got {value!r}")
        return None
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(f"{where}: expected an integer, got {value!r}")
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
    if tp is str:
        if isinstance(value, str):
            return value
        problems.append(f"{where}: expected a string, got {value!r}")
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
        out = [_coerce(v, t, f"{where}[{i}]", problems) for i, (v, t) in enumerate(zip(value, item_types))]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            problems.append(f"{where}: expected a mapping, got {value!r}")
            return None
        return {str(k): _coerce(v, args[1], f"{where}.{k}", problems) for k, v in value.items()}
    raise TypeError(f"unsupported config annotation {tp!r} at {where}")


# --- building sections ----------------------------------------------------------------------------------


def _unknown_key(cls: type, prefix: str, key: str) -> str:
    derived = getattr(cls, "derived_fields", {})
    if key in derived:
        return f"{prefix}.{key}: expected a key of {prefix}, got {key!r}, whose value comes from {derived[key]}"
    names = list(section_keys(cls))
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean '{prefix}.{close[0]}'?)" if close else ""
    return f"{prefix}.{key}: unknown key, expected one of {', '.join(names)}{hint}"


def _read_keys(
    cls: type, raw: Mapping[str, Any], prefix: str, problems: list[str], *, open_section: bool = False
) -> tuple[dict[tuple[str, ...], Any], dict[str, Any]]:
    """Typed values of ``raw`` by attribute path, and (for an open section) the keys that are not fixed."""
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
        n_before = len(problems)
        converted = _coerce(value, keys[key].hint, f"{prefix}.{key}", problems)
        if len(problems) == n_before:
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
        tp = _hints(cls)[f.name]
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


def _section(cls: type, raw: Any, prefix: str, problems: list[str], derived: Mapping[str, Any] | None = None) -> Any:
    if not isinstance(raw, Mapping):
        problems.append(f"{prefix}: expected a mapping of settings, got {raw!r}")
        raw = {}
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
    type); unknown ones are kept for :func:`validate` to report against the builder's options.
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
                value = _coerce(value, hint, f"{prefix}.{key}", problems)
            except TypeError:  # an annotation the parser does not know: the build check judges the value
                pass
            if len(problems) != n_before:
                continue
        out[key] = value
    return out


def data_option_defaults(name: str) -> dict[str, Any]:
    """Options of dataset ``name`` with their defaults: the split sizes every dataset takes (keywords of
    ``lgeom.data.build_splits``) and the keywords of its builder.
    """
    from lgeom.data import build_splits, dataset_options

    sig = inspect.signature(build_splits)
    sizes = {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind == p.KEYWORD_ONLY and p.name not in ("root", "seed")
    }
    return {**sizes, **dataset_options(name)}


def _builder_options(section: str, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(options with defaults, their annotated types)`` of the model or dataset ``name`` (None: unknown name)."""
    if section == "model":
        from lgeom.models import model_arch_args, model_arch_types

        try:  # a registered name or a family member ("torchvision:resnet18")
            return model_arch_args(name), model_arch_types(name)
        except ValueError:
            return None
    from lgeom.data import available_datasets, build_splits, dataset_option_types

    if name not in available_datasets():
        return None
    sizes = keyword_types(build_splits, ("n_train", "n_test"))
    return data_option_defaults(name), {**sizes, **dataset_option_types(name)}


#: The key of an open section that chooses its builder.
_CHOSEN_BY = {"model": "arch", "data": "name"}


def _open_section(cls: type, raw: Any, prefix: str, problems: list[str]) -> Any:
    """A model or data section: its fixed keys, and every other key as an option of the chosen builder."""
    if not isinstance(raw, Mapping):
        problems.append(f"{prefix}: expected a mapping of settings, got {raw!r}")
        raw = {}
    values, rest = _read_keys(cls, raw, prefix, problems, open_section=True)
    chosen = _CHOSEN_BY[prefix]
    known = _builder_options(prefix, values.get((chosen,), section_keys(cls)[chosen].default))
    options = _typed_options(prefix, rest, known[0] if known else None, known[1] if known else {}, problems)
    return _construct(cls, values, prefix, problems, {"options": options})


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
    for key in ("name", "description", "output_dir"):
        if key in data:
            n_before = len(problems)
            converted = _coerce(data[key], _hints(Config)[key], key, problems)
            if len(problems) == n_before:
                kwargs[key] = converted
    kwargs["model"] = _open_section(ModelConfig, data.get("model") or {}, "model", problems)
    kwargs["data"] = _open_section(DataConfig, data.get("data") or {}, "data", problems)
    kwargs["train"] = _section(TrainConfig, data.get("train") or {}, "train", problems)
    kwargs["curve"] = _section(
        CurveConfig, data.get("curve") or {}, "curve", problems, {"eval_batch_size": kwargs["data"].eval_batch_size}
    )
    kwargs["probe"] = _section(ProbeConfig, data.get("probe") or {}, "probe", problems)
    kwargs["study"] = _section(StudyConfig, data.get("study") or {}, "study", problems)
    cfg = Config(**kwargs)
    problems.extend(p for p in validate(cfg) if p not in problems)
    if problems:
        raise ConfigError(problems, source)
    return cfg


# --- semantic validation ----------------------------------------------------------------------------

#: A plain name: it names folders under ``output_dir`` and MLflow experiments, so no path parts.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")


def validate(cfg: Config, *, check_matrix: bool = True) -> list[str]:
    """Every problem of ``cfg`` its sections cannot see alone: the model's and dataset's options against their
    builders (and that they build together), the name, the matrix axes and every matrix cell, as messages.
    (Each section checks its own values when it is constructed.)
    """
    problems = _model_and_data_problems(cfg)
    if not isinstance(cfg.name, str) or not _PLAIN_NAME.fullmatch(cfg.name):
        problems.append(
            f"name: expected a plain name (letters, digits, '.', '_', '-', '+'; it names a folder under "
            f"output_dir), got {cfg.name!r}"
        )
    problems.extend(_matrix_axis_problems(cfg.study))
    # Cells are checked only once the base config is sound, so each problem is reported once.
    if check_matrix and cfg.study.matrix and not problems:
        try:
            expand_matrix(cfg)
        except ConfigError as err:
            problems.extend(err.problems)
    return problems


def _model_and_data_problems(cfg: Config) -> list[str]:
    from lgeom.data import available_datasets
    from lgeom.models import available_models

    m, d = cfg.model, cfg.data
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
            _check_model_builds(m.arch, _items(model_options), in_shape, num_classes)
        except Exception as err:  # noqa: BLE001 - report the model's own message, per option where possible
            problems.extend(
                _blame_options(
                    "model",
                    model_options,
                    lambda opts: _check_model_builds(m.arch, _items(opts), in_shape, num_classes),
                    err,
                )
            )
    return problems


def _option_problems(
    prefix: str, name: str, options: Mapping[str, Any], registered: Sequence[str]
) -> tuple[list[str], dict[str, Any] | None]:
    """Problems of a model's or dataset's name and options, and the options its builder takes (None: unknown name)."""
    known = _builder_options(prefix, name)
    if known is None:
        return [f"{prefix}.{_CHOSEN_BY[prefix]}: expected one of {', '.join(registered)}, got {name!r}"], None
    allowed = known[0]
    problems = [_not_an_option(prefix, k, v, name, allowed) for k, v in options.items() if k not in allowed]
    return problems, {k: v for k, v in options.items() if k in allowed}


def _not_an_option(prefix: str, key: str, value: Any, owner: str, allowed: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.7)
    hint = f"; did you mean '{prefix}.{close[0]}'?" if close else ""
    return (
        f"{prefix}.{key}: not an option of {owner} (its options: {', '.join(allowed) or 'none'}{hint}), got {value!r}"
    )


def _items(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    # Hashable and order-free, for the caches below (list values become tuples).
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))


def _blame_options(prefix: str, options: Mapping[str, Any], build: Any, err: Exception) -> list[str]:
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


@functools.lru_cache(maxsize=256)
def _check_model_builds(
    arch: str, options: tuple[tuple[str, Any], ...], in_shape: tuple[int, ...], num_classes: int
) -> None:
    from lgeom.models import build_model

    build_model(arch, num_classes=num_classes, in_shape=in_shape, **dict(options))


def data_shape(d: DataConfig) -> tuple[tuple[int, ...], int]:
    """``(in_shape, num_classes)`` of the configured dataset without loading image files."""
    return _data_shape(d.name, d.seed, _items({k: v for k, v in d.options.items() if k not in ("n_train", "n_test")}))


@functools.lru_cache(maxsize=256)
def _data_shape(name: str, seed: int, options: tuple[tuple[str, Any], ...]) -> tuple[tuple[int, ...], int]:
    known = {
        "mnist": ((1, 28, 28), 10),
        "fashion-mnist": ((1, 28, 28), 10),
        "cifar10": ((3, 32, 32), 10),
        "cifar100": ((3, 32, 32), 100),
    }
    if name in known:
        return known[name]
    from lgeom.data import build_dataset, dataset_options

    # A few samples are enough to learn the shape (and to try every option).
    sizes = {"n_train": 8, "n_test": 8} if "n_train" in dataset_options(name) else {}
    ds = build_dataset(name, "test", seed=seed, **dict(options), **sizes)
    return tuple(ds.in_shape), int(ds.num_classes)


def _matrix_axis_problems(s: StudyConfig) -> list[str]:
    from lgeom.data import available_datasets
    from lgeom.models import available_models

    out = []
    leaf_keys = _leaf_keys(tuple(available_models()), tuple(available_datasets()))
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
        if key not in _NAMED_AXES:
            # The value becomes part of each cell's folder name; checked once here rather than per cell.
            out.extend(f"study.matrix.{key}: {p}" for v in values if (p := _folder_name_problem(_axis_part(key, v))))
    return out


@functools.lru_cache(maxsize=8)
def _leaf_keys(models: tuple[str, ...], datasets: tuple[str, ...]) -> frozenset[str]:
    """Every key a matrix axis may set (cached per registry contents)."""
    from lgeom.models import model_arch_args

    keys = {f.name for f in fields(Config) if f.name not in SECTIONS}
    for sec, cls in SECTIONS.items():
        keys.update(f"{sec}.{k}" for k in section_keys(cls))
    keys.update(f"model.{k}" for arch in models for k in model_arch_args(arch))
    keys.update(f"data.{k}" for name in datasets for k in data_option_defaults(name))
    return frozenset(keys)


# --- the one hash -------------------------------------------------------------------------------------


def result_settings(cfg: Config) -> dict[str, Any]:
    """Every setting of ``cfg`` that can change results, as ``{dotted key: value}``: all keys but those
    marked neutral (:func:`lgeom.specs.neutral_setting`) and the study section. Model and data options
    always count (the registries do not mark them).
    """
    out: dict[str, Any] = {}
    top_fields = {f.name: f for f in fields(Config)}
    for top, value in cfg.to_dict().items():
        if not changes_results(top_fields[top]):
            continue
        if top not in SECTIONS:
            out[top] = value
            continue
        keys = section_keys(SECTIONS[top])
        out.update({f"{top}.{k}": v for k, v in value.items() if k not in keys or keys[k].changes_results})
    return out


def config_hash(
    cfg: Config | Mapping[str, Any], *, sections: Collection[str] | None = None, leave_out: Collection[str] = ()
) -> str:
    """Stable 16-hex-digit hash of the settings that change results (:func:`result_settings`), of every
    section or only of ``sections``, without the dotted keys in ``leave_out`` (an endpoint's key hashes
    :data:`ENDPOINT_SECTIONS` without ``train.seeds``, see ``pipelines.common.endpoint_key``).
    """
    if not isinstance(cfg, Config):
        cfg = config_from_dict(cfg)
    settings = {
        k: v
        for k, v in result_settings(cfg).items()
        if (sections is None or k.split(".", 1)[0] in sections) and k not in leave_out
    }
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- loading ----------------------------------------------------------------------------------------------


def available_presets() -> list[str]:
    """Preset names shipped in ``pipelines/presets``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(preset: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = Path(preset)
    if not path.suffix:
        path = PRESET_DIR / f"{preset}.yaml"
    if not path.exists():
        raise ConfigError(
            [f"preset: expected one of {', '.join(available_presets())} or a YAML file, got {str(preset)!r}"]
        )
    if not path.is_file():
        raise ConfigError([f"preset {path}: expected a YAML file, got a folder"])
    if str(path.resolve()) in seen:
        raise ConfigError([f"preset {path.name}: 'base' chain loops back to itself"])
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        byte = err.object[err.start : err.start + 1]
        raise ConfigError(
            [
                f"preset {path}: expected a UTF-8 YAML text file, got bytes that are not UTF-8 "
                f"(byte {err.start}: {byte!r})"
            ]
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError([f"preset {path}: not valid YAML ({err})"]) from err
    if data is None:
        # An empty file would run every default into experiment "default": almost surely a mistake.
        raise ConfigError([f"preset {path}: expected a mapping of settings, got an empty file"])
    if not isinstance(data, dict):
        raise ConfigError([f"preset {path}: expected a mapping at the top level, got {type(data).__name__}"])
    base = data.get("base")
    if base:
        ref = Path(str(base))
        base_ref: str | Path = path.parent / ref if ref.suffix and not ref.is_absolute() else str(base)
        merged = _read_yaml(base_ref, seen + (str(path.resolve()),))
        data = _deep_merge(merged, {k: v for k, v in data.items() if k != "base"})
    return data


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) and k != "matrix":
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _yaml_reason(err: yaml.YAMLError) -> str:
    problem = getattr(err, "problem", None)
    context = getattr(err, "context", None)
    if problem:
        return f"{context}: {problem}" if context else str(problem)
    return str(err).splitlines()[0]


def parse_overrides(overrides: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """``["train.lr=0.05", ...]`` -> ``({"train.lr": 0.05}, problems)``; values are parsed as YAML, and a value
    that is not valid YAML is a problem naming the override (it is left out).
    """
    out: dict[str, Any] = {}
    problems: list[str] = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"override {item!r}: expected dotted.key=value")
            continue
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            problems.append(
                f"override {item!r}: expected a YAML value, got malformed YAML ({_yaml_reason(err)}); "
                f"quote a string value, e.g. {key}='\"...\"'"
            )
            continue
        out[key] = value
    return out, problems


def _set_dotted(data: dict[str, Any], key: str, value: Any, problems: list[str]) -> None:
    if key.startswith("study.matrix."):
        data.setdefault("study", {}).setdefault("matrix", {})[key[len("study.matrix.") :]] = value
        return
    parts = key.split(".")
    if len(parts) > 2 or not all(parts):
        problems.append(f"override {key!r}: expected 'section.key' or a top-level key")
        return
    if len(parts) == 1:
        data[parts[0]] = value
        return
    section = data.setdefault(parts[0], {})
    if not isinstance(section, dict):
        problems.append(f"override {key!r}: {parts[0]} is not a section")
        return
    section[parts[1]] = value


def _flow(value: Any) -> str:
    """``value`` as one line of YAML flow style (what an override takes)."""
    text = yaml.safe_dump(_plain(value), default_flow_style=True, sort_keys=False, width=2**31)
    return text.strip().removesuffix("...").strip()


def _shadowed_overrides(overrides: Mapping[str, Any], matrix: Any) -> list[str]:
    """Every override of a key that a ``study.matrix`` axis also sets: the axis value would win in the cells
    it sets, so the override would silently not apply. Each problem names the axis and the override of
    the axis that does what the user asked.
    """
    if not isinstance(matrix, Mapping):
        return []
    out = []
    for key, value in overrides.items():
        if key.split(".", 1)[0] == "study":
            continue
        if key in SECTIONS and isinstance(value, Mapping):
            leaves = {f"{key}.{k}": v for k, v in value.items()}
        else:
            leaves = {key: value}
        for leaf, leaf_value in leaves.items():
            for axis, axis_values in matrix.items():
                if axis == leaf:
                    fix = f"study.matrix.{axis}={_flow([leaf_value])}"
                    where = "every cell"
                elif axis in SECTIONS and leaf.startswith(f"{axis}.") and isinstance(axis_values, list):
                    sub = leaf[len(axis) + 1 :]
                    setting = [isinstance(v, Mapping) and sub in v for v in axis_values]
                    if not any(setting):
                        continue
                    fixed_values = [{**v, sub: leaf_value} if s else v for v, s in zip(axis_values, setting)]
                    fix = f"study.matrix.{axis}={_flow(fixed_values)}"
                    where = "every cell" if all(setting) else "the cells whose axis value sets it"
                else:
                    continue
                out.append(
                    f"override {leaf}={_flow(leaf_value)}: expected a key that no study.matrix axis sets, got one "
                    f"that axis '{axis}' sets (its value would win in {where}); "
                    f"change the axis instead: {shlex.quote(fix)}"
                )
    return out


def load_config(preset: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
    """Load a preset (name or YAML path), apply dotted overrides, validate everything.

    An override of a key that a ``study.matrix`` axis sets (directly, or inside a section axis) is refused:
    the axis would win in every cell it sets. Override the axis instead.

    Raises:
        ConfigError: listing every problem (unknown preset, keys, types and values, malformed or shadowed
            overrides) at once.
    """
    data = _read_yaml(preset)
    if isinstance(overrides, Mapping):
        parsed, problems = dict(overrides), []
    else:
        parsed, problems = parse_overrides(overrides)
    for key, value in parsed.items():
        _set_dotted(data, key, value, problems)
    study = data.get("study")
    problems.extend(_shadowed_overrides(parsed, study.get("matrix") if isinstance(study, Mapping) else None))
    try:
        cfg = config_from_dict(data, source=f"preset {preset}")
    except ConfigError as err:
        raise ConfigError(problems + err.problems, f"preset {preset}") from None
    if problems:
        raise ConfigError(problems, f"preset {preset}")
    return cfg


def apply_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """A validated copy of ``cfg`` with dotted keys set to new values (no matrix rule: a program changing
    a config knows which cells it builds).
    """
    data = cfg.to_dict()
    problems: list[str] = []
    for key, value in overrides.items():
        _set_dotted(data, key, value, problems)
    if problems:
        raise ConfigError(problems)
    return config_from_dict(data)


# --- the matrix ----------------------------------------------------------------------------------------


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
    from lgeom.models import model_arch_args

    defaults = {k: v for k, v in model_arch_args(m.arch).items() if v is not inspect.Parameter.empty}
    opts = {**defaults, **m.options}
    size = next((str(opts[k]) for k in _LABEL_SIZES if k in opts), "")
    width = next((f"x{opts[k]}" for k in _LABEL_WIDTHS if k in opts), "")
    return f"{m.arch}{size}{width}"


_AXIS_LABELS = {"train.weight_decay": "wd", "train.seeds": "seeds", "train.batch_size": "bs", "model.activation": "act"}
_NAMED_AXES = {"model.arch", *(f"model.{k}" for k in _LABEL_SIZES + _LABEL_WIDTHS), "data.name", "train.optimizer"}


def _cell_name_parts(cfg: Config, axes: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(what, folder name)`` for each part of a cell's name."""
    parts = [("model", model_label(cfg.model)), ("data.name", cfg.data.name), ("train.optimizer", cfg.train.optimizer)]
    for key, value in axes.items():
        if key in _NAMED_AXES or isinstance(value, dict):
            continue
        parts.append((f"study.matrix.{key}", _axis_part(key, value)))
    return parts


def _axis_part(key: str, value: Any) -> str:
    """The ``label=value`` part of a cell's name for one axis value."""
    label = _AXIS_LABELS.get(key, key.split(".")[-1])
    text = "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return f"{label}={text}"


def cell_name(cfg: Config, axes: Mapping[str, Any]) -> str:
    """``<model>/<dataset>/<optimizer>`` plus ``key=value`` for every other axis, e.g.
    ``mlp2x64/moons/sgd/activation=tanh``.
    """
    return "/".join(part for _, part in _cell_name_parts(cfg, axes))


def _folder_name_problem(text: str) -> str | None:
    """Why ``text`` cannot be one folder name inside a study's output folder (None when it can)."""
    if text in ("", ".", "..") or any(c in text for c in "/\\\0"):
        return "expected a value that makes a plain folder name of the cell (no '/', '\\', '..'), got " + repr(text)
    return None


def expand_matrix(cfg: Config) -> list[Cell]:
    """One :class:`Cell` per combination of ``cfg.study.matrix`` (one cell of ``cfg`` itself when empty).

    Raises:
        ConfigError: any cell's config is invalid, or a value would not make a plain folder name of the
            cell's name (all cells' problems listed, each naming its cell).
    """
    axes = list(cfg.study.matrix.items())
    if not axes:
        problems = [f"{what}: {p}" for what, part in _cell_name_parts(cfg, {}) if (p := _folder_name_problem(part))]
        if problems:
            raise ConfigError(problems)
        return [Cell(cell_name(cfg, {}), {}, cfg)]
    cells: list[Cell] = []
    problems = []
    base = cfg.to_dict()
    base["study"]["matrix"] = {}
    names: set[str] = set()
    for combo in itertools.product(*[values for _, values in axes]):
        values = {k: v for (k, _), v in zip(axes, combo)}
        data = json.loads(json.dumps(base))
        local: list[str] = []
        for k, v in values.items():
            if isinstance(v, dict):
                for kk, vv in v.items():
                    _set_dotted(data, f"{k}.{kk}", vv, local)
            else:
                _set_dotted(data, k, v, local)
        try:
            cell_cfg = config_from_dict(data)
        except ConfigError as err:
            problems.extend(f"study.matrix cell {values}: {p}" for p in err.problems)
            continue
        bad = [
            f"study.matrix cell {values}: {what}: {p}"
            for what, part in _cell_name_parts(cell_cfg, values)
            if (p := _folder_name_problem(part))
        ]
        if bad:
            problems.extend(bad)
            continue
        name = cell_name(cell_cfg, values)
        if name in names:
            problems.append(f"study.matrix: two cells share the name {name!r}")
        names.add(name)
        cells.append(Cell(name, values, dataclasses.replace(cell_cfg, study=cfg.study)))
    if problems:
        raise ConfigError(problems)
    return cells
