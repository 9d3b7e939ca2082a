"""Every MLproject entry point through ``mlflow run --env-manager local`` (offline), the study against a
real two-process Ray cluster on loopback, and an entry point logging to the MLflow server + S3 stack.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CELL = "mlp2x16/moons/sgd"
TINY = "train.epochs=2 curve.epochs=1"


def mlflow_run(
    entry: str, params: dict[str, str], env: dict[str, str], *, timeout: float = 400
) -> subprocess.CompletedProcess[str]:
    """``mlflow run <repo> -e <entry> --env-manager local -P k=v ...`` from a temp folder."""
    cmd = [str(BIN / "mlflow"), "run", str(ROOT), "-e", entry, "--env-manager", "local"]
    for k, v in params.items():
        cmd += ["-P", f"{k}={v}"]
    full_env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
        **env,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for var in ("RAY_ADDRESS", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        full_env.pop(var, None)
    return subprocess.run(
        cmd,
        cwd=env.get("_CWD", tempfile.gettempdir()),
        env={k: v for k, v in full_env.items() if k != "_CWD"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def runs_of(uri: str, study: str) -> list[Any]:
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name(study)
    return [] if exp is None else c.search_runs([exp.experiment_id], max_results=1000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A head node and one worker node, two ``ray start`` processes on loopback (1 CPU each); stopped after."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="lgeom-rc-", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    ray = str(BIN / "ray")
    head = [
        ray,
        "start",
        "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        "--num-gpus=0",
        "--include-dashboard=false",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
    ]
    worker = [
        ray,
        "start",
        f"--address=127.0.0.1:{port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        "--num-gpus=0",
    ]
    try:
        subprocess.run(head, env=env, check=True, capture_output=True, text=True, timeout=120)
        subprocess.run(worker, env=env, check=True, capture_output=True, text=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_cluster_under(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_cluster_under(temp: str, timeout: float = 30.0) -> None:
    """Stop the Ray processes of the cluster whose session lives under ``temp`` (both nodes share the head's
    session folder), and their children, by pid: ``ray stop`` would stop every Ray cluster on the machine.
    """
    import psutil

    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid not in me and any(temp in arg for arg in proc.info["cmdline"] or ()):
                roots.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    procs = {p.pid: p for p in roots}
    for root in roots:
        try:
            procs.update({c.pid: c for c in root.children(recursive=True)})
        except psutil.NoSuchProcess:
            continue
    for proc in procs.values():
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(list(procs.values()), timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=timeout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cwd = tmp_path_factory.mktemp("mlflow-run")
    return {"_CWD": str(cwd), "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", "out": str(cwd / "outputs")}


def test_train_connect_probe_entry_points(workdir: dict[str, str]) -> None:
    env = {k: v for k, v in workdir.items() if k != "out"}
    common = {"preset": "quick-tiny", "cell": CELL, "overrides": f"{TINY} output_dir={workdir['out']}"}
    for entry in ("train", "connect", "probe"):
        proc = mlflow_run(entry, common, env)
        assert proc.returncode == 0, f"{entry}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    runs = runs_of(workdir["MLFLOW_TRACKING_URI"], "quick-tiny")
    stages = {r.data.tags.get("lgeom.stage") for r in runs if r.info.status == "FINISHED"}
    assert {"train", "connect", "probe"} <= stages
    # mlflow run records its own run per invocation (entry point, parameters, git commit) in the Default experiment
    project_runs = [
        r for r in runs_of(workdir["MLFLOW_TRACKING_URI"], "Default") if r.data.tags.get("mlflow.project.entryPoint")
    ]
    assert {r.data.tags["mlflow.project.entryPoint"] for r in project_runs} >= {"train", "connect", "probe"}
    assert all(r.info.status == "FINISHED" for r in project_runs)
    assert all(r.data.params["preset"] == "quick-tiny" and r.data.params["cell"] == CELL for r in project_runs)
    connect = next(r for r in runs if r.data.tags.get("lgeom.stage") == "connect")
    assert "barrier/bezier/test/loss" in connect.data.metrics
    probe = next(r for r in runs if r.data.tags.get("lgeom.stage") == "probe")
    assert "hessian/a/lambda_max" in probe.data.metrics


@pytest.fixture(scope="module")
def tuned(workdir: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``mlflow run -e tune`` with 4 trials on one cell; the preset file it writes."""
    env = {k: v for k, v in workdir.items() if k != "out"}
    out = Path(workdir["_CWD"]) / "tuned.yaml"
    params = {
        "preset": "quick-tiny",
        "cell": CELL,
        "num_samples": "4",
        "out": str(out),
        "overrides": f"{TINY} output_dir={workdir['out']}",
    }
    return mlflow_run("tune", params, env), out


def test_tune_entry_point_with_four_trials_writes_a_preset(workdir: dict[str, str], tuned: Any) -> None:
    import yaml

    from pipelines.config import expand_matrix, load_config

    proc, out = tuned
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    preset = yaml.safe_load(out.read_text())
    assert preset["base"] == "quick-tiny" and preset["name"] == "quick-tiny-tuned"
    assert set(preset["train"]) == {"lr", "weight_decay", "batch_size"}
    cells = expand_matrix(load_config(out))
    assert [c.name for c in cells] == ["mlp2x16/moons/sgd", "mlp2x64/moons/sgd"]
    assert all(c.config.train.lr == pytest.approx(preset["train"]["lr"]) for c in cells)
    runs = runs_of(workdir["MLFLOW_TRACKING_URI"], "quick-tiny")
    tune_runs = [r for r in runs if r.data.tags.get("lgeom.stage") == "tune"]
    assert len(tune_runs) == 1 and tune_runs[0].info.status == "FINISHED"
    assert "best_test_acc" in tune_runs[0].data.metrics
    assert float(tune_runs[0].data.params["best.lr"]) == pytest.approx(preset["train"]["lr"])
    trials = [r for r in runs if r.data.tags.get("lgeom.stage") == "tune-trial"]
    assert len(trials) == 4 and all(r.data.tags.get("mlflow.parentRunId") == tune_runs[0].info.run_id for r in trials)


def test_study_entry_point_on_a_two_node_ray_cluster(workdir: dict[str, str], ray_cluster: str, tuned: Any) -> None:
    """The tuned preset (written by the tune step) runs as a study on the two-node cluster."""
    env = {k: v for k, v in workdir.items() if k != "out"}
    proc, preset_file = tuned
    assert proc.returncode == 0, proc.stderr[-3000:]
    preset = __import__("yaml").safe_load(preset_file.read_text())
    report = Path(workdir["_CWD"]) / "report-study"
    overrides = (
        f'{TINY} output_dir={workdir["out"]} study.matrix={{"model.width":[16],"train.optimizer":[sgd,adam]}} '
        "study.cell_figures=false"
    )
    proc = mlflow_run(
        "study",
        {"preset": str(preset_file), "address": ray_cluster, "report_dir": str(report), "overrides": overrides},
        env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Ray: {ray_cluster} (2 node(s), 2 CPUs" in proc.stdout
    runs = runs_of(workdir["MLFLOW_TRACKING_URI"], "quick-tiny-tuned")
    trials = [r for r in runs if r.data.tags.get("lgeom.stage") == "trial"]
    assert sorted(r.data.tags["lgeom.cell"] for r in trials) == ["mlp2x16/moons/adam", "mlp2x16/moons/sgd"]
    assert all(r.info.status == "FINISHED" for r in trials)
    for trial in trials:  # the tuned hyperparameters reached every trial
        assert float(trial.data.params["train.lr"]) == pytest.approx(preset["train"]["lr"])
        assert float(trial.data.params["train.weight_decay"]) == pytest.approx(preset["train"]["weight_decay"])
        assert int(trial.data.params["train.batch_size"]) == preset["train"]["batch_size"]
    # the two trials ran in processes of their own
    assert len({r.data.tags.get("lgeom.sys.pid") for r in trials}) == 2
    assert (report / "report.md").exists()

    compare = mlflow_run("compare", {"study": "quick-tiny-tuned", "table": "compare", "format": "markdown"}, env)
    assert compare.returncode == 0, compare.stderr[-3000:]
    assert "| mlp2x16/moons/adam |" in compare.stdout and "barrier/bezier/test/loss" in compare.stdout
    report_step = mlflow_run(
        "report", {"study": "quick-tiny-tuned", "out": str(Path(workdir["_CWD"]) / "report-step")}, env
    )
    assert report_step.returncode == 0, report_step.stderr[-3000:]
    assert (Path(workdir["_CWD"]) / "report-step" / "report.html").exists()
    unknown = mlflow_run("compare", {"study": "no-such-study"}, env)
    assert unknown.returncode != 0 and "study: expected one of" in unknown.stderr

    # the trials deferred their figures; the figures entry point draws one cell's into its run
    assert {r.data.tags.get("lgeom.figures") for r in trials} == {"deferred"}
    drawn = mlflow_run("figures", {"study": "quick-tiny-tuned", "cell": "mlp2x16/moons/sgd"}, env)
    assert drawn.returncode == 0, drawn.stdout[-3000:] + drawn.stderr[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=workdir["MLFLOW_TRACKING_URI"])
    for trial in trials:
        tags = client.get_run(trial.info.run_id).data.tags
        pngs = [f.path for f in client.list_artifacts(trial.info.run_id, "figures") if f.path.endswith(".png")]
        if trial.data.tags["lgeom.cell"] == "mlp2x16/moons/sgd":
            assert tags["lgeom.figures"] == "drawn" and "figures/paths.png" in pngs and len(pngs) >= 10, pngs
        else:
            assert tags["lgeom.figures"] == "deferred" and pngs == []


def test_tune_entry_point_rejects_a_bad_float(workdir: dict[str, str]) -> None:
    env = {k: v for k, v in workdir.items() if k != "out"}
    out = Path(workdir["_CWD"]) / "tuned-bad.yaml"
    params = {
        "preset": "quick-tiny",
        "cell": CELL,
        "num_samples": "2",
        "out": str(out),
        "overrides": f"{TINY} output_dir={workdir['out']}",
        "lr_min": "-0.5",
    }
    bad = mlflow_run("tune", params, env, timeout=200)
    assert bad.returncode != 0
    assert "lr range: expected 0 < lr_min < lr_max, got lr_min=-0.5" in bad.stderr
    assert not out.exists()


def test_train_entry_point_on_the_server_with_s3(local_stack: Any, tmp_path: Path) -> None:
    env = {"_CWD": str(tmp_path), "MLFLOW_TRACKING_URI": local_stack.tracking_uri}
    proc = mlflow_run(
        "train",
        {
            "preset": "quick-tiny",
            "cell": CELL,
            "overrides": f"train.epochs=1 output_dir={tmp_path / 'out'} name=entry-server",
        },
        env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = runs_of(local_stack.tracking_uri, "entry-server")
    train = [r for r in runs if r.data.tags.get("lgeom.stage") == "train"]
    assert len(train) == 1 and train[0].info.status == "FINISHED" and "endpoint/a/test_acc" in train[0].data.metrics


def test_compare_entry_point_on_the_server(local_stack: Any, tmp_path: Path) -> None:
    from tracking.runs import run_tags, tracked_run
    from tracking.store import resolve_store

    store, study = resolve_store(local_stack.tracking_uri), f"entry-compare-{tmp_path.name}"
    with tracked_run(store, experiment=study, run_name="study", tags=run_tags(study=study, stage="study")) as parent:
        for cell, acc in (
            ("mlp2x16/moons/sgd/seeds=[0, 1]", 91.0),
            ("mlp2x16/moons/sgd/seeds=[2, 3]", 93.0),
            ("mlp2x16/moons/adam/seeds=[0, 1]", 80.0),
        ):
            with tracked_run(
                store,
                experiment_id=parent.experiment_id,
                run_name=cell,
                parent_run_id=parent.run_id,
                tags=run_tags(study=study, stage="trial", cell=cell, config_hash=cell),
            ) as run:
                run.log_metrics({"endpoint/a/test_acc": acc, "barrier/bezier/test/loss": acc / 100})
    env = {"_CWD": str(tmp_path), "MLFLOW_TRACKING_URI": local_stack.tracking_uri}
    proc = mlflow_run("compare", {"study": study, "format": "csv"}, env, timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # mlflow run adds its own "View run ... at: <url>" lines
    csv = "\n".join(
        line for line in proc.stdout.splitlines() if "View run" not in line and "View experiment" not in line
    )
    table = pd.read_csv(StringIO(csv))
    assert list(table["setting"]) == ["mlp2x16/moons/adam", "mlp2x16/moons/sgd"]
    assert table["endpoint/a/test_acc.mean"].tolist() == pytest.approx([80.0, 92.0]) and table[
        "endpoint/a/test_acc.n"
    ].tolist() == [1, 2]
    assert not (tmp_path / "mlflow.db").exists(), "compare must read the server, not an embedded store"
    project_runs = [
        r
        for r in runs_of(local_stack.tracking_uri, "Default")
        if r.data.tags.get("mlflow.project.entryPoint") == "compare"
    ]
    assert project_runs and project_runs[-1].info.status == "FINISHED"
