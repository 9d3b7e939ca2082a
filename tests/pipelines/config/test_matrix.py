"""The matrix: cells named by model label, dataset, optimizer and the other axes; axis values that would not
make a plain cell folder are refused.
"""

from __future__ import annotations

import json

import pytest

from pipelines.config import ConfigError, config_hash, expand_matrix, load_config


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


def test_matrix_axes_can_be_overridden() -> None:
    cfg = load_config("quick", ["study.matrix.model.activation=[relu, tanh]"])
    cells = expand_matrix(cfg)
    assert len(cells) == 8
    assert "mlp2x16/moons/sgd/act=tanh" in [c.name for c in cells]


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


def test_plugin_cells_are_named_by_their_callables_and_told_apart_by_module(plugins: tuple[str, str]) -> None:
    mod, other = plugins
    base = ["study.matrix={}", f"data.name={mod}:blobs", "data.noise=null"]
    (cell,) = expand_matrix(load_config("quick-tiny", [*base, f"model={{arch: '{mod}:build_tanh', width: 4}}"]))
    assert cell.name == "build_tanhx4/blobs/sgd"
    axis = [{"arch": "mlp"}, {"arch": f"{mod}:build_att"}, {"arch": f"{other}:build_att"}]
    mixed = f"study.matrix={json.dumps({'model': axis})}"
    unset = ["model.depth=null", "model.width=null", "model.activation=null"]  # the base's mlp options
    cells = expand_matrix(load_config("quick-tiny", [*base, *unset, mixed]))
    # Two plug-ins' callables share a name: both carry their module's last name; the built-in keeps its label.
    assert [c.name for c in cells] == [
        "mlp2x64/blobs/sgd",
        f"{mod}.build_attx8/blobs/sgd",
        f"{other}.build_attx4/blobs/sgd",
    ]
    assert [c.config.model.arch for c in cells] == ["mlp", f"{mod}:build_att", f"{other}:build_att"]
    # The plug-in's identity is part of the hash: the same options under another module hash differently.
    assert len({config_hash(c.config) for c in cells}) == 3


def test_a_plugin_label_that_equals_a_registered_name_is_qualified(plugins: tuple[str, str], tmp_path) -> None:
    mod, _ = plugins
    (tmp_path / f"{mod}_moons.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def moons(split, *, root, seed):\n"
        "    ds = TensorDataset(torch.randn(8, 2), torch.arange(8) % 2)\n"
        "    ds.num_classes, ds.in_shape = 2, (2,)\n    return ds\n"
    )
    (cell,) = expand_matrix(
        load_config("quick-tiny", ["study.matrix={}", f"data={{name: '{mod}_moons:moons'}}", "model.width=4"])
    )
    assert cell.name == f"mlp2x4/{mod}_moons.moons/sgd"
