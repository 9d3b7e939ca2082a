"""Config: presets, overrides, every error reported at once, the matrix, the config hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import (
    Config,
    ConfigError,
    available_presets,
    config_from_dict,
    config_hash,
    expand_matrix,
    load_config,
)


def test_every_preset_loads_and_has_a_tiny_variant() -> None:
    presets = available_presets()
    assert "quick" in presets and "quick-tiny" in presets
    for name in presets:
        cfg = load_config(name)
        assert isinstance(cfg, Config) and cfg.name == name
        if not name.endswith("-tiny"):
            assert f"{name}-tiny" in presets, f"preset {name} has no tiny variant"


def test_quick_matrix_expands_to_named_cells() -> None:
    cfg = load_config("quick")
    cells = expand_matrix(cfg)
    assert [c.name for c in cells] == ["mlp2x16/moons/sgd", "mlp2x16/moons/adam", "mlp2x64/moons/sgd", "mlp2x64/moons/adam"]
    adam = cells[1].config
    assert adam.train.optimizer == "adam" and adam.train.lr == 0.005 and adam.model.width == 16
    assert cells[0].config.study == cfg.study
    assert len({config_hash(c.config) for c in cells}) == 4


def test_overrides_are_typed_and_yaml_parsed() -> None:
    cfg = load_config("quick", ["train.lr=1e-3", "train.seeds=[3, 4, 5]", "model.width=8", "curve.align=false", "data.root=null"])
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)
    assert cfg.train.seeds == (3, 4, 5)
    assert cfg.model.width == 8 and cfg.curve.align is False
    scalar = load_config("quick", ["train.seeds=9"])
    assert scalar.train.seeds == (9,)


def test_matrix_axes_can_be_overridden() -> None:
    cfg = load_config("quick", ["study.matrix.model.activation=[relu, tanh]"])
    cells = expand_matrix(cfg)
    assert len(cells) == 8
    assert "mlp2x16/moons/sgd/act=tanh" in [c.name for c in cells]


def test_all_errors_are_reported_together() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(
            "quick",
            ["train.lrr=0.1", "train.lr=-1", "model.activation=swish", "train.epochs=0", "curve.points=abc", "bogus"],
        )
    problems = err.value.problems
    text = str(err.value)
    assert "6 problem(s)" in text
    assert any("train.lrr: unknown key" in p and "did you mean 'train.lr'" in p for p in problems)
    assert "train.lr: expected a finite number > 0, got -1.0" in problems
    assert "model.activation: activation: expected one of 'gelu', 'relu', 'tanh', got 'swish'" in problems
    assert "train.epochs: expected an integer > 0, got 0" in problems
    assert "curve.points: expected an integer, got 'abc'" in problems
    assert "override 'bogus': expected dotted.key=value" in problems


def test_every_bad_model_option_is_reported() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("quick", ["model.activation=swish", "model.width=0", "model.depth=-1"])
    problems = err.value.problems
    assert len(problems) == 3, problems
    assert any(p.startswith("model.activation:") and "'swish'" in p for p in problems)
    assert any(p.startswith("model.width:") and "got 0" in p for p in problems)
    assert any(p.startswith("model.depth:") and "got -1" in p for p in problems)
    # an unknown option does not hide a bad value of a known one
    with pytest.raises(ConfigError) as err:
        load_config("quick", ["model.arch=preresnet", "model.depth=9", "model.width=null", "model.channels=4"])
    problems = err.value.problems
    assert any(p.startswith("model.channels: not an option of preresnet") for p in problems)
    assert any(p.startswith("model.depth: preresnet depth") and "got 9" in p for p in problems)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.arch=preresnet", "model.depth=10", "model.width=null", "model.activation=null", "data.name=cifar10", "data.noise=null"],
         "preresnet depth: expected 6n+2 below 44 or 9n+2 from 44 up"),
        (["model.arch=vit"], "model.arch: expected one of cnn, mlp, preresnet, rescnn, resmlp, vgg16, wideresnet, got 'vit'"),
        (["data.name=imagenet"], "data.name: expected one of"),
        (["data.centers=3"], "data.centers: not an option of moons"),
        (["train.optimizer=rmsprop"], "train.optimizer: expected one of sgd, adam, adamw, got 'rmsprop'"),
        (["train.momentum=1.5"], "train.momentum: expected a number in [0, 1), got 1.5"),
        (["train.seeds=[1, 1]"], "train.seeds: expected distinct seeds, got [1, 1]"),
        (["train.batch_size=2.5"], "train.batch_size: expected an integer, got 2.5"),
        (["train.amp=yes please"], "train.amp: expected true or false, got 'yes please'"),
        (["curve.kinds=[spline]"], "curve.kinds: expected a list of 'bezier' and/or 'polychain'"),
        (["probe.hessian_method=arnoldi"], "probe.hessian_method: expected one of 'lanczos', 'power'"),
        (["probe.sharpness_eps=0"], "probe.sharpness_eps: expected a finite number > 0, got 0.0"),
        (["study.gpu=-1"], "study.gpu: expected a number >= 0"),
        (["study.matrix.train.lrr=[0.1]"], "study.matrix.train.lrr: unknown axis"),
        (["study.matrix.train.lr=[0.1, -2]"], "train.lr: expected a finite number > 0, got -2.0"),
        (["nme=x"], "nme: unknown key"),
    ],
)
def test_bad_values(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("quick", overrides)
    assert message in str(err.value)


def test_unknown_preset_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="preset: expected one of .*quick.* or a YAML file, got 'nope'"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(listy)


def test_yaml_file_with_base(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("base: quick\nname: mine\ntrain: {epochs: 3}\n")
    cfg = load_config(f)
    assert cfg.name == "mine" and cfg.train.epochs == 3 and cfg.train.lr == 0.05
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(loop)


def test_config_roundtrip_and_hash() -> None:
    cfg = load_config("quick")
    again = config_from_dict(cfg.to_dict())
    assert again == cfg
    assert config_hash(cfg) == config_hash(again)
    assert config_hash(cfg.replace(**{"train.lr": 0.07})) != config_hash(cfg)
    # where results go and which device computes them do not change the hash
    assert config_hash(cfg.replace(**{"output_dir": "elsewhere", "train.device": "cpu"})) == config_hash(cfg)
    flat = cfg.flat()
    assert flat["train.lr"] == 0.05 and flat["model.arch"] == "mlp" and "study.cpu" not in flat
