"""``lgeom connect`` end to end through the CLI, the bundle it writes, and its bad-input cases."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from lgeom.connect import ConnectSpec
from lgeom.curves import load_curve
from lgeom.models import build_model
from lgeom.params import get_buffers, get_params
from lgeom.path import triangle
from lgeom.table import Table
from pipelines.cli import main as cli_main
from pipelines.config import load_config
from pipelines.connect import alignment_plan, connect_spec

CELL = "mlp2x16/moons/sgd"
PATHS = ["linear", "bezier", "polychain", "linear_aligned", "bezier_aligned", "polychain_aligned"]
CURVES = ["bezier", "polychain", "bezier_aligned", "polychain_aligned"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``lgeom connect --preset quick-tiny`` on one cell (align on, as in the quick preset)."""
    out = tmp_path_factory.mktemp("out")
    code = cli_main(["connect", "--preset", "quick-tiny", "--cell", CELL, "--no-progress", f"output_dir={out}"])
    return code, out / "quick-tiny" / CELL


def test_connect_writes_the_bundle(run) -> None:
    code, cell = run
    assert code == 0
    root = cell / "connect"
    metrics = json.loads((root / "metrics.json").read_text())
    for ep in ("a", "b"):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert np.isfinite(metrics[f"endpoint/{ep}/{key}"])
    for path in PATHS:
        for split in ("train", "test"):
            for m in ("loss_barrier", "loss_barrier_interp", "acc_drop", "acc_auc"):
                assert np.isfinite(metrics[f"barrier/{path}/{split}/{m.replace('_barrier', '')}"]), (path, split, m)
        assert np.isfinite(metrics[f"gap/{path}/gen_gap_max"])
        table = Table.read_csv(root / "paths" / f"{path}.csv")
        assert {"t", "train_loss", "train_acc", "test_loss", "test_acc", "gen_gap"} <= set(table.names)
        assert len(table) == 11 and table["t"][0] == 0.0 and table["t"][-1] == 1.0
    for curve in CURVES:
        for m in ("dist_ac", "dist_bc", "dist_ab", "angle_acb_deg", "area"):
            assert np.isfinite(metrics[f"triangle/{curve}/{m}"]), (curve, m)
        assert 0 < metrics[f"triangle/{curve}/angle_acb_deg"] <= 180
        saved, extra = load_curve(root / "curves" / f"{curve}.pt")
        model = build_model(
            extra["model"]["arch"],
            num_classes=extra["num_classes"],
            in_shape=extra["in_shape"],
            **{k: v for k, v in extra["model"].items() if k != "arch"},
        )
        assert set(saved.start) == set(get_params(model)) and saved.kind == curve.split("_")[0]
        # phi(0.5)'s triangle, recomputed from the saved curve; a one-bend PolyChain passes through C at 0.5
        mid = triangle(saved.start, saved.midpoint(), saved.end).as_dict()
        for m in ("dist_ac", "dist_bc", "dist_ab", "angle_acb_deg", "area"):
            assert metrics[f"triangle/{curve}/mid/{m}"] == pytest.approx(mid[m], rel=1e-5), (curve, m)
            if saved.kind == "polychain":
                assert metrics[f"triangle/{curve}/mid/{m}"] == pytest.approx(
                    metrics[f"triangle/{curve}/{m}"], rel=1e-5
                ), (curve, m)
        assert metrics[f"triangle/{curve}/mid/dist_ab"] == pytest.approx(metrics[f"triangle/{curve}/dist_ab"], rel=1e-6)
        if curve.endswith("_aligned"):  # curve.plane_aligned is off by default: no plane, no figure
            assert not (root / "planes" / f"{curve}.npz").exists()
            assert not (root / "figures" / f"plane_{curve}.png").exists()
            continue
        plane = np.load(root / "planes" / f"{curve}.npz")
        assert plane["test_acc"].shape == (5, 5) and plane["curve_xy"].shape == (11, 2)
        # quick-tiny's 200 + 200 samples are under the default cap (curve.plane_samples=2000): all of them
        assert int(plane["train_samples"]) == 200 and int(plane["test_samples"]) == 200
        assert (root / "figures" / f"plane_{curve}.png").stat().st_size > 1000
    assert (root / "figures" / "paths.png").stat().st_size > 1000
    # endpoints and the permuted B; A and B are the checkpoints trained by the step
    a = torch.load(root / "endpoints" / "a.pt", weights_only=True)
    trained_a = next((cell / "endpoints").glob("*/seed0/final.pt"))
    assert all(torch.equal(v, torch.load(trained_a, weights_only=True)["params"][n]) for n, v in a["params"].items())
    assert (root / "endpoints" / "b.pt").exists() and (root / "endpoints" / "b_aligned.pt").exists()
    tags = json.loads((root / "tags.json").read_text())
    assert tags["lgeom.cell"] == CELL and tags["lgeom.stage"] == "connect"
    assert not list(cell.glob("connect.tmp-*"))


def test_connect_from_checkpoints(run, tmp_path, capsys) -> None:
    _, cell = run
    ckpts = sorted((cell / "endpoints").glob("*/seed*/final.pt"))
    out = tmp_path / "again"
    code = cli_main(
        [
            "connect",
            "--preset",
            "quick-tiny",
            "--cell",
            CELL,
            "--no-progress",
            "--a",
            str(ckpts[0]),
            "--b",
            str(ckpts[1]),
            f"output_dir={out}",
            "curve.align=false",
            "curve.plane=false",
            "curve.kinds=[bezier]",
        ]
    )
    assert code == 0, capsys.readouterr().err
    root = out / "quick-tiny" / CELL / "connect"
    metrics = json.loads((root / "metrics.json").read_text())
    assert "barrier/bezier/test/loss" in metrics and "barrier/polychain/test/loss" not in metrics
    assert not any("_aligned/" in k for k in metrics)
    assert not (root / "planes").exists()
    # The same endpoints as the first run: the same endpoint metrics and the same linear path.
    first = json.loads((cell / "connect" / "metrics.json").read_text())
    for key in ("endpoint/a/test_loss", "endpoint/b/test_acc", "barrier/linear/test/loss"):
        assert metrics[key] == pytest.approx(first[key], rel=1e-9)


def test_missing_checkpoint_is_bad_input(tmp_path, capsys) -> None:
    code = cli_main(
        [
            "connect",
            "--preset",
            "quick-tiny",
            "--cell",
            CELL,
            "--no-progress",
            "--a",
            str(tmp_path / "nope.pt"),
            "--b",
            str(tmp_path / "nope.pt"),
            f"output_dir={tmp_path}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "checkpoint --a: expected a file written by lgeom train" in err and "nope.pt" in err
    assert "Traceback" not in err
    assert not any(tmp_path.rglob("connect*"))


def test_checkpoints_of_different_architectures_are_bad_input(tmp_path, capsys) -> None:
    files = []
    for width in (16, 8):
        model = build_model("mlp", num_classes=2, in_shape=(2,), depth=2, width=width)
        path = tmp_path / f"w{width}.pt"
        torch.save({"params": get_params(model), "buffers": get_buffers(model)}, path)
        files.append(path)
    code = cli_main(
        [
            "connect",
            "--preset",
            "quick-tiny",
            "--cell",
            CELL,
            "--no-progress",
            "--a",
            str(files[0]),
            "--b",
            str(files[1]),
            f"output_dir={tmp_path / 'out'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "parameter 'hidden.0.weight': expected shape (16, 2)" in err and "got (8, 2)" in err
    assert not (tmp_path / "out").exists()
    code = cli_main(
        [
            "connect",
            "--preset",
            "quick-tiny",
            "--cell",
            CELL,
            "--no-progress",
            "--a",
            str(files[1]),
            "--b",
            str(files[1]),
            f"output_dir={tmp_path / 'out'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "set model.* overrides" in err and not (tmp_path / "out").exists()


def test_incomplete_arguments_are_bad_input(tmp_path, capsys) -> None:
    code = cli_main(
        ["connect", "--preset", "quick-tiny", "--no-progress", "--a", str(tmp_path / "a.pt"), f"output_dir={tmp_path}"]
    )
    assert code == 2 and "--a/--b: expected both checkpoints or neither" in capsys.readouterr().err
    code = cli_main(
        ["connect", "--preset", "quick-tiny", "--no-progress", "--a", "x", "--b", "y", f"output_dir={tmp_path}"]
    )
    assert code == 2 and "--cell: expected one of" in capsys.readouterr().err
    code = cli_main(
        ["connect", "--preset", "quick-tiny", "--cell", CELL, "curve.plane_grid=1", f"output_dir={tmp_path}"]
    )
    assert code == 2 and "curve.plane_grid: expected an integer >= 2" in capsys.readouterr().err
    for bad, message in (
        ("curve.plane_samples=0", "curve.plane_samples: expected an integer >= 1 or None, got 0"),
        ("curve.plane_samples=-3", "curve.plane_samples: expected an integer >= 1 or None, got -3"),
        ("curve.plane_samples=1.5", "curve.plane_samples"),
        ("curve.plane_aligned=maybe", "curve.plane_aligned"),
    ):
        code = cli_main(["connect", "--preset", "quick-tiny", "--cell", CELL, bad, f"output_dir={tmp_path}"])
        assert code == 2 and message in capsys.readouterr().err, bad
    assert not any(tmp_path.rglob("connect*"))


def test_connect_spec_follows_the_curve_section() -> None:
    cfg = load_config("quick-tiny", ["curve.t_per_batch=2", "curve.weight_decay=0.001", "curve.seed=4"])
    spec = connect_spec(cfg)
    assert isinstance(spec, ConnectSpec)
    assert spec.kinds == ("bezier", "polychain") and spec.points == 11 and spec.plane_grid == 5 and spec.align
    assert spec.fit.epochs == 4 and spec.fit.batch_size == 50 and spec.fit.t_per_batch == 2
    assert spec.fit.weight_decay == 0.001 and spec.fit.schedule == "piecewise" and spec.fit.seed == 4 and spec.seed == 4
    assert spec.eval_batch_size == cfg.data.eval_batch_size
    assert spec.plane_samples == 2000 and spec.plane_aligned is False  # the defaults, from lgeom.connect
    capped = connect_spec(load_config("quick-tiny", ["curve.plane_samples=50", "curve.plane_aligned=true"]))
    assert capped.plane_samples == 50 and capped.plane_aligned is True
    assert "curve.plane_samples" in load_config("quick-tiny", []).flat()


def test_alignment_is_skipped_with_a_reason_when_the_model_cannot_be_permuted(plugins: tuple[str, str]) -> None:
    mod, _ = plugins
    spec = ConnectSpec(align=True)
    attention = build_model(f"{mod}:build_att", num_classes=3, in_shape=(4,))
    plan, why = alignment_plan(spec, attention)
    assert plan == dataclasses.replace(spec, align=False)
    assert why is not None and why.startswith("alignment skipped: permutation spec of Attention: expected operations")
    assert "reshape" in why
    permutable = build_model(f"{mod}:build_tanh", num_classes=3, in_shape=(4,))
    assert alignment_plan(spec, permutable) == (spec, None)
    assert alignment_plan(ConnectSpec(align=False), attention) == (ConnectSpec(align=False), None)
