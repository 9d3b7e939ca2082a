"""The matrix: cells named by model label, dataset, optimizer and the other axes; axis values that would not
make a plain cell folder are refused.
"""

from __future__ import annotations

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
