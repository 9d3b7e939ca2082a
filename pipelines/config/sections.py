"""The config sections: dataclasses that are the lgeom specs they configure, and the keys each one has.

- ``train`` is a :class:`lgeom.train.TrainSpec` (every field but ``seed``) plus ``seeds``, one endpoint per seed.
- ``curve`` is a :class:`lgeom.connect.ConnectSpec`; the fields of its curve-fitting spec
  (:class:`lgeom.curves.CurveFitSpec`: ``lr``, ``epochs``, ``t_per_batch`` ...) are keys of the section itself
  (``curve.lr``), and ``curve.seed`` seeds both; its evaluation batch size is ``data.eval_batch_size``.
- ``probe`` is a :class:`lgeom.probes.ProbeSettings` plus what feeds the probes (``samples``, ``batch_size``,
  ``pca``, ``effective_dim``).
- ``model`` is ``arch`` plus any keyword option of that architecture's builder; ``data`` is ``name``, ``root``,
  ``seed``, ``eval_batch_size`` plus any option of the dataset (the options are checked by
  :mod:`pipelines.config.validate`).
- ``study`` is the matrix and how Ray Tune runs it.

A section's keys (:func:`section_keys`) are derived from its dataclass fields: defaults, types and checks
live in the spec classes. ``derived_fields`` names fields that are not keys of their section, with where
their value comes from.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from lgeom.connect import ConnectSpec
from lgeom.data import EVAL_BATCH_SIZE
from lgeom.probes import ProbeSettings
from lgeom.specs import Problem, changes_results, neutral_setting, raise_problems
from lgeom.train import TrainSpec


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
        """Invalid fixed fields (the options are checked against the dataset's builder by
        :func:`pipelines.config.validate`).
        """
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
    ``address`` is a Ray cluster (``null``: ``$RAY_ADDRESS`` or a local Ray). ``cell_figures`` = false: each
    trial writes every figure's data (and ``figure_inputs.json``) but draws no per-cell PNG (its run is tagged
    ``lgeom.figures=deferred``); ``lgeom figures`` draws them later. Results are the same either way.
    """

    matrix: dict[str, list[Any]] = field(default_factory=dict)
    cpu: float = 1.0
    gpu: float = 0.0
    reuse_actors: bool = True
    max_concurrent: int = 0
    address: str | None = None
    max_failures: int = 0
    cell_figures: bool = True

    def __post_init__(self) -> None:
        raise_problems(self, self.problems())

    def problems(self) -> list[Problem]:
        """Invalid resources and limits (the matrix is checked by :func:`pipelines.config.validate`)."""
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
    """Whether ``x`` is a finite real number (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


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


def plain(value: Any) -> Any:
    """``value`` with every mapping a ``dict`` and every tuple a list, recursively (the YAML's shape)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
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
def type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a section (or config) class, cached."""
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
        tp = type_hints(cls)[f.name]
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


def section_dict(section: Any) -> dict[str, Any]:
    """A section as a plain dict of its keys (model and data options beside the fixed keys)."""
    out: dict[str, Any] = {}
    for key in section_keys(type(section)).values():
        value: Any = section
        for part in key.paths[0]:
            value = getattr(value, part)
        out[key.name] = plain(value)
    if isinstance(section, (ModelConfig, DataConfig)):
        out.update(plain(section.options))
    return out


def set_dotted(data: dict[str, Any], key: str, value: Any, problems: list[str]) -> None:
    """Set the dotted ``key`` (``section.key``, a top-level key, or ``study.matrix.<axis>``) in the nested
    dict ``data`` (the YAML's shape); a key of another shape is a problem naming the override.
    """
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
