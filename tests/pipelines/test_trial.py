"""One trial's bookkeeping: the stages already done survive a restart (``stages.json``), the work folder
is keyed by the config hash, and only the headline metrics go to Ray Tune's table. (A whole trial, with
resume after a failure, runs in ``tests/scenarios/test_trial_resume.py``.)
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

from lgeom import names
from pipelines.common import load_splits
from pipelines.config import expand_matrix, load_config
from pipelines.trial import (
    HEADLINE,
    STAGES,
    StageLog,
    TrialContext,
    dataset_input,
    describe_cell,
    headline_metrics,
    input_example,
    work_dir,
)


def test_stage_log_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "cell" / "stages.json"
    path.parent.mkdir()
    log = StageLog(path)
    assert not any(log.is_done(s) for s in STAGES) and not path.exists()
    log.mark("train")
    log.mark("connect")
    again = StageLog(path)
    assert again.is_done("train") and again.is_done("connect") and not again.is_done("probe")
    assert list(json.loads(path.read_text())) == ["train", "connect"]
    assert [p.name for p in path.parent.iterdir()] == ["stages.json"], "written atomically, no temporary file left"


def test_work_dir_is_absolute_and_keyed_by_the_config() -> None:
    cells = {c.name: c.config for c in expand_matrix(load_config("quick-tiny", []))}
    sgd, adam = cells["mlp2x16/moons/sgd"], cells["mlp2x16/moons/adam"]
    a = work_dir("out", "quick-tiny", "mlp2x16/moons/sgd", sgd)
    assert a.is_absolute() and a.parent == (Path("out") / "quick-tiny" / "mlp2x16/moons/sgd").resolve()
    assert work_dir("out", "quick-tiny", "mlp2x16/moons/sgd", sgd) == a
    assert work_dir("out", "quick-tiny", "mlp2x16/moons/sgd", adam).name != a.name


def test_headline_metrics_are_the_few_shown_and_known() -> None:
    metrics = {HEADLINE[0]: 0.25, HEADLINE[1]: None, names.endpoint_metric("a", "test", "acc"): 91.0, HEADLINE[3]: 3}
    shown = headline_metrics(metrics)
    assert shown == {HEADLINE[0]: 0.25, HEADLINE[3]: 3.0} and all(type(v) is float for v in shown.values())
    assert headline_metrics({}) == {} and len(HEADLINE) == 5 and not any(math.isnan(v) for v in shown.values())


def test_a_trial_context_is_plain_picklable_values() -> None:
    ctx = TrialContext(
        study="s", cell="c", config={"name": "s"}, experiment_id="1", parent_run_id="p", store=None, work_dir="/w"
    )
    assert pickle.loads(pickle.dumps(ctx)) == ctx and ctx.bars is False


def test_cell_description_dataset_input_and_input_example() -> None:
    cell = expand_matrix(load_config("quick-tiny", []))[0]
    cfg = cell.config
    text = describe_cell(cfg, cell.name, "quick-tiny")
    assert text.startswith(f"Cell `{cell.name}` of study `quick-tiny`: a {cfg.model.arch} on {cfg.data.name}")
    assert f"trained {cfg.train.epochs} epochs" in text and f"({cfg.curve.fit.epochs} fit epochs" in text
    splits = load_splits(cfg)
    ds = dataset_input(cfg, splits)
    assert ds["name"] == cfg.data.name and len(ds["digest"]) == 16 and ds == dataset_input(cfg, splits)
    assert ds["profile"]["train"] == len(splits.train) and ds["profile"]["test"] == len(splits.test)
    x = input_example(splits)
    assert x.shape[0] == 4 and x.dtype.name == "float32"
