"""Configuration: sections that are the lgeom specs they configure, YAML presets and dotted overrides.

``load_config("quick", ["train.epochs=5", "curve.align=false"])`` reads ``pipelines/presets/quick.yaml`` (or
a YAML path), follows its ``base:`` chain, applies the overrides, checks every key and value, and raises
one :class:`ConfigError` listing *all* problems. Presets ending in ``-tiny`` shrink a preset for tests.

One concept per module, every public name re-exported here (``from pipelines.config import X``):

- :mod:`~pipelines.config.sections`: the sections (``train`` is a :class:`lgeom.train.TrainSpec`, ``curve``
  a :class:`lgeom.connect.ConnectSpec` with its fit spec's keys lifted, ``probe`` a
  :class:`lgeom.probes.ProbeSettings`; ``model`` and ``data`` are a registry name plus the builder's options)
  and the keys each one has, derived from its dataclass: defaults, types and checks live in the spec classes.
- :mod:`~pipelines.config.coerce`: raw YAML values against the keys' annotations, a raw mapping read into
  its section.
- :mod:`~pipelines.config.builders`: what the model and dataset builders take (options, types, shapes).
- :mod:`~pipelines.config.validate`: what a section cannot check alone: model and data options against
  their builders (an option set to ``null`` takes the builder's default), the name, the matrix axes.
- :mod:`~pipelines.config.matrix`: the matrix cells, their names and labels.
- :mod:`~pipelines.config.experiment`: the whole :class:`Config`, built from a dict and checked whole, and
  :func:`expand_matrix` (matrix axes under ``study.matrix`` as ``dotted.key: [values]`` or
  ``section: [{key: value, ...}]``; one config per cell).
- :mod:`~pipelines.config.hashing`: :func:`config_hash`, of the settings that change results only (settings
  marked with :func:`lgeom.specs.neutral_setting` are left out).
- :mod:`~pipelines.config.presets`: presets and overrides; an override of a key that a matrix axis sets is
  refused (the axis would silently win in every cell): override the axis instead.
- :mod:`~pipelines.config.errors`: :class:`ConfigError`, every problem at once.
"""

from __future__ import annotations

from pipelines.config.builders import data_option_defaults, data_shape
from pipelines.config.errors import ConfigError
from pipelines.config.experiment import (
    Config,
    config_from_dict,
    expand_matrix,
    validate,
)
from pipelines.config.hashing import config_hash, result_settings
from pipelines.config.matrix import Cell, cell_name, model_label
from pipelines.config.presets import (
    PRESET_DIR,
    apply_overrides,
    available_presets,
    load_config,
    parse_overrides,
)
from pipelines.config.sections import (
    ENDPOINT_SECTIONS,
    OPEN_SECTIONS,
    SECTIONS,
    CurveConfig,
    DataConfig,
    ModelConfig,
    ProbeConfig,
    SettingKey,
    StudyConfig,
    TrainConfig,
    section_keys,
)

__all__ = [
    "ENDPOINT_SECTIONS",
    "OPEN_SECTIONS",
    "PRESET_DIR",
    "SECTIONS",
    "Cell",
    "Config",
    "ConfigError",
    "CurveConfig",
    "DataConfig",
    "ModelConfig",
    "ProbeConfig",
    "SettingKey",
    "StudyConfig",
    "TrainConfig",
    "apply_overrides",
    "available_presets",
    "cell_name",
    "config_from_dict",
    "config_hash",
    "data_option_defaults",
    "data_shape",
    "expand_matrix",
    "load_config",
    "model_label",
    "parse_overrides",
    "result_settings",
    "section_keys",
    "validate",
]
