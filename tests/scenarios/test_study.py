"""The study end to end on a real local Ray and a real MLflow store: a complete tiny study, an idempotent
rerun, a failing cell kept apart, ``kill -9`` of the driver and resume, Optuna tuning through Ray Tune.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TWO_CELLS = (
    'study.matrix={"model.width": [16], '
    '"train": [{"optimizer": "sgd", "lr": 0.05}, {"optimizer": "adam", "lr": 0.005}]}'
)
CELLS = ["mlp2x16/moons/sgd", "mlp2x16/moons/adam"]
LGEOM = [sys.executable, "-m", "pipelines.cli"]


def lgeom(
    args: list[str], cwd: Path, *, timeout: float = 420, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``lgeom <args>`` in a fresh process with the embedded store of ``cwd``."""
    full_env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    full_env.pop("RAY_ADDRESS", None)
    return subprocess.run(LGEOM + args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def client(cwd: Path) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


def study_runs(cwd: Path, study: str) -> list[Any]:
    c = client(cwd)
    exp = c.get_experiment_by_name(study)
    return [] if exp is None else c.search_runs([exp.experiment_id], max_results=1000)


def trial_runs(runs: list[Any], status: str | None = None) -> list[Any]:
    return [
        r for r in runs if r.data.tags.get("lgeom.stage") == "trial" and (status is None or r.info.status == status)
    ]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    cwd = tmp_path_factory.mktemp("study")
    proc = lgeom(["study", "--preset", "quick-tiny", TWO_CELLS], cwd)
    return cwd, proc


def test_tiny_study_logs_complete_child_runs(tiny_study) -> None:
    cwd, proc = tiny_study
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = study_runs(cwd, "quick-tiny")
    parents = [r for r in runs if r.data.tags.get("lgeom.stage") == "study"]
    children = trial_runs(runs)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["lgeom.cell"] for r in children) == sorted(CELLS)
    c = client(cwd)
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert len(run.data.tags["lgeom.config_hash"]) == 16
        m = run.data.metrics
        for name in [
            "endpoint/a/test_acc",
            "endpoint/b/test_acc",
            "barrier/linear/test/loss",
            "barrier/bezier/test/loss",
            "barrier/polychain/test/loss",
            "barrier/linear_aligned/test/loss",
            "triangle/bezier/angle_acb_deg",
            "triangle/bezier/dist_ac",
            "triangle/polychain/area",
            "hessian/a/lambda_max",
            "hessian/b/lambda_max",
            "hessian/mid/lambda_max",
            "hessian/mid/trace",
            "sharpness/a/eps_avg",
            "sharpness/mid/eps_worst",
        ]:
            assert name in m, name
        assert run.data.params["model.width"] == "16" and int(run.data.params["n_params"]) > 0
        series = c.get_metric_history(run.info.run_id, "path/bezier/test_acc")
        assert sorted(s.step for s in series) == list(range(11))
        assert c.get_metric_history(run.info.run_id, "path/linear/hessian_lambda_max")
        files = {
            f.path
            for d in ("curves", "spectra", "figures", "paths", "planes")
            for f in c.list_artifacts(run.info.run_id, d)
        }
        for f in [
            "curves/bezier.pt",
            "curves/polychain.pt",
            "spectra/a.json",
            "spectra/mid.json",
            "figures/paths.png",
            "paths/linear.csv",
            "paths/bezier.csv",
            "planes/bezier.npz",
        ]:
            assert f in files, f
        assert {"lgeom.model.a", "lgeom.model.b"} <= set(run.data.tags)
        assert run.data.tags["lgeom.figures"] == "drawn"  # study.cell_figures is on by default
    assert (cwd / "reports" / "quick-tiny" / "report.md").exists() and (
        cwd / "reports" / "quick-tiny" / "report.html"
    ).exists()
    assert "mlp2x16/moons/adam" in proc.stdout and "report: reports/quick-tiny/report.md" in proc.stdout
    db, artifacts = (cwd / "mlflow.db").resolve(), (cwd / "mlruns").resolve().as_uri()
    assert f"MLflow UI: mlflow ui --backend-store-uri sqlite:///{db} --default-artifact-root {artifacts}" in proc.stdout
    parent_files = {f.path for f in c.list_artifacts(parents[0].info.run_id, "report")}
    assert "report/report.md" in parent_files and "report/report.html" in parent_files


def test_rerun_is_idempotent_and_trains_nothing(tiny_study) -> None:
    cwd, first = tiny_study
    assert first.returncode == 0
    stamps = {p: p.stat().st_mtime_ns for p in (cwd / "outputs").rglob("*.pt")}
    # --register on a rerun registers the reused cells' endpoints too (the first run did not register)
    proc = lgeom(["study", "--preset", "quick-tiny", TWO_CELLS, "--register"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 already FINISHED, 0 to run" in proc.stdout
    assert "0 cell(s) finished, 2 reused" in proc.stdout
    runs = study_runs(cwd, "quick-tiny")
    assert len(trial_runs(runs)) == 2, "a rerun must not create child runs"
    assert len([r for r in runs if r.data.tags.get("lgeom.stage") == "study"]) == 2
    assert {p: p.stat().st_mtime_ns for p in (cwd / "outputs").rglob("*.pt")} == stamps, "nothing may be retrained"
    c = client(cwd)
    run_of = {r.data.tags["lgeom.cell"]: r.info.run_id for r in trial_runs(runs)}
    models = [f"{cell.replace('/', '-')}-{role}" for cell in CELLS for role in ("a", "b")]

    def registered() -> dict[str, list[tuple[str, str]]]:
        return {m: sorted((str(v.version), v.run_id) for v in c.search_model_versions(f"name = '{m}'")) for m in models}

    expected = {m: [("1", run_of[cell])] for cell in CELLS for m in models if m.startswith(cell.replace("/", "-"))}
    assert registered() == expected
    for m in models:
        alias = c.get_model_version_by_alias(m, "quick-tiny")
        assert str(alias.version) == "1" and alias.tags["lgeom.study"] == "quick-tiny"
    again = lgeom(["study", "--preset", "quick-tiny", TWO_CELLS, "--register"], cwd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert registered() == expected, "registering the same runs again must not add versions"


def test_failing_cells_are_isolated(tmp_path: Path) -> None:
    # One run, three kinds of cell: a NaN loss (lr 1e12), a dataset whose files are missing (a runtime error
    # in data loading, not a config error), and a good cell that must finish regardless.
    no_data = tmp_path / "no-data"
    matrix = (
        'study.matrix={"model.width": [16], "train.lr": [0.05, 1.0e+12], "train.momentum": [0.0], '
        f'"data": [{{name: moons}}, {{name: mnist, noise: null, root: "{no_data}"}}]}}'
    )
    proc = lgeom(["study", "--preset", "quick-tiny", matrix], tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    bad, good = "mlp2x16/moons/sgd/lr=1000000000000.0/momentum=0.0", "mlp2x16/moons/sgd/lr=0.05/momentum=0.0"
    no_files = "mlp2x16/mnist/sgd/lr=0.05/momentum=0.0"
    assert f"FAILED {bad}: NonFiniteLossError" in proc.stdout
    assert (
        f"FAILED {no_files}: DatasetNotFoundError: mnist: expected its files under {no_data}/MNIST/raw" in proc.stdout
    )
    assert "1 cell(s) finished, 0 reused from earlier runs, 3 failed" in proc.stdout
    runs = {r.data.tags["lgeom.cell"]: r for r in trial_runs(study_runs(tmp_path, "quick-tiny"))}
    assert runs[good].info.status == "FINISHED" and "barrier/bezier/test/loss" in runs[good].data.metrics
    assert runs[bad].info.status == "FAILED"
    assert "NonFiniteLossError" in runs[bad].data.tags["lgeom.error"] and "epoch" in runs[bad].data.tags["lgeom.error"]
    assert runs[no_files].info.status == "FAILED"
    assert runs[no_files].data.tags["lgeom.error"].startswith("DatasetNotFoundError: mnist: expected its files under")
    assert "train-images-idx3-ubyte" in runs[no_files].data.tags["lgeom.error"]
    parent = [r for r in study_runs(tmp_path, "quick-tiny") if r.data.tags.get("lgeom.stage") == "study"][0]
    assert parent.info.status == "FAILED"
    assert {bad, no_files} <= set(parent.data.tags["lgeom.failed_cells"].split(", "))


def test_invalid_values_reject_the_whole_study_up_front(tmp_path: Path) -> None:
    # The same dataset axis without clearing moons' noise option: a config error in one cell stops the
    # study before anything runs (exit 2), unlike the runtime failures above.
    matrix = 'study.matrix={"model.width": [16], "data.name": [moons, mnist]}'
    proc = lgeom(["study", "--preset", "quick-tiny", matrix], tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "data.noise: not an option of mnist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "outputs").exists(), (
        "nothing may be logged or trained"
    )


def test_kill_minus_nine_then_resume(tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = LGEOM + ["study", "--preset", "quick-tiny", "study.max_concurrent=1", TWO_CELLS]
    log = open(tmp_path / "first.log", "w")
    driver = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Poll the cells' stage files, not MLflow: a second process creating the sqlite schema at the same
        # time as the driver would race its migrations.
        deadline = time.monotonic() + 300
        logged: list[Path] = []
        while time.monotonic() < deadline and not logged:
            logged = [
                p for p in (tmp_path / "outputs").rglob("stages.json") if "log" in json.loads(p.read_text() or "{}")
            ]
            assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.5)
        assert logged, "no cell finished within 300 s"
        time.sleep(2.0)  # let the next cell start its run
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # Ray's helpers of the killed driver
        except ProcessLookupError:
            pass
        log.close()
    time.sleep(3.0)
    before = study_runs(tmp_path, "quick-tiny")
    assert any(r.info.status == "RUNNING" for r in before), "the killed driver should leave RUNNING runs behind"

    proc = lgeom(["study", "--preset", "quick-tiny", "study.max_concurrent=1", TWO_CELLS], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = study_runs(tmp_path, "quick-tiny")
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run may be left RUNNING"
    finished = trial_runs(runs, "FINISHED")
    cells = [r.data.tags["lgeom.cell"] for r in finished]
    assert sorted(cells) == ["mlp2x16/moons/adam", "mlp2x16/moons/sgd"], cells
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert killed and all("lgeom.error" in r.data.tags for r in killed)
    assert "closed" in proc.stdout and "left RUNNING by a killed invocation" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["tune", "--preset", "quick-tiny", "--cell", "mlp2x16/moons/sgd", "--lr-min", "-1"],
            "lr range: expected 0 < lr_min < lr_max",
        ),
        (["tune", "--preset", "quick-tiny"], "--cell: expected one of mlp2x16/moons/sgd"),
        (
            ["tune", "--preset", "quick-tiny", "--cell", "nope", "--num-samples", "0"],
            "--num-samples: expected an integer >= 1",
        ),
        (["study", "--preset", "quick-tiny", "study.cpu=64"], "study.cpu: expected at most"),
        (["study", "--preset", "quick-tiny", "--cpu", "-2"], "--cpu: expected a number >= 0"),
        (["study", "--preset", "quick-tiny", "--cell", "nope/moons/sgd"], "--cell: expected one of"),
    ],
)
def test_bad_study_and_tune_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    from pipelines.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if (tmp_path / "mlflow.db").exists():
        assert not [r for r in study_runs(tmp_path, "quick-tiny") if r.info.status == "RUNNING"]
        assert not trial_runs(study_runs(tmp_path, "quick-tiny")), "bad input must not start any trial"


ONE_CELL = 'study.matrix={"model.width": [16], "train": [{"optimizer": "sgd", "lr": 0.05}]}'


def artifact_files(c: Any, run_id: str, folder: str | None = None) -> set[str]:
    """Every artifact file below ``folder`` of a run (recursively)."""
    out: set[str] = set()
    for info in c.list_artifacts(run_id, folder):
        out |= artifact_files(c, run_id, info.path) if info.is_dir else {info.path}
    return out


def test_deferred_cell_figures_are_drawn_later_by_lgeom_figures(tmp_path: Path) -> None:
    proc = lgeom(["study", "--preset", "quick-tiny", ONE_CELL, "study.cell_figures=false"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    c = client(tmp_path)
    (child,) = trial_runs(study_runs(tmp_path, "quick-tiny"), "FINISHED")
    run_id = child.info.run_id
    assert child.data.tags["lgeom.figures"] == "deferred"
    files = artifact_files(c, run_id)
    assert {"figure_inputs.json", "planes/bezier.npz", "paths/bezier.csv", "spectra/mid.json", "probes.json"} <= files
    assert not [f for f in files if f.endswith(".png")], "a deferred cell draws no figure"
    inputs = json.loads((Path(c.download_artifacts(run_id, "figure_inputs.json", str(tmp_path / "dl")))).read_text())
    assert {"paths", "plane_bezier", "a_topk", "mid_surface3d", "bezier_hessian"} <= set(inputs)

    # bad input first: exit 2, a message naming the bad value, nothing written
    for args, named in (
        (["--run", "0123456789abcdef0123456789abcdef"], "got '0123456789abcdef0123456789abcdef'"),
        (["--study", "no-such-study"], "got 'no-such-study'"),
        (["--study", "quick-tiny", "--cell", "mlp2x16/moons/adam"], "got 'mlp2x16/moons/adam'"),
    ):
        bad = lgeom(["figures", *args], tmp_path, timeout=120)
        assert bad.returncode == 2, bad.stdout[-2000:] + bad.stderr[-2000:]
        assert named in bad.stderr and "Traceback" not in bad.stderr
    assert not [f for f in artifact_files(c, run_id) if f.endswith(".png")]
    assert c.get_run(run_id).data.tags["lgeom.figures"] == "deferred"

    drawn = lgeom(["figures", "--study", "quick-tiny"], tmp_path, timeout=180)
    assert drawn.returncode == 0, drawn.stdout[-3000:] + drawn.stderr[-3000:]
    assert f"run {run_id}: {len(inputs)} figures uploaded" in drawn.stdout
    figures = {f for f in artifact_files(c, run_id, "figures")}
    assert figures == {f"figures/{name}.png" for name in inputs}
    assert c.get_run(run_id).data.tags["lgeom.figures"] == "drawn"
    sizes = {i.path: i.file_size for i in c.list_artifacts(run_id, "figures")}
    assert all(size > 5000 for size in sizes.values())

    again = lgeom(["figures", "--run", run_id], tmp_path, timeout=120)
    assert again.returncode == 0 and "already drawn, skipped" in again.stdout, again.stderr[-2000:]
    assert {i.path: i.file_size for i in c.list_artifacts(run_id, "figures")} == sizes
