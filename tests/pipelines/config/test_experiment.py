"""The whole config: every bad value of any section reported by key, and a config that round-trips through its
dict with the same hash.
"""

from __future__ import annotations

import pytest

from pipelines.config import ConfigError, config_from_dict, config_hash, load_config


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
            "model.arch: expected one of cnn, mlp, preresnet, rescnn, resmlp, vgg16, wideresnet or a plug-in "
            "'module:callable', got 'vit'",
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
