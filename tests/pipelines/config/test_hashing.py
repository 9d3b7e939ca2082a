"""The one hash: settings that do not change results are marked once and left out; the same hash keys cells
and (for the endpoint sections) endpoints.
"""

from __future__ import annotations

import dataclasses

from lgeom.specs import RESULT_NEUTRAL
from lgeom.train import TrainSpec
from pipelines.common import endpoint_key
from pipelines.config import config_hash, load_config, result_settings


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


def test_the_hash_keys_the_plugin_identity(plugins: tuple[str, str]) -> None:
    mod, other = plugins
    base = ["study.matrix={}", f"data.name={mod}:blobs", "data.noise=null"]
    one = load_config("quick-tiny", [*base, f"model={{arch: '{mod}:build_att', width: 4}}"])
    two = load_config("quick-tiny", [*base, f"model={{arch: '{other}:build_att', width: 4}}"])
    assert one.flat()["model.arch"] == f"{mod}:build_att"
    assert config_hash(one) != config_hash(two)
    assert config_hash(one) == config_hash(
        load_config("quick-tiny", [*base, f"model={{arch: '{mod}:build_att', width: 4}}"])
    )
