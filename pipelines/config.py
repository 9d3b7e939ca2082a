"""Configuration: frozen dataclasses, YAML presets and dotted overrides.

``load_config("quick", ["train.lr=0.05", "model.width=128"])`` reads ``pipelines/presets/quick.yaml`` (or
a YAML path), follows its ``base:`` chain, applies the overrides, checks every key and value, and raises
one :class:`ConfigError` listing *all* problems. Presets ending in ``-tiny`` shrink a preset for tests.

Matrix axes live under ``study.matrix`` as ``dotted.key: [values]``; :func:`expand_matrix` turns a config
into one config per cell.
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
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lgeom.probes import ProbeSettings

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """Every problem found in a configuration, reported together."""

    def __init__(self, problems: Sequence[str], source: str = "config") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")


# --- sections -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """Architecture by registry name; options left ``null`` take the architecture's default."""

    arch: str = "mlp"
    depth: int | None = None
    width: int | None = None
    activation: str | None = None
    blocks: int | None = None
    channels: int | None = None
    batchnorm: bool | None = None

    def options(self) -> dict[str, Any]:
        """The architecture options that are set (passed to ``build_model``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "arch" and getattr(self, f.name) is not None}


@dataclass(frozen=True)
class DataConfig:
    """Dataset by registry name. ``n_train`` / ``n_test``: samples per split (for synthetic sets the sizes
    drawn, for image sets a seeded subset; ``null`` = the dataset's default / all). Other options left
    ``null`` take the dataset's default."""

    name: str = "moons"
    root: str | None = None
    seed: int = 0
    n_train: int | None = None
    n_test: int | None = None
    noise: float | None = None
    factor: float | None = None
    centers: int | None = None
    radius: float | None = None
    classes: int | None = None
    separation: float | None = None
    test_fraction: float | None = None
    augment: bool | None = None
    download: bool | None = None
    verify_checksums: bool | None = None
    eval_batch_size: int = 512


@dataclass(frozen=True)
class TrainConfig:
    """Endpoint training (see ``lgeom.train.TrainSpec``); ``seeds`` are the endpoints' seeds (A, B, ...)."""

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "piecewise"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    epochs: int = 20
    batch_size: int = 128
    seeds: tuple[int, ...] = (0, 1)
    device: str = "auto"
    amp: bool = False
    snapshot_every: int = 0
    grad_snapshot_every: int = 0
    eval_every: int = 1
    num_workers: int = 0
    checkpoint_every: int = 1


@dataclass(frozen=True)
class CurveConfig:
    """Connecting endpoint pairs: which curves, how they are fitted and evaluated.

    ``kinds`` lists the fitted curves (the line is always evaluated); ``align`` also connects B permuted
    onto A (results under ``<path>_aligned``); ``bn_batches`` x ``bn_batch_size`` training samples
    recompute BatchNorm statistics at each path point; ``eval_train_samples`` caps the training samples
    evaluated along paths (``null``: all); ``seed`` seeds curve fitting (batch order, draws of t), the
    evaluation subset, the BatchNorm batches and the alignment.
    """

    kinds: tuple[str, ...] = ("bezier", "polychain")
    bends: int = 1
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "piecewise"
    epochs: int = 10
    batch_size: int = 128
    t_per_batch: int = 1
    points: int = 61
    align: bool = False
    bn_batches: int = 10
    bn_batch_size: int = 128
    eval_train_samples: int | None = None
    plane: bool = True
    plane_grid: int = 21
    plane_margin: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class ProbeConfig(ProbeSettings):
    """Geometry probes at endpoints, curve midpoints and along paths: every field of
    ``lgeom.probes.ProbeSettings`` (documented and validated there) plus what feeds the probes.

    ``samples`` training samples (seeded subset, batches of ``batch_size``) feed every probe; ``pca`` and
    ``effective_dim`` need trajectory snapshots (``train.snapshot_every`` / ``train.grad_snapshot_every`` > 0).
    """

    samples: int = 512
    batch_size: int = 256
    pca: bool = True
    effective_dim: bool = True


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


@dataclass(frozen=True)
class Config:
    """A whole experiment: what to train, connect and probe, and how the study runs."""

    name: str = "default"
    description: str = ""
    output_dir: str = "outputs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    curve: CurveConfig = field(default_factory=CurveConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    study: StudyConfig = field(default_factory=StudyConfig)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (tuples as lists), loadable again by :func:`config_from_dict`."""
        return _plain(dataclasses.asdict(self))

    def flat(self, *, skip: Sequence[str] = ("study", "description")) -> dict[str, Any]:
        """``{"train.lr": 0.05, ...}`` for every leaf outside ``skip`` sections (MLflow params)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        d = self.to_dict()
        for s in skip:
            d.pop(s, None)
        walk("", d)
        return out

    def replace(self, **changes: Any) -> "Config":
        """A copy with dotted keys changed, e.g. ``cfg.replace(**{"train.lr": 0.1})`` (validated)."""
        return apply_overrides(self, {k: v for k, v in changes.items()})


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "curve": CurveConfig,
    "probe": ProbeConfig,
    "study": StudyConfig,
}


# --- type coercion ------------------------------------------------------------------------------------


def _coerce(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """Check ``value`` against the annotation ``tp``; returns the converted value (or None on error)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where, problems)
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


def _section_from_dict(cls: type, data: Mapping[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    if not isinstance(data, Mapping):
        problems.append(f"{prefix}: expected a mapping of settings, got {data!r}")
        return cls()
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}.{close[0]}'?)" if close else ""
            problems.append(f"{prefix}.{key}: unknown key, expected one of {', '.join(names)}{hint}")
            continue
        n_before = len(problems)
        converted = _coerce(value, hints[key], f"{prefix}.{key}", problems)
        if len(problems) == n_before:
            kwargs[key] = converted
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any], *, source: str = "config") -> Config:
    """Build and validate a :class:`Config` from a nested dict.

    Raises:
        ConfigError: every unknown key, wrong type and bad value at once.
    """
    problems: list[str] = []
    top_names = [f.name for f in fields(Config)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "base":
            continue
        if key in SECTIONS:
            kwargs[key] = _section_from_dict(SECTIONS[key], value or {}, key, problems)
        elif key in top_names:
            n_before = len(problems)
            converted = _coerce(value, typing.get_type_hints(Config)[key], key, problems)
            if len(problems) == n_before:
                kwargs[key] = converted
        else:
            close = difflib.get_close_matches(str(key), top_names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{key}: unknown key, expected one of {', '.join(top_names)}{hint}")
    cfg = Config(**kwargs)
    problems.extend(validate(cfg))
    if problems:
        raise ConfigError(problems, source)
    return cfg


# --- semantic validation ----------------------------------------------------------------------------


def validate(cfg: Config, *, check_matrix: bool = True) -> list[str]:
    """Every semantic problem of ``cfg`` (values that parse but make no sense), as messages."""
    from lgeom.data import available_datasets, dataset_options
    from lgeom.models import available_models, model_arch_args
    from lgeom.train import TrainSpec

    problems: list[str] = []
    data_error = None
    m = cfg.model
    if m.arch not in available_models():
        problems.append(f"model.arch: expected one of {', '.join(available_models())}, got {m.arch!r}")
    else:
        allowed = model_arch_args(m.arch)
        for k in m.options():
            if k not in allowed:
                problems.append(f"model.{k}: not an option of {m.arch} (its options: {', '.join(allowed)}), got {getattr(m, k)!r}")
        if cfg.data.name in available_datasets():
            known = {k: v for k, v in m.options().items() if k in allowed}
            try:
                in_shape, num_classes = data_shape(cfg.data)
            except Exception as err:  # noqa: BLE001 - reported with the data section's problems below
                in_shape, data_error = None, f"data: {err}"
            if in_shape is not None:
                try:
                    _check_model_builds(m.arch, tuple(sorted(known.items())), in_shape, num_classes)
                except Exception as err:  # noqa: BLE001 - report the model's own message
                    problems.extend(_model_problems(m.arch, known, in_shape, num_classes, err))

    d = cfg.data
    if d.name not in available_datasets():
        problems.append(f"data.name: expected one of {', '.join(available_datasets())}, got {d.name!r}")
    else:
        opts = dataset_options(d.name)
        for k, v in data_options(d).items():
            if k not in opts and k not in ("n_train", "n_test"):
                problems.append(f"data.{k}: not an option of {d.name} (its options: {', '.join(opts) or 'none'}), got {v!r}")
    if data_error and not any(p.startswith("data.") for p in problems):
        problems.append(data_error)
    for k in ("n_train", "n_test"):
        v = getattr(d, k)
        if v is not None and v <= 0:
            problems.append(f"data.{k}: expected an integer > 0, got {v!r}")
    if d.seed < 0:
        problems.append(f"data.seed: expected an integer >= 0, got {d.seed!r}")
    if d.eval_batch_size <= 0:
        problems.append(f"data.eval_batch_size: expected an integer > 0, got {d.eval_batch_size!r}")

    t = cfg.train
    spec_kwargs = train_spec_kwargs(t, seed=0)
    try:
        TrainSpec(**spec_kwargs)
    except ValueError as err:
        msg = str(err).split(": ", 1)[1] if ": " in str(err) else str(err)
        problems.extend(f"train.{p}" for p in msg.split("; "))
    if not t.seeds:
        problems.append("train.seeds: expected at least one seed, got []")
    if any(s < 0 for s in t.seeds):
        problems.append(f"train.seeds: expected integers >= 0, got {list(t.seeds)!r}")
    if len(set(t.seeds)) != len(t.seeds):
        problems.append(f"train.seeds: expected distinct seeds, got {list(t.seeds)!r}")

    problems.extend(_validate_curve(cfg.curve))
    problems.extend(_validate_probe(cfg.probe))
    problems.extend(_validate_study(cfg.study))
    # Cells are checked only once the base config is sound, so each problem is reported once.
    if check_matrix and cfg.study.matrix and not problems:
        try:
            expand_matrix(cfg)
        except ConfigError as err:
            problems.extend(err.problems)
    return problems


def _positive_ints(section: Any, prefix: str, names: Sequence[str], allow_zero: Sequence[str] = ()) -> list[str]:
    out = []
    for name in names:
        v = getattr(section, name)
        if v is None:
            continue
        lo = 0 if name in allow_zero else 1
        if v < lo:
            out.append(f"{prefix}.{name}: expected an integer >= {lo}, got {v!r}")
    return out


def _validate_curve(c: CurveConfig) -> list[str]:
    from lgeom.optim import OPTIMIZERS, SCHEDULES

    out = _positive_ints(c, "curve", ["bends", "epochs", "batch_size", "t_per_batch", "points", "bn_batches",
                                       "bn_batch_size", "eval_train_samples", "plane_grid", "seed"],
                         allow_zero=["seed"])
    bad = [k for k in c.kinds if k not in ("bezier", "polychain")]
    if bad:
        out.append(f"curve.kinds: expected a list of 'bezier' and/or 'polychain', got {list(c.kinds)!r}")
    if c.optimizer not in OPTIMIZERS:
        out.append(f"curve.optimizer: expected one of {', '.join(OPTIMIZERS)}, got {c.optimizer!r}")
    if c.schedule not in SCHEDULES:
        out.append(f"curve.schedule: expected one of {', '.join(SCHEDULES)}, got {c.schedule!r}")
    if not math.isfinite(c.lr) or c.lr <= 0:
        out.append(f"curve.lr: expected a finite number > 0, got {c.lr!r}")
    if not 0 <= c.momentum < 1:
        out.append(f"curve.momentum: expected a number in [0, 1), got {c.momentum!r}")
    if not math.isfinite(c.weight_decay) or c.weight_decay < 0:
        out.append(f"curve.weight_decay: expected a finite number >= 0, got {c.weight_decay!r}")
    if c.points < 2:
        out.append(f"curve.points: expected an integer >= 2, got {c.points!r}")
    if not math.isfinite(c.plane_margin) or c.plane_margin < 0:
        out.append(f"curve.plane_margin: expected a number >= 0, got {c.plane_margin!r}")
    if c.plane_grid == 1:  # values < 1 are reported above
        out.append(f"curve.plane_grid: expected an integer >= 2, got {c.plane_grid!r}")
    if len(set(c.kinds)) != len(c.kinds):
        out.append(f"curve.kinds: expected distinct kinds, got {list(c.kinds)!r}")
    return out


def _validate_probe(p: ProbeConfig) -> list[str]:
    out = _positive_ints(p, "probe", ["samples", "batch_size"])
    out.extend(f"probe.{problem}" for problem in p.problems())
    return out


def _validate_study(s: StudyConfig) -> list[str]:
    out = []
    if not math.isfinite(s.cpu) or s.cpu <= 0:
        out.append(f"study.cpu: expected a number > 0 (CPUs per trial), got {s.cpu!r}")
    if not math.isfinite(s.gpu) or s.gpu < 0:
        out.append(f"study.gpu: expected a number >= 0 (GPU fraction per trial), got {s.gpu!r}")
    if s.max_concurrent < 0:
        out.append(f"study.max_concurrent: expected an integer >= 0, got {s.max_concurrent!r}")
    if s.max_failures < 0:
        out.append(f"study.max_failures: expected an integer >= 0, got {s.max_failures!r}")
    leaf_keys = _leaf_keys()
    for key, values in s.matrix.items():
        if key in SECTIONS and key != "study":
            # A section axis: each value is a mapping of several keys that vary together.
            if not isinstance(values, list) or not values or not all(isinstance(v, dict) for v in values):
                out.append(f"study.matrix.{key}: expected a non-empty list of mappings of {key} settings, got {values!r}")
            continue
        if key not in leaf_keys or key.startswith("study."):
            close = difflib.get_close_matches(key, sorted(leaf_keys), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            out.append(f"study.matrix.{key}: unknown axis, expected a dotted config key like 'train.lr'{hint}")
        if not isinstance(values, list) or not values:
            out.append(f"study.matrix.{key}: expected a non-empty list of values, got {values!r}")
    return out


def _leaf_keys() -> set[str]:
    keys = {f.name for f in fields(Config) if f.name not in SECTIONS}
    for sec, cls in SECTIONS.items():
        keys.update(f"{sec}.{f.name}" for f in fields(cls))
    return keys


# --- helpers used by the steps ----------------------------------------------------------------------------


def data_options(d: DataConfig) -> dict[str, Any]:
    """Dataset keyword options that are set (besides name, root, seed and eval batch size)."""
    skip = {"name", "root", "seed", "eval_batch_size"}
    return {f.name: getattr(d, f.name) for f in fields(d) if f.name not in skip and getattr(d, f.name) is not None}


@functools.lru_cache(maxsize=256)
def _check_model_builds(arch: str, options: tuple[tuple[str, Any], ...], in_shape: tuple[int, ...], num_classes: int) -> None:
    from lgeom.models import build_model

    build_model(arch, num_classes=num_classes, in_shape=in_shape, **dict(options))


def _model_problems(
    arch: str, options: Mapping[str, Any], in_shape: tuple[int, ...], num_classes: int, err: Exception
) -> list[str]:
    """Every bad model option, each found by building with that option alone (the others at their defaults).

    ``err`` is the error of building with all options; it is reported as it is when no option fails alone
    (a problem of the combination, or of the data's shape).
    """
    out = []
    for key, value in sorted(options.items()):
        try:
            _check_model_builds(arch, ((key, value),), in_shape, num_classes)
        except Exception as alone:  # noqa: BLE001 - report the model's own message
            out.append(f"model.{key}: {alone}")
    return out or [f"model: {err}"]


@functools.lru_cache(maxsize=256)
def data_shape(d: DataConfig) -> tuple[tuple[int, ...], int]:
    """``(in_shape, num_classes)`` of the configured dataset without loading image files."""
    known = {"mnist": ((1, 28, 28), 10), "fashion-mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100)}
    if d.name in known:
        return known[d.name]
    from lgeom.data import build_dataset

    opts = {k: v for k, v in data_options(d).items() if k not in ("n_train", "n_test")}
    sizes = {}
    if d.name not in ("digits",):
        sizes = {"n_train": 8, "n_test": 8}
    ds = build_dataset(d.name, "test", seed=d.seed, **opts, **sizes)
    return tuple(ds.in_shape), int(ds.num_classes)


def train_spec_kwargs(t: TrainConfig, *, seed: int) -> dict[str, Any]:
    """Keyword arguments of ``lgeom.train.TrainSpec`` for one endpoint seed."""
    d = {f.name: getattr(t, f.name) for f in fields(t) if f.name != "seeds"}
    d["seed"] = seed
    return d


# --- loading ----------------------------------------------------------------------------------------------


def available_presets() -> list[str]:
    """Preset names shipped in ``pipelines/presets``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(preset: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = Path(preset)
    if not path.suffix:
        path = PRESET_DIR / f"{preset}.yaml"
    if not path.exists():
        raise ConfigError([f"preset: expected one of {', '.join(available_presets())} or a YAML file, got {str(preset)!r}"])
    if str(path.resolve()) in seen:
        raise ConfigError([f"preset {path.name}: 'base' chain loops back to itself"])
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError([f"preset {path}: not valid YAML ({err})"]) from err
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


def parse_overrides(overrides: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """``["train.lr=0.05", ...]`` -> ``({"train.lr": 0.05}, problems)``; values are parsed as YAML."""
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
        except yaml.YAMLError:
            value = raw
        out[key] = value
    return out, problems


def _set_dotted(data: dict[str, Any], key: str, value: Any, problems: list[str]) -> None:
    if key.startswith("study.matrix."):
        data.setdefault("study", {}).setdefault("matrix", {})[key[len("study.matrix."):]] = value
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


def load_config(preset: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
    """Load a preset (name or YAML path), apply dotted overrides, validate everything.

    Raises:
        ConfigError: listing every problem (unknown preset, keys, types and values) at once.
    """
    data = _read_yaml(preset)
    if isinstance(overrides, Mapping):
        parsed, problems = dict(overrides), []
    else:
        parsed, problems = parse_overrides(overrides)
    for key, value in parsed.items():
        _set_dotted(data, key, value, problems)
    try:
        cfg = config_from_dict(data, source=f"preset {preset}")
    except ConfigError as err:
        raise ConfigError(problems + err.problems, f"preset {preset}") from None
    if problems:
        raise ConfigError(problems, f"preset {preset}")
    return cfg


def apply_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """A validated copy of ``cfg`` with dotted keys set to new values."""
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


def model_label(m: ModelConfig) -> str:
    """Short architecture label, e.g. ``preresnet8``, ``mlp2x64``, ``cnn16``, ``resmlp2x64``."""
    from lgeom.models import model_arch_args

    defaults = {k: v for k, v in model_arch_args(m.arch).items() if v is not inspect.Parameter.empty}
    opts = {**defaults, **m.options()}
    if m.arch == "preresnet":
        return f"preresnet{opts.get('depth')}"
    if m.arch in ("mlp",):
        return f"mlp{opts.get('depth')}x{opts.get('width')}"
    if m.arch == "resmlp":
        return f"resmlp{opts.get('blocks')}x{opts.get('width')}"
    return f"{m.arch}{opts.get('channels')}"


_AXIS_LABELS = {"train.weight_decay": "wd", "train.seeds": "seeds", "train.batch_size": "bs", "model.activation": "act"}
_NAMED_AXES = {"model.arch", "model.depth", "model.width", "model.blocks", "model.channels", "data.name", "train.optimizer"}


def cell_name(cfg: Config, axes: Mapping[str, Any]) -> str:
    """``<model>/<dataset>/<optimizer>`` plus ``key=value`` for every other axis, e.g.
    ``mlp2x64/moons/sgd/activation=tanh``."""
    parts = [model_label(cfg.model), cfg.data.name, cfg.train.optimizer]
    for key, value in axes.items():
        if key in _NAMED_AXES or isinstance(value, dict):
            continue
        label = _AXIS_LABELS.get(key, key.split(".")[-1])
        text = "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        parts.append(f"{label}={text}")
    return "/".join(parts)


def expand_matrix(cfg: Config) -> list[Cell]:
    """One :class:`Cell` per combination of ``cfg.study.matrix`` (one cell of ``cfg`` itself when empty).

    Raises:
        ConfigError: any cell's config is invalid (all cells' problems listed, each naming its cell).
    """
    axes = list(cfg.study.matrix.items())
    if not axes:
        return [Cell(cell_name(cfg, {}), {}, cfg)]
    cells: list[Cell] = []
    problems: list[str] = []
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
        name = cell_name(cell_cfg, values)
        if name in names:
            problems.append(f"study.matrix: two cells share the name {name!r}")
        names.add(name)
        cells.append(Cell(name, values, dataclasses.replace(cell_cfg, study=cfg.study)))
    if problems:
        raise ConfigError(problems)
    return cells


def config_hash(cfg: Config | Mapping[str, Any]) -> str:
    """Stable 16-hex-digit hash of everything that changes results (not the study section, name,
    description, output folder or device)."""
    data = cfg.to_dict() if isinstance(cfg, Config) else json.loads(json.dumps(cfg))
    for k in ("study", "name", "description", "output_dir"):
        data.pop(k, None)
    data.get("train", {}).pop("device", None)
    data.get("train", {}).pop("num_workers", None)
    data.get("data", {}).pop("root", None)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
