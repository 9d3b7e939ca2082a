"""Config: presets, overrides, every error reported at once, the matrix, the config hash; sections that are the
lgeom specs they configure; model and data options checked against their builders; overrides that a matrix
axis would shadow; unreadable presets and malformed overrides; names that must stay inside output_dir.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from lgeom.connect import ConnectSpec
from lgeom.curves import CurveFitSpec
from lgeom.probes import ProbeSettings
from lgeom.specs import RESULT_NEUTRAL, Problem, SpecError
from lgeom.train import TrainSpec
from pipelines.cli import main as cli_main
from pipelines.common import endpoint_key
from pipelines.config import (
    Config,
    ConfigError,
    CurveConfig,
    ProbeConfig,
    TrainConfig,
    available_presets,
    config_from_dict,
    config_hash,
    expand_matrix,
    load_config,
    result_settings,
    section_keys,
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
    assert [c.name for c in cells] == [
        "mlp2x16/moons/sgd",
        "mlp2x16/moons/adam",
        "mlp2x64/moons/sgd",
        "mlp2x64/moons/adam",
    ]
    adam = cells[1].config
    assert adam.train.optimizer == "adam" and adam.train.lr == 0.005 and adam.model.options["width"] == 16
    assert cells[0].config.study == cfg.study
    assert len({config_hash(c.config) for c in cells}) == 4


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
    assert "7 problem(s)" in text
    # quick's matrix axis 'train' sets train.lr: the override is refused, and its value still checked
    assert any(p.startswith("override train.lr=-1: expected a key that no study.matrix axis sets") for p in problems)
    assert any("train.lrr: unknown key" in p and "did you mean 'train.lr'" in p for p in problems)
    assert "train.lr: expected a finite number > 0, got -1.0" in problems
    assert "model.activation: activation: expected one of 'gelu', 'relu', 'tanh', got 'swish'" in problems
    assert "train.epochs: expected an integer > 0, got 0" in problems
    assert "curve.points: expected an integer, got 'abc'" in problems
    assert "override 'bogus': expected dotted.key=value" in problems


def test_every_bad_model_option_is_reported() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("quick", ["study.matrix={}", "model.activation=swish", "model.width=0", "model.depth=-1"])
    problems = err.value.problems
    assert len(problems) == 3, problems
    assert any(p.startswith("model.activation:") and "'swish'" in p for p in problems)
    assert any(p.startswith("model.width:") and "got 0" in p for p in problems)
    assert any(p.startswith("model.depth:") and "got -1" in p for p in problems)
    # an unknown option does not hide a bad value of a known one
    with pytest.raises(ConfigError) as err:
        load_config(
            "quick",
            ["study.matrix={}", "model.arch=preresnet", "model.depth=9", "model.width=null", "model.channels=4"],
        )
    problems = err.value.problems
    assert any(p.startswith("model.channels: not an option of preresnet") for p in problems)
    assert any(p.startswith("model.depth: preresnet depth") and "got 9" in p for p in problems)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            [
                "model.arch=preresnet",
                "model.depth=10",
                "model.width=null",
                "model.activation=null",
                "data.name=cifar10",
                "data.noise=null",
            ],
            "preresnet depth: expected 6n+2 below 44 or 9n+2 from 44 up",
        ),
        (
            ["model.arch=vit"],
            "model.arch: expected one of cnn, mlp, preresnet, rescnn, resmlp, vgg16, wideresnet, got 'vit'",
        ),
        (["data.name=imagenet"], "data.name: expected one of"),
        (["data.centers=3"], "data.centers: not an option of moons"),
        (["train.optimizer=rmsprop"], "train.optimizer: expected one of sgd, adam, adamw, got 'rmsprop'"),
        (["train.momentum=1.5"], "train.momentum: expected a number in [0, 1), got 1.5"),
        (["train.seeds=[1, 1]"], "train.seeds: expected distinct seeds, got [1, 1]"),
        (["train.batch_size=2.5"], "train.batch_size: expected an integer, got 2.5"),
        (["train.amp=yes please"], "train.amp: expected true or false, got 'yes please'"),
        (["curve.kinds=[spline]"], "curve.kinds: expected distinct names among bezier, polychain, got ['spline']"),
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


# --- one source of truth: the sections are the specs ---------------------------------------------------


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


# --- model and data options: open, checked against the builders -------------------------------------------


def test_model_option_the_builder_lacks_is_reported_with_the_arch_options() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("quick", ["study.matrix={}", "model.depht=3", "model.width=2.5", "model.activation=3"])
    problems = err.value.problems
    assert (
        "model.depht: not an option of mlp (its options: depth, width, activation; did you mean 'model.depth'?), got 3"
        in problems
    )
    assert "model.width: expected an integer, got 2.5" in problems  # the builder's annotation
    assert "model.activation: expected a string, got 3" in problems
    assert len(problems) == 3, problems


def test_model_options_are_whatever_the_builder_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from lgeom.models import registry

    def build_toy(
        *, num_classes: int, in_shape: typing.Sequence[int], hidden: int = 4, scale: float = 1.0
    ) -> torch.nn.Module:
        if hidden > 100:
            raise ValueError(f"toy hidden: expected at most 100 units, got {hidden}")
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(in_shape[0], hidden), torch.nn.Linear(hidden, num_classes)
        )

    monkeypatch.setitem(registry._REGISTRY, "toy", build_toy)
    cfg = load_config("quick", ["study.matrix={}", "model={arch: toy, hidden: 8, scale: 2}"])
    assert cfg.model.arch == "toy" and cfg.model.options == {"hidden": 8, "scale": 2.0}
    assert cfg.flat()["model.hidden"] == 8 and cfg.to_dict()["model"] == {"arch": "toy", "hidden": 8, "scale": 2.0}
    with pytest.raises(ConfigError) as err:
        load_config(
            "quick",
            ["study.matrix={}", "model={arch: toy, hiden: 8, scale: big}", "study.matrix.model.hidden=[8, 500]"],
        )
    problems = err.value.problems
    assert any(p.startswith("model.hiden: not an option of toy (its options: hidden, scale") for p in problems)
    assert "model.scale: expected a number, got 'big'" in problems
    with pytest.raises(ConfigError, match=r"model.hidden: toy hidden: expected at most 100 units, got 500"):
        load_config("quick", ["study.matrix={}", "model={arch: toy}", "study.matrix.model.hidden=[8, 500]"])


def test_data_options_are_checked_against_the_dataset_each_on_its_own() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("quick", ["data.noise=-1", "data.centers=3", "data.n_train=0", "data.seed=-2"])
    problems = err.value.problems
    assert "data.noise: noise: expected a finite number >= 0, got -1.0" in problems
    assert any(
        p.startswith("data.centers: not an option of moons (its options: n_train, n_test, noise)") for p in problems
    )
    assert "data.n_train: expected an integer > 0, got 0" in problems
    assert "data.seed: expected an integer >= 0, got -2" in problems
    cfg = load_config("quick", ["data.name=circles", "data.factor=0.3", "data.noise=null"])
    assert cfg.data.options == {"n_train": 1000, "n_test": 1000, "factor": 0.3}  # null: the dataset's default


# --- settings that do not change results, and the one hash ------------------------------------------------


def test_neutral_settings_are_marked_once_and_one_hash_keys_cells_and_endpoints() -> None:
    cfg = load_config("quick-tiny", ["study.matrix={}"])
    neutral = {
        "train.device": "cpu",
        "train.num_workers": 2,
        "train.checkpoint_every": 3,
        "data.root": "/elsewhere",
        "data.eval_batch_size": 64,
        "output_dir": "out2",
        "name": "other",
        "description": "x",
        "study.cpu": 2,
    }
    for key, value in neutral.items():
        changed = cfg.replace(**{key: value})
        assert config_hash(changed) == config_hash(cfg), key
        assert endpoint_key(changed) == endpoint_key(cfg), key
        assert key not in result_settings(cfg)
    # the marks live on the spec fields, and the hash reads them from there
    assert RESULT_NEUTRAL in {f.name: f for f in dataclasses.fields(TrainSpec)}["device"].metadata
    for key, value in {"curve.lr": 0.02, "curve.points": 5, "probe.hessian_k": 2}.items():
        changed = cfg.replace(**{key: value})
        assert config_hash(changed) != config_hash(cfg), key
        assert endpoint_key(changed) == endpoint_key(cfg), key  # endpoints are shared across curve/probe settings
    for key, value in {
        "train.lr": 0.02,
        "model.width": 8,
        "data.noise": 0.3,
        "data.seed": 1,
        "train.amp": True,
    }.items():
        changed = cfg.replace(**{key: value})
        assert config_hash(changed) != config_hash(cfg) and endpoint_key(changed) != endpoint_key(cfg), key
    # each endpoint's seed names its folder below the key
    assert endpoint_key(cfg.replace(**{"train.seeds": [0, 7]})) == endpoint_key(cfg)
    assert config_hash(cfg.replace(**{"train.seeds": [0, 7]})) != config_hash(cfg)
    assert len(config_hash(cfg)) == len(endpoint_key(cfg)) == 16


# --- every override applies or is refused ------------------------------------------------------------------


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


# --- unreadable presets and malformed overrides ------------------------------------------------------------


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


# --- names stay plain folder names inside output_dir ----------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "..", "a\\b", "", "x y"])
def test_name_must_be_a_plain_name(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("quick", {"name": name})
    assert any(p.startswith("name: expected a plain name") and repr(name) in p for p in err.value.problems)
    assert load_config("quick", ["name=my-study_2.v1"]).name == "my-study_2.v1"


def test_matrix_values_that_would_not_make_a_plain_cell_folder_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("quick", ["study.matrix.data.root=[a/b, c]"])
    assert err.value.problems == [
        (
            "study.matrix.data.root: expected a value that makes a plain folder name of the cell "
            "(no '/', '\\', '..'), got 'root=a/b'"
        )
    ]


def test_cell_names_label_any_architecture_by_its_size_and_width() -> None:
    def name(*model: str) -> str:
        (cell,) = expand_matrix(
            load_config("quick", ["study.matrix={}", "data.name=gaussmix256", "data.noise=null", *model])
        )
        return cell.name

    assert name("model.width=8") == "mlp2x8/gaussmix256/sgd"
    assert name("model={arch: wideresnet, depth: 10, widen_factor: 2}") == "wideresnet10x2/gaussmix256/sgd"
    assert name("model={arch: 'torchvision:resnet18'}") == "torchvision:resnet18/gaussmix256/sgd"


def test_a_model_that_fails_with_its_defaults_is_not_blamed_on_an_option() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(
            "quick",
            ["study.matrix={}", "data.name=gaussmix256", "data.noise=null", "model={arch: vgg16, dropout: 0.1}"],
        )
    assert err.value.problems == [
        "model: vgg16 in_shape: expected (channels, height, width) with height, width >= 32, got (1, 16, 16)"
    ]
