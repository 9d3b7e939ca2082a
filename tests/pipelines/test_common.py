"""What every step shares: the configured splits and model, the cell folder, and an endpoint trained
with its checkpoints under the endpoint key (reloaded, not retrained, on a second call). How the endpoint
key follows the settings is tested with the config, in ``test_config.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lgeom.data import Splits
from lgeom.params import count_params
from lgeom.plugins import plugin_digest
from pipelines.common import (
    build_cell_model,
    cell_dir,
    endpoint_key,
    load_splits,
    plugin_modules,
    plugin_tags,
    train_endpoint,
    trial_settings,
)
from pipelines.common import (
    plugins as config_plugins,
)
from pipelines.config import Config, config_from_dict, expand_matrix, load_config

CELL = "mlp2x16/moons/sgd"


def _cfg(*overrides: str) -> Config:
    cfg = load_config("quick-tiny", ["train.epochs=1", *overrides])
    return next(c.config for c in expand_matrix(cfg) if c.name == CELL)


def test_splits_and_model_follow_the_config() -> None:
    cfg = _cfg()
    splits = load_splits(cfg)
    assert isinstance(splits, Splits) and splits.test.in_shape == (2,) and splits.test.num_classes == 2
    assert len(splits.train) == len(splits.train_eval)
    again = load_splits(cfg)
    assert torch.equal(again.train.inputs, splits.train.inputs), "the data is seeded by the config"
    model = build_cell_model(cfg, splits)
    assert count_params(model) == (2 * 16 + 16) + (16 * 16 + 16) + (16 * 2 + 2)  # depth 2, width 16


def test_cell_dir(tmp_path: Path) -> None:
    cfg = _cfg(f"output_dir={tmp_path}")
    assert cell_dir(cfg, CELL) == tmp_path / "quick-tiny" / "mlp2x16" / "moons" / "sgd"


def test_an_endpoint_is_trained_with_checkpoints_and_reloaded(tmp_path: Path) -> None:
    cfg = _cfg()
    splits = load_splits(cfg)
    model, result, ckpt = train_endpoint(cfg, 3, splits, tmp_path, progress=False)
    assert ckpt == tmp_path / "endpoints" / endpoint_key(cfg) / "seed3"
    assert {"init.pt", "final.pt"} <= {p.name for p in ckpt.iterdir()}
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    model2, result2, ckpt2 = train_endpoint(cfg, 3, splits, tmp_path, progress=False)
    assert ckpt2 == ckpt and result2.final["test"].acc == result.final["test"].acc
    assert all(torch.equal(p, trained[n]) for n, p in model2.named_parameters())


def test_without_a_folder_training_stays_in_memory() -> None:
    cfg = _cfg()
    model, result, ckpt = train_endpoint(cfg, 0, load_splits(cfg), None, progress=False)
    assert ckpt is None and result.final["test"].acc >= 0
    other, _, _ = train_endpoint(cfg, 1, load_splits(cfg), None, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters(), strict=True)), (
        "the seed matters"
    )


def test_plugin_tags_and_shipped_modules(plugins: tuple[str, str], tmp_path: Path) -> None:
    mod, _ = plugins
    cfg = load_config(
        "quick-tiny",
        ["study.matrix={}", f"model={{arch: '{mod}:build_tanh'}}", f"data.name={mod}:blobs", "data.noise=null"],
    )
    assert config_plugins(cfg) == {"model": f"{mod}:build_tanh", "data": f"{mod}:blobs"}
    digest = plugin_digest(f"{mod}:blobs")
    assert plugin_tags(cfg) == {
        "lgeom.plugin.model": f"{mod}:build_tanh@{digest}",
        "lgeom.plugin.data": f"{mod}:blobs@{digest}",
    }
    assert plugin_modules([cfg, cfg]) == [(tmp_path / f"{mod}.py").resolve()]
    assert plugin_tags(load_config("quick-tiny")) == {} and plugin_modules([load_config("quick-tiny")]) == []


def test_trial_settings_rebuild_a_cell_of_a_mixed_architecture_matrix(plugins: tuple[str, str]) -> None:
    mod, _ = plugins
    axis = f'study.matrix={{model: [{{arch: mlp}}, {{arch: "{mod}:build_att", heads: 4}}]}}'
    unset = ["model.depth=null", "model.width=null", "model.activation=null"]
    cfg = load_config("quick-tiny", [f"data.name={mod}:blobs", "data.noise=null", *unset, axis])
    for cell in expand_matrix(cfg):
        rebuilt = config_from_dict(trial_settings(cell.config))
        assert rebuilt.model == cell.config.model and rebuilt.study.matrix == {}
