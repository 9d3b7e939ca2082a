"""Presets and overrides: every shipped preset loads and has a tiny variant, YAML files with a ``base:`` chain,
typed dotted overrides, every error reported at once, overrides that a matrix axis would shadow refused (by
every step), unreadable presets and malformed overrides.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.cli import main as cli_main
from pipelines.config import (
    Config,
    ConfigError,
    available_presets,
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


def test_overrides_are_typed_and_yaml_parsed() -> None:
    # study.matrix={}: quick's axes set train.lr and model.width (an override of an axis' key is refused)
    cfg = load_config(
        "quick",
        [
            "study.matrix={}",
            "train.lr=1e-3",
            "train.seeds=[3, 4, 5]",
            "model.width=8",
            "curve.align=false",
            "data.root=null",
        ],
    )
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)
    assert cfg.train.seeds == (3, 4, 5)
    assert cfg.model.options["width"] == 8 and cfg.curve.align is False
    scalar = load_config("quick", ["train.seeds=9"])
    assert scalar.train.seeds == (9,)


def test_all_errors_are_reported_together() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(
            "quick",
            ["train.lrr=0.1", "train.lr=-1", "model.activation=swish", "train.epochs=0", "curve.points=abc", "bogus"],
        )
    problems = err.value.problems
    text = str(err.value)
    assert "7 problem(s)" in text
    # quick's matrix axis 'train' sets train.lr: the override is refused, and its value still checked
    assert any(p.startswith("override train.lr=-1: expected a key that no study.matrix axis sets") for p in problems)
    assert any("train.lrr: unknown key" in p and "did you mean 'train.lr'" in p for p in problems)
    assert "train.lr: expected a finite number > 0, got -1.0" in problems
    assert "model.activation: activation: expected one of 'gelu', 'relu', 'tanh', got 'swish'" in problems
    assert "train.epochs: expected an integer > 0, got 0" in problems
    assert "curve.points: expected an integer, got 'abc'" in problems
    assert "override 'bogus': expected dotted.key=value" in problems


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


@pytest.mark.parametrize(
    ("override", "axis", "fix"),
    [
        ("train.lr=0.3", "train", "'study.matrix.train=[{optimizer: sgd, lr: 0.3}, {optimizer: adam, lr: 0.3}]'"),
        ("train.lr=1e12", "train", "'study.matrix.train=[{optimizer: sgd, lr: 1e12}, {optimizer: adam, lr: 1e12}]'"),
        ("model.width=128", "model.width", "'study.matrix.model.width=[128]'"),
        ("train={lr: 0.3, epochs: 2}", "train", "lr: 0.3}"),
    ],
)
def test_an_override_a_matrix_axis_would_shadow_is_refused(override: str, axis: str, fix: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("quick", [override])
    (problem,) = err.value.problems
    assert "expected a key that no study.matrix axis sets" in problem and f"axis '{axis}' sets" in problem
    assert problem.endswith(fix) or fix in problem


def test_a_shadowed_override_is_still_validated_and_the_suggested_fix_works() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("quick", ["train.lr=-1"])
    assert "train.lr: expected a finite number > 0, got -1.0" in err.value.problems and len(err.value.problems) == 2
    cells = expand_matrix(load_config("quick", ["study.matrix.model.width=[128]", "train.epochs=5"]))
    assert {c.config.model.options["width"] for c in cells} == {128} and {c.config.train.epochs for c in cells} == {5}
    cells = expand_matrix(load_config("quick", ["study.matrix.train=[{optimizer: sgd, lr: 0.3}]"]))
    assert {c.config.train.lr for c in cells} == {0.3}


def test_an_override_shadowed_in_some_cells_is_refused_too(tmp_path: Path) -> None:
    f = tmp_path / "partial.yaml"
    f.write_text(
        "base: quick\nname: partial\nstudy: {matrix: {train: [{optimizer: sgd, lr: 0.05}, {optimizer: adam}]}}\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"its value would win in the cells whose axis value sets it.*"
        r"study.matrix.train=\[\{optimizer: sgd, lr: 0.2\}, \{optimizer: adam\}\]",
    ):
        load_config(f, ["train.lr=0.2"])
    assert load_config(f, ["train.momentum=0.5"]).train.momentum == 0.5


def test_every_step_refuses_a_shadowed_override_with_exit_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for step in ("train", "connect", "probe", "study", "tune"):
        assert cli_main([step, "--preset", "quick", f"output_dir={tmp_path}", "train.lr=0.3"]) == 2, step
        assert "axis 'train' sets" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_empty_preset_is_an_error(tmp_path: Path) -> None:
    for text in ("", "# only a comment\n"):
        empty = tmp_path / "empty.yaml"
        empty.write_text(text)
        with pytest.raises(ConfigError, match=rf"preset {empty}: expected a mapping of settings, got an empty file"):
            load_config(empty)
    child = tmp_path / "child.yaml"
    child.write_text("base: empty.yaml\nname: child\n")
    with pytest.raises(ConfigError, match="empty.yaml: expected a mapping of settings, got an empty file"):
        load_config(child)


def test_a_binary_preset_is_an_error_naming_the_file(tmp_path: Path) -> None:
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"name: x\n\xff\xfe\x00\x01garbage")
    with pytest.raises(
        ConfigError, match=rf"preset {binary}: expected a UTF-8 YAML text file, got bytes that are not UTF-8"
    ):
        load_config(binary)


@pytest.mark.parametrize("override", ["train.seeds=[0,1", "model={a", "train.lr=[1, {"])
def test_a_malformed_yaml_override_is_reported_as_such(override: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("quick", ["study.matrix={}", override])
    (problem,) = err.value.problems
    assert problem.startswith(f"override {override!r}: expected a YAML value, got malformed YAML (")
    assert "expected a list" not in problem and "expected a mapping" not in problem
