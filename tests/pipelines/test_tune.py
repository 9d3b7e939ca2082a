"""The tune step without starting Ray: the search space's bounds, bad options exiting 2 before anything
starts, and the tuned preset narrowing the matrix to the tuned cell's setting (and loading back).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.cli import main as cli_main
from pipelines.config import expand_matrix, load_config
from pipelines.tune import SearchSpace, tuned_preset

BEST = {"lr": 0.02, "weight_decay": 1e-4, "batch_size": 64}


def test_default_search_space_is_valid_and_bad_bounds_are_all_reported() -> None:
    assert SearchSpace().problems() == []
    problems = SearchSpace(lr_min=0.3, lr_max=0.1, wd_min=0.0, wd_max=1e-2, batch_sizes=(32, 0)).problems()
    assert problems == [
        "lr range: expected 0 < lr_min < lr_max, got lr_min=0.3, lr_max=0.1",
        "weight-decay range: expected 0 < wd_min <= wd_max, got wd_min=0.0, wd_max=0.01",
        "batch sizes: expected positive integers, got [32, 0]",
    ]
    assert SearchSpace(lr_max=float("inf")).problems()[0].startswith("lr range")
    assert SearchSpace(batch_sizes=()).problems() == ["batch sizes: expected positive integers, got []"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-sizes", "32,x"], "--batch-sizes: expected comma-separated integers, got '32,x'"),
        (
            ["--lr-min", "1", "--lr-max", "0.5", "--num-samples", "0"],
            "lr range: expected 0 < lr_min < lr_max, got lr_min=1.0, lr_max=0.5; "
            "--num-samples: expected an integer >= 1, got 0",
        ),
        (
            [],
            "--cell: expected one of mlp2x16/moons/sgd, mlp2x16/moons/adam, mlp2x64/moons/sgd, mlp2x64/moons/adam "
            "(tune works on one cell), got none",
        ),
        (["--cell", "mlp2x16/moons/rmsprop"], "--cell: expected one of mlp2x16/moons/sgd, "),
    ],
)
def test_bad_options_exit_2_before_ray_starts(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["tune", "--preset", "quick-tiny", "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lgeom tune: error: ") and message in err, err


def test_tuned_preset_narrows_the_train_axis_to_the_tuned_cell(tmp_path: Path) -> None:
    cfg = load_config("quick-tiny", [])
    cell = next(c for c in expand_matrix(cfg) if c.name == "mlp2x16/moons/adam")
    doc = tuned_preset(cfg, "quick-tiny", cell, {**BEST, "ignored": 1})
    assert doc == {
        "base": "quick-tiny",
        "name": "quick-tiny-tuned",
        "description": "quick-tiny with lr, weight decay and batch size tuned on mlp2x16/moons/adam",
        "train": BEST,
        "study": {"matrix": {"model.width": [16, 64], "train": [{"optimizer": "adam", **BEST}]}},
    }
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(doc))
    tuned = load_config(str(path), [])
    cells = expand_matrix(tuned)
    assert [c.name for c in cells] == ["mlp2x16/moons/adam", "mlp2x64/moons/adam"]
    assert all(
        (c.config.train.lr, c.config.train.weight_decay, c.config.train.batch_size) == (0.02, 1e-4, 64) for c in cells
    )


def test_a_tuned_key_as_its_own_axis_is_dropped(tmp_path: Path) -> None:
    cfg = load_config("quick-tiny", ["study.matrix={model.width: [16], train.lr: [0.1, 0.01]}"])
    cell = expand_matrix(cfg)[0]
    assert tuned_preset(cfg, "quick-tiny", cell, BEST)["study"] == {"matrix": {"model.width": [16]}}
