"""Live logging (:mod:`tracking.live`): epoch events as contract series, buffered sends into a RUNNING run
of a real embedded store, each ``(metric, step)`` once.
"""

from __future__ import annotations

import math
import time
from typing import Any

from lgeom import names
from lgeom.progress import ProgressEvent
from lgeom.table import Table
from tracking.live import LiveLogger, progress_metrics
from tracking.runs import tracked_run


def test_epoch_events_of_scoped_loops_become_contract_series() -> None:
    event = ProgressEvent("train", "epoch", 10, 50, 1, {"train_loss": 0.5, "test_acc": math.nan}, scope="a")
    assert progress_metrics(event) == ({names.history_metric("a", "train_loss"): 0.5}, 2)
    fit = ProgressEvent("fit_curve", "epoch", 3, 9, 0, {"loss": 1.0}, scope="bezier")
    assert progress_metrics(fit) == ({names.fit_history_metric("bezier", "loss"): 1.0}, 1)
    assert progress_metrics(ProgressEvent("train", "epoch", 1, 5, 0, {"train_loss": 1.0})) is None  # no scope
    assert progress_metrics(ProgressEvent("train", "step", 1, 5, 0, {"loss": 1.0}, scope="a")) is None
    assert progress_metrics(ProgressEvent("lanczos", "epoch", 1, 5, 0, {"x": 1.0}, scope="a")) is None


def test_live_series_reach_the_running_run_once(embedded_store: Any, unique_study: str) -> None:
    with tracked_run(embedded_store, experiment=unique_study) as run:
        with LiveLogger(run, interval_s=0.05) as live:
            live.progress_callback(ProgressEvent("train", "epoch", 5, 10, 0, {"train_loss": 0.9}, scope="a"))
            live.set_tag(names.TAG_CURRENT_STAGE, "train")
            history = Table({"epoch": [1, 2], "train_loss": [0.9, 0.4], "lr": [0.1, 0.1]})
            live.log_history("a", history)  # epoch 1's loss is logged already: not again
        client = embedded_store.client()
        loss = client.get_metric_history(run.run_id, names.history_metric("a", "train_loss"))
        assert sorted((m.step, m.value) for m in loss) == [(1, 0.9), (2, 0.4)]
        assert [m.step for m in client.get_metric_history(run.run_id, "train/a/lr")] == [1, 2]
        assert client.get_run(run.run_id).data.tags[names.TAG_CURRENT_STAGE] == "train"
        assert live.batches >= 1


def test_long_loops_set_the_progress_tag_without_flooding_the_store(embedded_store: Any, unique_study: str) -> None:
    with tracked_run(embedded_store, experiment=unique_study) as run:
        client = embedded_store.client()
        with LiveLogger(run, interval_s=600) as live:  # no periodic flush while the test runs
            live.progress_callback(ProgressEvent("plane", "start", 0, 441, scope="bezier"))
            for step in range(1, 442):
                live.progress_callback(ProgressEvent("plane", "step", step, 441, scope="bezier"))
            live.progress_callback(ProgressEvent("train", "step", 3, 10, scope="a"))  # not a long loop
            # Progress tags wait for the periodic flush: 442 events sent nothing yet.
            assert live.batches == 0 and names.TAG_PROGRESS not in client.get_run(run.run_id).data.tags
            live.progress_callback(ProgressEvent("plane", "end", 441, 441, scope="bezier"))
            live.progress_callback(ProgressEvent("path", "start", 0, 61, scope="polychain"))
            live.progress_callback(ProgressEvent("path", "step", 20, 61, scope="polychain"))
            live.set_tag(names.TAG_CURRENT_STAGE, "connect")  # a stage change is sent at once, with the progress
            deadline = time.monotonic() + 30
            while live.batches == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            tags = client.get_run(run.run_id).data.tags
            assert tags[names.TAG_PROGRESS] == "path polychain 32%" and tags[names.TAG_CURRENT_STAGE] == "connect"
            live.progress_callback(ProgressEvent("path", "end", 61, 61, scope="polychain"))
        assert live.batches == 2  # one flush at the stage change, one at close
        assert client.get_run(run.run_id).data.tags[names.TAG_PROGRESS] == "path polychain 100%"
