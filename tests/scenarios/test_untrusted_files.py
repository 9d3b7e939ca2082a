"""Files a user hands in are data, never code: every command taking a ``.pt`` file reads it with
``torch.load(weights_only=True)``. A crafted pickle whose payload would create a marker file, and a file of
random bytes, are refused with exit status 2 and a message naming the file; the payload never runs, no
traceback is printed and no MLflow run is created.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.cli import main as cli_main

CELL = "mlp2x16/moons/sgd"


class _Payload:
    """Unpickling this calls ``os.system("touch <marker>")``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def crafted(path: Path, marker: Path, *, legacy: bool = False) -> Path:
    """A checkpoint-shaped file (``{"params": ..., "buffers": {}}``) whose unpickling runs the payload:
    torch's zip format, or with ``legacy`` a bare pickle (the format before torch 1.6).
    """
    obj = {"params": _Payload(marker), "buffers": {}}
    if legacy:
        path.write_bytes(pickle.dumps(obj, protocol=2))
    else:
        torch.save(obj, path)
    return path


def garbage(path: Path) -> Path:
    """A file of random bytes."""
    path.write_bytes(os.urandom(4096))
    return path


@pytest.fixture(scope="module")
def valid_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain ``{"params", "buffers"}`` checkpoint of the quick-tiny cell's architecture (untrained)."""
    from lgeom.params import get_buffers, get_params
    from pipelines.common import build_cell_model, load_splits
    from pipelines.config import expand_matrix, load_config

    cfg = next(c.config for c in expand_matrix(load_config("quick-tiny", [])) if c.name == CELL)
    model = build_cell_model(cfg, load_splits(cfg))
    path = tmp_path_factory.mktemp("valid") / "final.pt"
    torch.save(
        {
            "params": {k: v.detach().clone() for k, v in get_params(model).items()},
            "buffers": {k: v.detach().clone() for k, v in get_buffers(model).items()},
        },
        path,
    )
    return path


def _runs(tracking_uri: str) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name("quick-tiny")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def _args(case: str, bad: Path, valid: Path, tmp_path: Path) -> list[str]:
    common = ["--preset", "quick-tiny", "--cell", CELL, "--no-progress", f"output_dir={tmp_path / 'out'}"]
    if case == "connect --a":
        return ["connect", *common, "--a", str(bad), "--b", str(valid)]
    if case == "connect --b":
        return ["connect", *common, "--a", str(valid), "--b", str(bad)]
    if case == "probe --checkpoint":
        return ["probe", *common, "--checkpoint", str(bad)]
    if case == "probe --curve":
        return ["probe", *common, "--curve", str(bad)]
    raise AssertionError(case)


@pytest.mark.parametrize("kind", ["payload", "legacy-payload", "garbage"])
@pytest.mark.parametrize("case", ["connect --a", "connect --b", "probe --checkpoint", "probe --curve"])
def test_a_crafted_or_garbage_file_is_refused_and_never_runs(
    case: str,
    kind: str,
    valid_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    marker = tmp_path / "PAYLOAD_RAN"
    bad = tmp_path / "evil.pt"
    garbage(bad) if kind == "garbage" else crafted(bad, marker, legacy=kind == "legacy-payload")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    rc = cli_main(_args(case, bad, valid_checkpoint, tmp_path))
    err = capsys.readouterr().err
    assert not marker.exists(), "the payload of the file ran"
    assert rc == 2, err
    assert str(bad) in err and "expected" in err and "Traceback" not in err, err
    assert "weights_only" not in err, "the message must not suggest loading the file unsafely"
    assert not [r for r in _runs(uri)], "a refused input must not create a run"


def test_a_crafted_trajectory_beside_a_valid_checkpoint_is_refused(
    valid_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # probe --checkpoint also reads last.pt next to the checkpoint (the training trajectory).
    folder = tmp_path / "ckpt"
    folder.mkdir()
    final = folder / "final.pt"
    final.write_bytes(valid_checkpoint.read_bytes())
    marker = tmp_path / "PAYLOAD_RAN"
    crafted(folder / "last.pt", marker)
    rc = cli_main(
        [
            "probe",
            "--preset",
            "quick-tiny",
            "--cell",
            CELL,
            "--no-progress",
            "--no-tracking",
            "--checkpoint",
            str(final),
            f"output_dir={tmp_path / 'out'}",
        ]
    )
    err = capsys.readouterr().err
    assert not marker.exists(), "the payload of last.pt ran"
    assert rc == 2 and str(folder / "last.pt") in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("metrics.json")), (
        "nothing may be written"
    )


def test_library_loaders_refuse_crafted_files(tmp_path: Path) -> None:
    from lgeom.curves import load_curve
    from lgeom.data import build_dataset
    from lgeom.models import build_model
    from lgeom.train import TrainSpec, load_checkpoint, train

    marker = tmp_path / "PAYLOAD_RAN"
    bad = crafted(tmp_path / "evil.pt", marker)
    model = build_model("mlp", num_classes=2, in_shape=(2,), depth=1, width=4)
    for load in (lambda: load_checkpoint(bad, model), lambda: load_curve(bad)):
        with pytest.raises(ValueError, match=f"expected .*got {bad}, which refers to the Python object posix.system"):
            load()
    # A resumed training run reads last.pt from its checkpoint folder.
    ckpt = tmp_path / "resume"
    ckpt.mkdir()
    crafted(ckpt / "last.pt", marker)
    data = build_dataset("moons", "train", n=40, seed=0)
    with pytest.raises(ValueError, match="last.pt"):
        train(model, data, None, TrainSpec(epochs=1, batch_size=20, device="cpu"), progress=False, checkpoint_dir=ckpt)
    assert not marker.exists()


def test_everything_lgeom_writes_loads_with_weights_only(tmp_path: Path) -> None:
    """Checkpoints (init, last with the optimiser and RNG states, final), curves and bundle endpoints are
    plain data: torch.load(weights_only=True) reads each.
    """
    from lgeom.curves import build_curve, save_curve
    from lgeom.data import build_dataset
    from lgeom.models import build_model
    from lgeom.params import get_buffers, get_params
    from lgeom.train import TrainSpec, train
    from tracking.bundle import Bundle

    for optimizer in ("sgd", "adam"):
        model = build_model("mlp", num_classes=2, in_shape=(2,), depth=1, width=4)
        data = build_dataset("moons", "train", n=40, seed=0)
        spec = TrainSpec(
            epochs=2, batch_size=20, device="cpu", optimizer=optimizer, snapshot_every=1, grad_snapshot_every=1
        )
        train(model, data, data, spec, progress=False, checkpoint_dir=tmp_path / optimizer)
        for name in ("init.pt", "last.pt", "final.pt"):
            torch.load(tmp_path / optimizer / name, weights_only=True)
    curve = build_curve("bezier", get_params(model), get_params(model))
    torch.load(
        save_curve(tmp_path / "c.pt", curve, model={"arch": "mlp", "depth": 1}, num_classes=2, in_shape=[2]),
        weights_only=True,
    )
    torch.load(Bundle(tmp_path / "b").write_endpoint("a", get_params(model), get_buffers(model)), weights_only=True)
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name], "no temporary file may be left behind"


def test_garbage_curve_on_the_command_line_exits_2_without_a_traceback(tmp_path: Path) -> None:
    """The real console script: stderr holds one clear line, never a traceback."""
    bad = garbage(tmp_path / "curve.pt")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "probe",
            "--preset",
            "quick-tiny",
            "--cell",
            CELL,
            "--no-progress",
            "--curve",
            str(bad),
            f"output_dir={tmp_path / 'out'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("lgeom probe: error: curve: expected") and str(bad) in lines[-1], proc.stderr
