"""Study planning without starting Ray: trial resources on a joined or local cluster, the store a cluster
spanning hosts needs, the UI command, the progress lines' delay.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import load_config
from pipelines.study import (
    PROGRESS_AFTER_ENV,
    check_store_for_cluster,
    main,
    progress_after_s,
    trial_resources,
    ui_command,
)
from tracking.store import Store, embedded_store


def test_a_joined_cluster_keeps_requests_its_nodes_cannot_hold_yet() -> None:
    # infra/ray/cluster.yaml: the head has CPU 0 and GPU workers start on demand.
    resources, notice = trial_resources(1.0, 1.0, {"CPU": 0.0, "memory": 1e9}, external=True)
    assert resources == {"cpu": 1.0, "gpu": 1.0}
    assert notice is not None and "1 CPUs (the cluster has 0 now) and 1 GPUs (the cluster has 0 now)" in notice
    assert "wait" in notice and "autoscaler" in notice
    resources, notice = trial_resources(2.0, 0.5, {"CPU": 16.0, "GPU": 2.0}, external=True)
    assert resources == {"cpu": 2.0, "gpu": 0.5} and notice is None


def test_the_local_ray_rejects_or_downgrades_what_it_can_never_hold() -> None:
    with pytest.raises(ValueError, match="study.cpu: expected at most 2 CPUs per trial .* got 4"):
        trial_resources(4.0, 0.0, {"CPU": 2.0}, external=False)
    resources, notice = trial_resources(1.0, 1.0, {"CPU": 2.0}, external=False)
    assert resources == {"cpu": 1.0, "gpu": 0.0} and "no GPU in the Ray cluster; running trials on CPUs" in notice
    with pytest.raises(ValueError, match="study.gpu: expected at most 1 GPUs per trial .* got 2"):
        trial_resources(1.0, 2.0, {"CPU": 8.0, "GPU": 1.0}, external=False)
    assert trial_resources(1.0, 0.5, {"CPU": 8.0, "GPU": 1.0}, external=False) == ({"cpu": 1.0, "gpu": 0.5}, None)


HERE = {"192.0.2.2"}  # this machine's outward address: Ray registers even a loopback-started node under it


def test_the_embedded_store_is_refused_on_a_cluster_spanning_hosts(tmp_path: Path) -> None:
    local = embedded_store(tmp_path)
    with pytest.raises(ValueError) as info:
        check_store_for_cluster(local, "ray://head.example.org:10001", ["10.0.0.5", "10.0.0.6"], HERE)
    msg = str(info.value)
    assert msg.startswith("MLFLOW_TRACKING_URI: expected an MLflow server that every Ray node can reach")
    assert "ray://head.example.org:10001" in msg and "10.0.0.5, 10.0.0.6" in msg and local.tracking_uri in msg
    assert "set MLFLOW_TRACKING_URI=http://" in msg
    # infra/ray/cluster.yaml: a job driver on the head (this machine), whose trials wait for GPU workers
    with pytest.raises(ValueError, match="trials wait for nodes that are not up yet"):
        check_store_for_cluster(local, "192.0.2.2:6379", ["192.0.2.2"], HERE, waits_for_nodes=True)
    # fine: a cluster whose nodes all run here, the local Ray, a server
    check_store_for_cluster(local, "127.0.0.1:6379", ["192.0.2.2", "192.0.2.2"], HERE)
    check_store_for_cluster(local, None, ["10.0.0.5"], waits_for_nodes=True)
    check_store_for_cluster(
        Store("http://mlflow.example.org:5000", "server"),
        "ray://head.example.org:10001",
        ["10.0.0.5"],
        waits_for_nodes=True,
    )


def test_ui_command_names_the_actual_store(tmp_path: Path) -> None:
    store = embedded_store(tmp_path / "work")
    line = ui_command(store)
    db, artifacts = tmp_path.resolve() / "work" / "mlflow.db", (tmp_path.resolve() / "work" / "mlruns").as_uri()
    assert line.startswith(
        f"MLflow UI: mlflow ui --backend-store-uri sqlite:///{db} --default-artifact-root {artifacts}"
    )
    assert ui_command(Store("http://bob:pw@127.0.0.1:5000", "server")) == "MLflow UI: http://***@127.0.0.1:5000"


def test_the_progress_delay_comes_from_the_environment_and_a_bad_one_stops_the_study_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert progress_after_s({}) == 5.0 and progress_after_s({PROGRESS_AFTER_ENV: " "}) == 5.0
    assert progress_after_s({PROGRESS_AFTER_ENV: "0"}) == 0.0 and progress_after_s({PROGRESS_AFTER_ENV: "12.5"}) == 12.5
    for bad in ("soon", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match=f"LGEOM_PROGRESS_AFTER_S: expected seconds >= 0 .*got '{bad}'"):
            progress_after_s({PROGRESS_AFTER_ENV: bad})
    monkeypatch.setenv(PROGRESS_AFTER_ENV, "later")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    cfg = load_config("quick-tiny", [f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(ValueError, match="got 'later'"):
        main(cfg, report_dir=tmp_path / "report")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output folder, report, store or lock
