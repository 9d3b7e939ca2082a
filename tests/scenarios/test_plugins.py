"""A study of a plug-in end to end: the README's example plug-in file and preset (``examples/plugins``), copied
into the study's working directory (not on the package path), run by the ``lgeom`` console script on the
local Ray: a built-in MLP and the plug-in transformer on the plug-in dataset, logged like any other cell; the
transformer's attention cannot be permuted, so its cell skips alignment with a tag saying why.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugins"
#: Shrinks the example preset to seconds of compute per cell.
TINY = [
    "train.epochs=2",
    "data.n_train=128",
    "data.n_test=64",
    "curve.epochs=1",
    "curve.points=5",
    "curve.plane_grid=3",
    "probe.samples=64",
    "probe.hessian_points=2",
    "probe.trace_probes=4",
    "probe.hessian_k=2",
    "probe.density=false",
    "probe.slices=false",
    "probe.sharpness_worst=false",
]
CELLS = {"mlp2x32/stripes/adam", "build_vit/stripes/adam"}


def lgeom_command() -> list[str]:
    """The installed ``lgeom`` console script (which, unlike ``python -m``, does not put the working directory on
    ``sys.path``), or the module when the script is missing.
    """
    script = Path(sys.executable).with_name("lgeom")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]


def test_the_readme_shows_the_example_plugin_file_and_preset_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:python|yaml)\n(.*?)```", readme, re.S)
    assert (EXAMPLE / "mynets.py").read_text() in blocks
    assert (EXAMPLE / "plugin-study.yaml").read_text() in blocks


@pytest.fixture(scope="module")
def plugin_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    cwd = tmp_path_factory.mktemp("plugin-study")
    for name in ("mynets.py", "plugin-study.yaml"):
        shutil.copy(EXAMPLE / name, cwd / name)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    for var in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(var, None)
    proc = subprocess.run(
        [*lgeom_command(), "study", "--preset", "plugin-study.yaml", *TINY],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    return cwd, proc


def _runs(cwd: Path) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("plugin-study")
    return client.search_runs([exp.experiment_id], max_results=100)


@pytest.mark.integration
@pytest.mark.slow
def test_a_plugin_study_runs_on_ray_and_logs_like_any_other(plugin_study) -> None:
    cwd, proc = plugin_study
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = _runs(cwd)
    (parent,) = [r for r in runs if r.data.tags.get("lgeom.stage") == "study"]
    children = {r.data.tags["lgeom.cell"]: r for r in runs if r.data.tags.get("lgeom.stage") == "trial"}
    assert set(children) == CELLS
    digest = hashlib.sha256((cwd / "mynets.py").read_bytes()).hexdigest()[:16]
    for name, run in children.items():
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert run.info.status == "FINISHED", tags.get("lgeom.error")
        assert tags["mlflow.parentRunId"] == parent.info.run_id and len(tags["lgeom.config_hash"]) == 16
        assert params["data.name"] == "mynets:stripes" and params["data.n_train"] == "128"
        assert tags["lgeom.plugin.data"] == f"mynets:stripes@{digest}"
        for metric in (
            "endpoint/a/test_acc",
            "endpoint/b/train_loss",
            "barrier/linear/test/loss",
            "barrier/bezier/test/loss",
            "triangle/bezier/angle_acb_deg",
            "hessian/a/lambda_max",
        ):
            assert metric in metrics, (name, metric)
    mlp, vit = children["mlp2x32/stripes/adam"], children["build_vit/stripes/adam"]
    assert vit.data.params["model.arch"] == "mynets:build_vit" and vit.data.params["model.dim"] == "16"
    assert vit.data.tags["lgeom.plugin.model"] == f"mynets:build_vit@{digest}"
    assert mlp.data.params["model.arch"] == "mlp" and "lgeom.plugin.model" not in mlp.data.tags
    # The MLP aligned; the transformer's attention has no permutation spec: skipped, with the reason.
    assert "lgeom.align_skipped" not in mlp.data.tags
    assert {"align/iterations", "barrier/linear_aligned/test/loss", "barrier/bezier_aligned/test/loss"} <= set(
        mlp.data.metrics
    )
    why = vit.data.tags["lgeom.align_skipped"]
    assert why.startswith("alignment skipped: permutation spec of TinyViT: expected operations that keep hidden units")
    assert "attention" in why
    assert not any("aligned" in k or k.startswith("align/") for k in vit.data.metrics)
    assert "study plugin-study: 2 cell(s) finished" in proc.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_the_train_entry_point_takes_a_plugin_through_mlflow_run(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE / "mynets.py", tmp_path / "mynets.py")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = (
        "study.matrix={} model={arch: mynets:build_vit, dim: 8} data={name: mynets:stripes, n_train: 64, n_test: 32} "
        f"train.epochs=1 name=plugin-entry output_dir={tmp_path / 'out'}"
    )
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_TRACKING_URI": uri}
    # The step runs in the project folder: the plug-in's folder goes on PYTHONPATH.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    for var in ("RAY_ADDRESS", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    cmd = [str(bin_dir / "mlflow"), "run", str(ROOT), "-e", "train", "--env-manager", "local"]
    cmd += ["-P", "preset=quick-tiny", "-P", f"overrides={overrides}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("plugin-entry")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.`lgeom.stage` = 'train'")
    assert run.info.status == "FINISHED"
    assert run.data.params["model.arch"] == "mynets:build_vit" and run.data.params["model.dim"] == "8"
    assert run.data.params["data.name"] == "mynets:stripes"
    assert run.data.tags["lgeom.cell"] == "build_vit/stripes/sgd"
    digest = hashlib.sha256((tmp_path / "mynets.py").read_bytes()).hexdigest()[:16]
    assert run.data.tags["lgeom.plugin.model"] == f"mynets:build_vit@{digest}"
