"""Loading a config: YAML presets (a shipped name or a path) with their ``base:`` chain, and dotted
overrides (``train.epochs=5``), every problem reported at once.

An override of a key that a ``study.matrix`` axis sets is refused (the axis would silently win in every
cell it sets): override the axis instead. Presets ending in ``-tiny`` shrink a preset for tests.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipelines.config.errors import ConfigError
from pipelines.config.experiment import Config, config_from_dict
from pipelines.config.sections import SECTIONS, plain, set_dotted

#: Where the shipped presets are (``pipelines/presets``).
PRESET_DIR = Path(__file__).parent.parent / "presets"


def available_presets() -> list[str]:
    """Preset names shipped in ``pipelines/presets``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(preset: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings of ``preset`` (a shipped name or a YAML path) merged over its ``base:`` chain (``seen``: the
    files already on the chain, to refuse a loop).

    Raises:
        ConfigError: the file is missing, a folder, not UTF-8, not YAML, empty or not a mapping; the chain loops.
    """
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
    """``over`` merged into a copy of ``base``, mappings key by key (a ``matrix`` is replaced whole)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) and k != "matrix":
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _yaml_reason(err: yaml.YAMLError) -> str:
    """The short reason of a YAML error (its context and problem), without the position dump."""
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


def _flow(value: Any) -> str:
    """``value`` as one line of YAML flow style (what an override takes)."""
    text = yaml.safe_dump(plain(value), default_flow_style=True, sort_keys=False, width=2**31)
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
                    changed = [{**v, sub: leaf_value} if s else v for v, s in zip(axis_values, setting)]
                    fix = f"study.matrix.{axis}={_flow(changed)}"
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
        set_dotted(data, key, value, problems)
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
    a config knows which cells it builds); the same as :meth:`Config.replace`.

    Raises:
        ConfigError: a key of the wrong shape, or every problem of the changed config.
    """
    return cfg.replace(**overrides)
