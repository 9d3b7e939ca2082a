"""The sections are the lgeom specs they configure: their keys are the spec fields with the spec defaults (a
field added to a spec becomes a key), the curve section's keys set its fit spec, and the specs' problems are
reported under their keys.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest

from lgeom.connect import ConnectSpec
from lgeom.curves import CurveFitSpec
from lgeom.probes import ProbeSettings
from lgeom.specs import Problem, SpecError
from lgeom.train import TrainSpec
from pipelines.config import (
    ConfigError,
    CurveConfig,
    ProbeConfig,
    TrainConfig,
    config_from_dict,
    config_hash,
    expand_matrix,
    load_config,
    section_keys,
)
from pipelines.config.sections import set_dotted


def _spec_defaults(spec: type) -> dict[str, object]:
    return {
        f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(spec)
    }


@pytest.mark.parametrize(
    ("section", "specs", "not_keys"),
    [
        (TrainConfig, [TrainSpec], {"seed"}),  # one endpoint per value of train.seeds instead
        (
            CurveConfig,
            [ConnectSpec, CurveFitSpec],
            {"fit", "eval_batch_size"},
        ),  # fit's keys lifted; batch size from data
        (ProbeConfig, [ProbeSettings], set()),
    ],
)
def test_section_keys_are_the_spec_fields_with_the_spec_defaults(
    section: type, specs: list[type], not_keys: set[str]
) -> None:
    keys = section_keys(section)
    assert issubclass(section, specs[0])
    for spec in specs:
        hints = typing.get_type_hints(spec)
        for name, default in _spec_defaults(spec).items():
            if name in not_keys:
                continue
            assert name in keys, f"{spec.__name__}.{name} is not a key of the {section.__name__} section"
            assert keys[name].default == default, name
            assert keys[name].hint == hints[name], name
    assert not (set(keys) & not_keys)
    # and the defaults a config gets when nothing is set are those of the specs
    cfg = config_from_dict({})
    assert cfg.train.endpoint_spec(0) == TrainSpec() and cfg.curve.fit == CurveFitSpec()
    assert dataclasses.replace(cfg.curve, eval_batch_size=ConnectSpec().eval_batch_size) == CurveConfig()
    assert ProbeSettings.from_object(cfg.probe) == ProbeSettings()


def test_a_field_added_to_a_spec_becomes_a_key_without_touching_the_config() -> None:
    @dataclasses.dataclass(frozen=True)
    class WithWarmup(TrainConfig):
        warmup_epochs: int = 3

    keys = section_keys(WithWarmup)
    assert keys["warmup_epochs"].default == 3 and keys["warmup_epochs"].hint is int
    assert set(section_keys(TrainConfig)) < set(keys)


def test_curve_keys_set_the_fit_spec_and_a_shared_seed_sets_both() -> None:
    cfg = load_config("quick-tiny", ["curve.lr=0.02", "curve.nesterov=true", "curve.betas=[0.8, 0.9]", "curve.seed=5"])
    assert isinstance(cfg.curve, ConnectSpec) and isinstance(cfg.curve.fit, CurveFitSpec)
    assert cfg.curve.fit.lr == 0.02 and cfg.curve.fit.nesterov and cfg.curve.fit.betas == (0.8, 0.9)
    assert cfg.curve.seed == 5 and cfg.curve.fit.seed == 5
    assert cfg.curve.eval_batch_size == cfg.data.eval_batch_size
    assert cfg.to_dict()["curve"]["lr"] == 0.02 and "fit" not in cfg.to_dict()["curve"]
    assert config_from_dict(cfg.to_dict()) == cfg


def test_spec_problems_come_as_field_message_pairs_reported_under_their_keys() -> None:
    with pytest.raises(SpecError) as err:
        TrainSpec(lr=-1.0, epochs=0)
    assert [(p.field, p.message) for p in err.value.problems] == [
        ("lr", "expected a finite number > 0, got -1.0"),
        ("epochs", "expected an integer > 0, got 0"),
    ]
    assert isinstance(err.value.problems[0], Problem) and str(err.value).startswith("invalid TrainSpec: lr: expected")
    with pytest.raises(ConfigError) as cfg_err:
        load_config(
            "quick-tiny",
            [
                "train.betas=[0.9, 1.5]",
                "curve.t_per_batch=0",
                "curve.seed=-1",
                "probe.samples=0",
                "train.seeds=[]",
                "train.seed=3",
                "curve.eval_batch_size=8",
            ],
        )
    problems = cfg_err.value.problems
    assert "train.betas: expected two numbers in [0, 1), got (0.9, 1.5)" in problems
    assert "curve.t_per_batch: expected an integer > 0, got 0" in problems
    assert problems.count("curve.seed: expected an integer >= 0, got -1") == 1  # one key, two specs, one report
    assert "probe.samples: expected an integer >= 1, got 0" in problems
    assert "train.seeds: expected at least one seed, got []" in problems
    assert any(p.startswith("train.seed: expected a key of train") and "train.seeds" in p for p in problems)
    assert any(
        p.startswith("curve.eval_batch_size: expected a key of curve") and "data.eval_batch_size" in p for p in problems
    )
    assert len(problems) == 7, problems


def test_a_dotted_key_sets_its_place_in_the_nested_settings() -> None:
    data: dict = {"train": {"lr": 0.1}}
    problems: list[str] = []
    set_dotted(data, "train.epochs", 3, problems)
    set_dotted(data, "name", "x", problems)
    set_dotted(data, "study.matrix.train.lr", [0.1, 0.2], problems)
    assert data == {"train": {"lr": 0.1, "epochs": 3}, "name": "x", "study": {"matrix": {"train.lr": [0.1, 0.2]}}}
    assert problems == []
    set_dotted(data, "train.fit.lr", 1, problems)
    set_dotted(data, "name.x", 1, problems)
    assert problems == [
        "override 'train.fit.lr': expected 'section.key' or a top-level key",
        "override 'name.x': name is not a section",
    ]


def test_study_cell_figures_defaults_on_is_a_bool_and_stays_out_of_the_config_hash() -> None:
    assert load_config("quick-tiny", []).study.cell_figures is True
    deferred = load_config("quick-tiny", ["study.cell_figures=false"])
    assert deferred.study.cell_figures is False
    cells = {c.name: c.config for c in expand_matrix(deferred)}
    drawn = {c.name: c.config for c in expand_matrix(load_config("quick-tiny", []))}
    for name, cfg in cells.items():
        assert cfg.study.cell_figures is False  # each trial sees the setting
        assert config_from_dict(cfg.to_dict()).study.cell_figures is False  # and so does a Ray worker
        assert config_hash(cfg) == config_hash(drawn[name])  # figures never change results
    with pytest.raises(ConfigError, match="study.cell_figures: expected true or false, got 'maybe'"):
        load_config("quick-tiny", ["study.cell_figures=maybe"])
