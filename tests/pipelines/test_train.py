"""The train step through the CLI: outputs, reuse of finished endpoints, bad input exits non-zero; with a
real MLflow server, the cells logged as runs (params, metrics, history, the model) and reused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.cli import main
from pipelines.config import config_hash, expand_matrix, load_config
from tracking import query
from tracking.log import load_model


def test_train_step_writes_checkpoints_and_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    args = [
        "train",
        "--preset",
        "quick-tiny",
        "--cell",
        "mlp2x16/moons/sgd",
        "--no-progress",
        "train.epochs=2",
        f"output_dir={tmp_path / 'out'}",
    ]
    assert main(args) == 0
    seed_dirs = sorted((tmp_path / "out" / "quick-tiny" / "mlp2x16" / "moons" / "sgd" / "endpoints").glob("*/seed*"))
    assert [d.name for d in seed_dirs] == ["seed0", "seed1"]
    for d in seed_dirs:
        assert {"init.pt", "final.pt", "last.pt", "metrics.json"} <= {p.name for p in d.iterdir()}
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["cell"] == "mlp2x16/moons/sgd" and metrics["n_params"] == 2 * 16 + 16 + 16 * 16 + 16 + 16 * 2 + 2
        assert len(metrics["history"]["epoch"]) == 2 and 0 <= metrics["final"]["test"]["acc"] <= 100
    out = capsys.readouterr().out
    assert "mlp2x16/moons/sgd seed 0: train acc" in out
    mtime = (seed_dirs[0] / "final.pt").stat().st_mtime_ns
    assert main(args) == 0
    assert json.loads((seed_dirs[0] / "metrics.json").read_text())["history"]["epoch"] == [1, 2]
    assert (seed_dirs[0] / "last.pt").exists() and mtime <= (seed_dirs[0] / "final.pt").stat().st_mtime_ns


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["train.epochs=0", "model.activation=foo"], "2 problem(s)"),
        # quick-tiny's matrix sets train.lr in every cell: the override would not apply, so it is refused
        (["train.lr=0.3"], "override train.lr=0.3: expected a key that no study.matrix axis sets"),
        (["--cell", "nope/moons/sgd"], "cell: expected one of mlp2x16/moons/sgd"),
        (
            ["data.name=mnist", "data.noise=null", "data.root=/nonexistent", "study.matrix.model.width=[4]"],
            "mnist: expected its files under /nonexistent/MNIST/raw",
        ),
    ],
)
def test_bad_input_exits_with_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, extra: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--preset", "quick-tiny", "--no-progress", f"output_dir={tmp_path / 'out'}", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unknown_preset_exits_2(capsys) -> None:
    assert main(["train", "--preset", "does-not-exist"]) == 2
    assert "preset: expected one of" in capsys.readouterr().err


CELL = "mlp2x16/moons/sgd"


@pytest.mark.integration
def test_train_logs_cells(
    server_store: Any, unique_study: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = [f"name={unique_study}", f"output_dir={tmp_path / 'out'}", "train.epochs=2"]
    args = ["train", "--preset", "quick-tiny", "--cell", CELL, "--no-progress", *overrides]
    assert main(args) == 0
    assert "logged to MLflow run" in capsys.readouterr().out
    runs = query.runs(unique_study, store=server_store, stage="train")
    assert len(runs) == 1
    row = runs.iloc[0]
    cell = next(c for c in expand_matrix(load_config("quick-tiny", overrides)) if c.name == CELL)
    assert row["cell"] == CELL and row["config_hash"] == config_hash(cell.config) and row["study"] == unique_study
    assert row["params.train.lr"] == "0.05" and row["params.model.width"] == "16" and int(row["params.n_params"]) > 0
    assert 0 <= row["metrics.endpoint/a/test_acc"] <= 100 and 0 <= row["metrics.endpoint/b/train_acc"] <= 100
    hist = server_store.client().get_metric_history(row["run_id"], "train/a/loss")
    assert sorted(h.step for h in hist) == [1, 2]
    ckpt = next((tmp_path / "out" / unique_study / CELL / "endpoints").glob("*/seed0")) / "final.pt"
    state = torch.load(ckpt, weights_only=True)
    model = load_model(server_store, row["run_id"], "a", trust_pickle=True)
    for name, value in model.named_parameters():
        assert torch.equal(value, state["params"][name])

    assert main(args) == 0
    assert "already logged to MLflow run " + row["run_id"] in capsys.readouterr().out
    assert len(query.runs(unique_study, store=server_store, stage="train", status=None)) == 1
    assert main([*args, "--no-tracking"]) == 0
    assert "logged to MLflow" not in capsys.readouterr().out
