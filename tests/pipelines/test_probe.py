"""The ``probe`` step end to end through ``pipelines.cli.main`` (quick-tiny), and the bundle writers the
study trial calls.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lgeom.curves import Bezier, save_curve
from lgeom.models import build_model
from lgeom.probes import ProbeSettings
from lgeom.table import Table
from pipelines.cli import main as cli_main
from pipelines.config import Config, ProbeConfig, expand_matrix, load_config
from pipelines.probe import merge_on_t, probe_cell, write_path_probes
from tracking.bundle import Bundle

CELL = "mlp2x16/moons/sgd"
FAST = ["probe.density_steps=6", "probe.slice_points=5", "probe.slice2d_points=4"]


def cell_config(overrides: list[str]) -> Config:
    return next(c.config for c in expand_matrix(load_config("quick-tiny", overrides)) if c.name == CELL)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One default run: trains endpoint A of the cell (with a trajectory) and probes it."""
    out = tmp_path_factory.mktemp("probe-e2e")
    overrides = [f"output_dir={out}", "train.snapshot_every=10", "train.grad_snapshot_every=4", *FAST]
    rc = cli_main(["probe", "--preset", "quick-tiny", "--cell", CELL, "--no-progress", *overrides])
    bundle = out / "quick-tiny" / CELL / "probe"
    ckpt = next((out / "quick-tiny" / CELL / "endpoints").glob("*/seed0/final.pt"))
    return {"rc": rc, "out": out, "bundle": bundle, "checkpoint": ckpt, "overrides": overrides}


def test_default_run_writes_metrics_spectra_and_figures(trained: dict) -> None:
    assert trained["rc"] == 0
    bundle = Bundle(trained["bundle"])
    metrics = bundle.metrics()
    for name in (
        "hessian/a/lambda_max",
        "hessian/a/topk_mean",
        "hessian/a/trace",
        "sharpness/a/eps_avg",
        "sharpness/a/eps_worst",
        "curvature/a/mc_mean",
        "pca/explained_variance_1",
        "gradients/effective_dim",
    ):
        assert name in metrics and math.isfinite(metrics[name]), name
    assert metrics["hessian/a/lambda_max"] >= metrics["hessian/a/topk_mean"]
    spectrum = bundle.read_json("spectra/a.json")
    assert len(spectrum["eigenvalues"]) == 3 and spectrum["eigenvalues"][0] == pytest.approx(
        metrics["hessian/a/lambda_max"]
    )
    assert (
        spectrum["trace"]["mean"] == pytest.approx(metrics["hessian/a/trace"])
        and len(spectrum["density"]["grid"]) == 500
    )
    figures = {p.name for p in (trained["bundle"] / "figures").glob("*.png")}
    assert {
        "a_topk.png",
        "a_density.png",
        "a_sharpness.png",
        "a_slice1d.png",
        "a_slice2d.png",
        "a_surface3d.png",
        "pca_plane.png",
    } <= figures
    assert all((trained["bundle"] / "figures" / f).stat().st_size > 5000 for f in figures)
    assert np.load(trained["bundle"] / "planes" / "slice_a.npz")["loss"].shape == (4, 4)
    probes = bundle.read_json("probes.json")
    assert len(probes["a"]["average"]["increases"]) == 4 and len(probes["a"]["slice_1d"]["loss"]) == 5
    assert bundle.read_json("tags.json")["lgeom.stage"] == "probe"


def test_checkpoint_mode_probes_a_saved_endpoint(trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ck"
    rc = cli_main(
        [
            "probe",
            "--preset",
            "quick-tiny",
            "--cell",
            CELL,
            "--no-progress",
            "--checkpoint",
            str(trained["checkpoint"]),
            "--point",
            "b",
            "--out",
            str(out),
            *trained["overrides"],
        ]
    )
    assert rc == 0
    metrics = Bundle(out).metrics()
    a = Bundle(trained["bundle"]).metrics()
    assert metrics["hessian/b/lambda_max"] == pytest.approx(
        a["hessian/a/lambda_max"], rel=1e-6
    )  # same point, same seeds
    assert "pca/explained_variance_1" in metrics  # trajectory read from last.pt beside the checkpoint
    assert f"{CELL}: hessian/b/lambda_max" in capsys.readouterr().out


def test_curve_mode_probes_endpoints_midpoint_and_the_path(trained: dict, tmp_path: Path) -> None:
    from pipelines.common import load_splits
    from pipelines.connect import load_endpoint, model_extra

    cfg = cell_config(trained["overrides"])
    params, _ = load_endpoint(trained["checkpoint"], "a")
    gen = torch.Generator().manual_seed(0)
    other = {n: p + 0.2 * torch.randn(p.shape, generator=gen) for n, p in params.items()}
    curve_file = save_curve(tmp_path / "bezier.pt", Bezier(params, other), **model_extra(cfg, load_splits(cfg)))
    out = tmp_path / "curve"
    rc = cli_main(
        [
            "probe",
            "--preset",
            "quick-tiny",
            "--cell",
            CELL,
            "--no-progress",
            "--curve",
            str(curve_file),
            "--out",
            str(out),
            *trained["overrides"],
        ]
    )
    assert rc == 0
    bundle = Bundle(out)
    metrics = bundle.metrics()
    for point in ("a", "mid", "b"):
        assert math.isfinite(metrics[f"hessian/{point}/lambda_max"]) and (out / "spectra" / f"{point}.json").exists()
    table = bundle.read_path("bezier")
    assert list(table["t"]) == [0.0, 0.5, 1.0] and {"hessian_lambda_max", "hessian_top1", "hessian_top3"} <= set(
        table.names
    )
    assert table["hessian_lambda_max"][0] == pytest.approx(metrics["hessian/a/lambda_max"], rel=1e-9)
    assert (out / "figures" / "bezier_hessian.png").exists()


@pytest.mark.parametrize("flag", ["--checkpoint", "--curve"])
def test_missing_input_file_exits_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture, flag: str
) -> None:
    missing = tmp_path / "nope.pt"
    rc = cli_main(
        [
            "probe",
            "--preset",
            "quick-tiny",
            "--cell",
            CELL,
            "--no-progress",
            flag,
            str(missing),
            f"output_dir={tmp_path}",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert f"lgeom probe: error: {flag}: expected a file at {missing}, got nothing there" in err
    assert "Traceback" not in err


def test_several_cells_with_a_file_need_a_cell(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "x.pt"
    torch.save({"params": {}, "buffers": {}}, f)
    assert (
        cli_main(["probe", "--preset", "quick-tiny", "--no-progress", "--checkpoint", str(f), f"output_dir={tmp_path}"])
        == 2
    )
    assert "--cell: expected one of mlp2x16/moons/sgd" in capsys.readouterr().err


def test_probe_config_section_carries_the_probe_settings() -> None:
    assert issubclass(ProbeConfig, ProbeSettings)
    cfg = load_config("quick-tiny", ["probe.hessian_engine=cached", "probe.trace_method=hutch++"])
    settings = ProbeSettings.from_object(cfg.probe)
    assert settings.hessian_engine == "cached" and settings.trace_method == "hutch++" and settings.hessian_k == 3


def test_path_probe_columns_merge_into_the_connect_table(tmp_path: Path) -> None:
    bundle = Bundle(tmp_path)
    bundle.write_path("linear", Table({"t": np.linspace(0, 1, 5), "test_loss": np.arange(5.0)}))
    write_path_probes(
        bundle,
        "linear",
        Table({"t": [0.0, 0.5, 1.0], "hessian_lambda_max": [3.0, 9.0, 4.0], "hessian_top1": [3.0, 9.0, 4.0]}),
        figures=True,
    )
    merged = bundle.read_path("linear")
    np.testing.assert_allclose(merged["t"], np.linspace(0, 1, 5))
    np.testing.assert_allclose(merged["test_loss"], np.arange(5.0))
    np.testing.assert_allclose(merged["hessian_lambda_max"], [3.0, np.nan, 9.0, np.nan, 4.0])
    assert (tmp_path / "figures" / "linear_hessian.png").exists()
    extra = merge_on_t(merged, Table({"t": [0.1], "hessian_lambda_max": [1.0]}))
    assert len(extra) == 6 and extra["t"][1] == pytest.approx(0.1)


def test_probe_cell_fills_a_trial_bundle(trained: dict, tmp_path: Path) -> None:
    from pipelines.common import build_cell_model, load_splits
    from pipelines.connect import load_endpoint, model_extra

    cfg = cell_config(
        trained["overrides"] + ["probe.sharpness_worst=false", "probe.slices=false", "probe.hessian_points=2"]
    )
    splits = load_splits(cfg)
    params, buffers = load_endpoint(trained["checkpoint"], "a")
    other = {n: p.flip(0) for n, p in params.items()}
    bundle = Bundle(tmp_path / "trial")
    bundle.write_endpoint("a", params, buffers)
    bundle.write_endpoint("b", other, buffers)
    bundle.write_curve("bezier", Bezier(params, other), **model_extra(cfg, splits))
    model = build_cell_model(cfg, splits)
    with pytest.raises(ValueError, match="endpoints/a.pt"):
        probe_cell(
            cfg, build_model("mlp", num_classes=2, in_shape=(2,), depth=1, width=16), bundle, splits, progress=False
        )
    metrics = probe_cell(cfg, model, bundle, splits, progress=False)
    for point in ("a", "b", "mid"):
        assert math.isfinite(metrics[f"hessian/{point}/lambda_max"]) and f"sharpness/{point}/eps_avg" in metrics
    assert "sharpness/a/eps_worst" not in metrics
    for path in ("linear", "bezier"):
        table = bundle.read_path(path)
        assert list(table["t"]) == [0.0, 1.0] and "hessian_lambda_max" in table
    assert bundle.read_path("linear")["hessian_lambda_max"][0] == pytest.approx(
        metrics["hessian/a/lambda_max"], rel=1e-9
    )
    assert json.loads((bundle.root / "spectra" / "mid.json").read_text())["eigenvalues"]


BN_CELL = "cnn4/gaussmix256/sgd"
BN_OVERRIDES = [
    "model.arch=cnn",
    "model.batchnorm=true",
    "model.channels=4",
    "model.width=null",
    "model.depth=null",
    "model.activation=null",
    "data.name=gaussmix256",
    "data.classes=3",
    "data.noise=null",
    "study.matrix={}",
    "probe.sharpness_worst=false",
    "probe.slices=false",
    "probe.pca=false",
    "probe.effective_dim=false",
    "probe.sharpness_samples=0",
    "probe.curvature_samples=0",
    "probe.density=false",
    "probe.hessian_points=2",
    *FAST,
]


def test_curve_mode_keeps_the_trained_bn_statistics_of_the_endpoints(tmp_path: Path) -> None:
    from pipelines.common import build_cell_model, load_splits
    from pipelines.connect import model_extra

    cfg = load_config("quick-tiny", [f"output_dir={tmp_path}", *BN_OVERRIDES])
    splits = load_splits(cfg)
    torch.manual_seed(0)
    model = build_cell_model(cfg, splits)
    pa = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(1)
    pb = {n: p + 0.1 * torch.randn(p.shape, generator=gen) for n, p in pa.items()}
    # "Trained" statistics far from what a recompute on the probe data gives.
    ba = {
        n: (b.clone().fill_(0.4) if "running_mean" in n else b.clone().fill_(2.5) if "running_var" in n else b.clone())
        for n, b in model.named_buffers()
    }
    bb = {n: (b * 0.5 if b.is_floating_point() else b) for n, b in ba.items()}
    connect = Bundle(tmp_path / "connect")
    connect.write_endpoint("a", pa, ba)
    connect.write_endpoint("b", pb, bb)
    curve_file = connect.write_curve("bezier", Bezier(pa, pb), **model_extra(cfg, load_splits(cfg)))

    def probe(*args: str) -> dict:
        out = tmp_path / f"probe{len(list(tmp_path.glob('probe*')))}"
        assert (
            cli_main(
                [
                    "probe",
                    "--preset",
                    "quick-tiny",
                    "--cell",
                    BN_CELL,
                    "--no-progress",
                    "--no-tracking",
                    *args,
                    "--out",
                    str(out),
                    f"output_dir={tmp_path}",
                    *BN_OVERRIDES,
                ]
            )
            == 0
        )
        return {"metrics": Bundle(out).metrics(), "bundle": Bundle(out)}

    by_curve = probe("--curve", str(curve_file))
    by_checkpoint = probe("--checkpoint", str(tmp_path / "connect" / "endpoints" / "a.pt"))
    for key in ("lambda_max", "topk_mean", "trace"):
        assert by_curve["metrics"][f"hessian/a/{key}"] == pytest.approx(
            by_checkpoint["metrics"][f"hessian/a/{key}"], rel=1e-9
        ), key
    assert by_curve["metrics"]["probe/a/loss"] == pytest.approx(by_checkpoint["metrics"]["probe/a/loss"], rel=1e-9)
    table = by_curve["bundle"].read_path("bezier")
    assert table["hessian_lambda_max"][0] == pytest.approx(by_curve["metrics"]["hessian/a/lambda_max"], rel=1e-9)
    # A curve file without its bundle's endpoints falls back to recomputed statistics, which differ here.
    lonely = tmp_path / "elsewhere" / "curves" / "bezier.pt"
    lonely.parent.mkdir(parents=True)
    lonely.write_bytes(curve_file.read_bytes())
    alone = probe("--curve", str(lonely))
    assert alone["metrics"]["hessian/a/lambda_max"] != pytest.approx(
        by_checkpoint["metrics"]["hessian/a/lambda_max"], rel=1e-3
    )
