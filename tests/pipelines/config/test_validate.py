"""Model and data options are open, checked against their builders (each bad option reported on its own, an
option the builder lacks named with the builder's options); the name stays a plain folder name.
"""

from __future__ import annotations

import typing

import pytest

from lgeom.models import registry as model_registry
from pipelines.config import ConfigError, load_config


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

    def build_toy(
        *, num_classes: int, in_shape: typing.Sequence[int], hidden: int = 4, scale: float = 1.0
    ) -> torch.nn.Module:
        if hidden > 100:
            raise ValueError(f"toy hidden: expected at most 100 units, got {hidden}")
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(in_shape[0], hidden), torch.nn.Linear(hidden, num_classes)
        )

    monkeypatch.setitem(model_registry._REGISTRY, "toy", build_toy)
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


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "..", "a\\b", "", "x y"])
def test_name_must_be_a_plain_name(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("quick", {"name": name})
    assert any(p.startswith("name: expected a plain name") and repr(name) in p for p in err.value.problems)
    assert load_config("quick", ["name=my-study_2.v1"]).name == "my-study_2.v1"


def test_a_model_that_fails_with_its_defaults_is_not_blamed_on_an_option() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(
            "quick",
            ["study.matrix={}", "data.name=gaussmix256", "data.noise=null", "model={arch: vgg16, dropout: 0.1}"],
        )
    assert err.value.problems == [
        "model: vgg16 in_shape: expected (channels, height, width) with height, width >= 32, got (1, 16, 16)"
    ]


def _plugin_config(mod: str, *overrides: str) -> list[str]:
    model = next((o for o in overrides if o.startswith("model.arch=")), f"model.arch={mod}:build_att")
    rest = [o for o in overrides if o != model]
    return ["study.matrix={}", f"data.name={mod}:blobs", "data.noise=null", f"model={{arch: '{model[11:]}'}}", *rest]


def test_plugin_options_are_checked_against_the_builder_signature_all_at_once(plugins: tuple[str, str]) -> None:
    mod, _ = plugins
    with pytest.raises(ConfigError) as err:
        load_config(
            "quick-tiny",
            _plugin_config(mod, "model.width=wide", "model.depth=3", "model.heads=3", "data.spread=[1]", "data.n=5"),
        )
    problems = err.value.problems
    assert "model.width: expected an integer, got 'wide'" in problems
    assert f"model.depth: not an option of {mod}:build_att (its options: width, heads), got 3" in problems
    assert "data.spread: expected a number, got [1]" in problems
    assert f"data.n: not an option of {mod}:blobs (its options: n_train, n_test, spread), got 5" in problems
    # width=8 (the default) is not a multiple of heads=3: the builder's own message, blamed on heads.
    assert "model.heads: build_att width: expected a multiple of heads=3, got 8" in problems
    assert len(problems) == 5, problems


def test_plugin_import_failures_are_config_errors_naming_module_and_search_path(plugins: tuple[str, str]) -> None:
    mod, _ = plugins
    with pytest.raises(ConfigError) as err:
        load_config("quick-tiny", _plugin_config(mod, f"model.arch={mod}:build_vit", "data.name=nosuchmod_q:blobs"))
    problems = err.value.problems
    assert len(problems) == 2, problems
    assert problems[0].startswith(
        "data.name: data.name plug-in 'nosuchmod_q:blobs': cannot import module 'nosuchmod_q' to take 'blobs' from "
        "it: no module named 'nosuchmod_q' on the search path (sys.path, working directory first): "
    )
    assert problems[1].startswith(f"model.arch: model.arch plug-in '{mod}:build_vit': module '{mod}' (")
    assert "has no attribute 'build_vit'" in problems[1] and "search path" in problems[1]


def test_plugin_options_are_matrix_axes_and_overrides(plugins: tuple[str, str]) -> None:
    mod, _ = plugins
    cfg = load_config("quick-tiny", _plugin_config(mod, "model.width=6", "study.matrix.model.heads=[1, 2]"))
    assert cfg.model.options == {"width": 6} and cfg.data.options["n_train"] == 200
    assert cfg.study.matrix == {"model.heads": [1, 2]}
    with pytest.raises(ConfigError) as err:
        load_config("quick-tiny", _plugin_config(mod, "study.matrix.model.heds=[1, 2]"))
    assert err.value.problems == [
        "study.matrix.model.heds: unknown axis, expected a dotted config key like 'train.lr' (did you mean "
        "'model.heads'?)"
    ]


def test_the_rop_engine_is_refused_for_a_model_it_is_not_written_out_for() -> None:
    assert load_config("quick", ["probe.hessian_engine=rop"]).probe.hessian_engine == "rop"  # its MLP cells
    with pytest.raises(ConfigError) as err:
        load_config(
            "quick", ["study.matrix={}", "model={arch: resmlp, blocks: 1, width: 8}", "probe.hessian_engine=rop"]
        )
    assert err.value.problems == [
        "probe.hessian_engine: expected 'auto' or a graph engine for model.arch 'resmlp' ('rop' is written out for "
        "lgeom's mlp only; 'auto' takes it wherever it applies), got 'rop'"
    ]
    # a matrix cell with another model is named
    with pytest.raises(ConfigError) as err:
        load_config("quick", ["study.matrix={model.arch: [mlp, resmlp]}", "probe.hessian_engine=rop"])
    assert any("cell" in p and "model.arch 'resmlp'" in p for p in err.value.problems), err.value.problems
