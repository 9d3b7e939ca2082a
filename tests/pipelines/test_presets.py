"""The image presets' tiny variants run every trial stage on files in the real on-disk formats: PreResNet-8
with BatchNorm on CIFAR-10 (resnet-depth-tiny) and the residual CNN on MNIST (mnist-arch-tiny). Every shipped
preset's cells are valid spec objects that round-trip, and no preset leans on a default the config no longer has.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from pathlib import Path

import pytest
import yaml

from lgeom.connect import ConnectSpec
from lgeom.probes import ProbeSettings
from lgeom.train import TrainSpec
from pipelines.config import (
    PRESET_DIR,
    available_presets,
    config_from_dict,
    config_hash,
    expand_matrix,
    load_config,
)
from pipelines.trial import StageLog, run_stages, work_dir
from tracking.bundle import Bundle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lgeom"))
from vision_files import write_cifar, write_mnist  # noqa: E402

pytestmark = pytest.mark.slow


def _run(preset: str, cell_name: str, root: Path, out: Path) -> tuple[dict, Bundle]:
    cfg = load_config(preset, [f"data.root={root}", f"output_dir={out}", "train.device=cpu"])
    cell = next(c for c in expand_matrix(cfg) if c.name == cell_name)
    wd = work_dir(cfg.output_dir, cfg.name, cell.name, cell.config)
    bundle = Bundle(wd / "bundle")
    stages = StageLog(wd / "stages.json")
    run_stages(cell.config, cell.name, wd, bundle, stages)
    assert set(stages.done) == {"train", "connect", "probe"}
    return bundle.metrics(), bundle


def _finite(metrics: dict, names: list[str]) -> None:
    for name in names:
        assert metrics.get(name) is not None and math.isfinite(metrics[name]), name


def test_resnet_depth_tiny_runs_every_stage_on_cifar_files(tmp_path: Path) -> None:
    write_cifar(tmp_path / "data", "cifar10", per_batch=16, n_test=32)
    metrics, bundle = _run("resnet-depth-tiny", "preresnet8/cifar10/sgd", tmp_path / "data", tmp_path / "out")
    _finite(
        metrics,
        [
            "endpoint/a/test_acc",
            "endpoint/b/train_loss",
            "barrier/linear/test/loss",
            "barrier/bezier/test/loss",
            "barrier/polychain/test/acc_auc",
            "triangle/bezier/angle_acb_deg",
            "triangle/polychain/dist_ac",
            "hessian/a/lambda_max",
            "hessian/mid/lambda_max",
            "sharpness/b/eps_avg",
        ],
    )
    table = bundle.read_path("bezier")
    assert len(table) == 5 and "hessian_lambda_max" in table
    # BN policy: t = 0 is the trained endpoint A with its own statistics
    assert table["test_acc"][0] == pytest.approx(metrics["endpoint/a/test_acc"])
    assert {"curves/bezier.pt", "curves/polychain.pt", "spectra/mid.json", "planes/bezier.npz"} <= {
        str(p) for p in bundle.files()
    }


def test_mnist_arch_tiny_runs_every_stage_on_mnist_files(tmp_path: Path) -> None:
    write_mnist(tmp_path / "data", n_train=64, n_test=32)
    metrics, bundle = _run("mnist-arch-tiny", "rescnn16/mnist/adam", tmp_path / "data", tmp_path / "out")
    _finite(
        metrics,
        [
            "endpoint/a/test_acc",
            "barrier/linear/test/loss",
            "barrier/linear_aligned/test/loss",
            "triangle/bezier/dist_bc",
            "hessian/a/lambda_max",
            "hessian/a/trace",
            "sharpness/a/eps_worst",
        ],
    )
    assert (bundle.root / "endpoints" / "b_aligned.pt").exists()


@pytest.mark.parametrize("preset", available_presets())
def test_every_cell_of_every_preset_is_made_of_specs_and_round_trips(preset: str) -> None:
    base = load_config(preset)
    for cell in expand_matrix(base):
        cfg = cell.config
        assert isinstance(cfg.curve, ConnectSpec) and isinstance(cfg.probe, ProbeSettings)
        assert all(isinstance(cfg.train.endpoint_spec(s), TrainSpec) for s in cfg.train.seeds)
        data = cfg.to_dict()
        data["study"]["matrix"] = {}  # a cell carries the study's matrix; expanding it again per cell is not the point
        again = dataclasses.replace(config_from_dict(data), study=base.study)
        assert again == cfg and config_hash(again) == config_hash(cfg), cell.name


def _preset_chain(name: str) -> list[dict]:
    data = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
    return ([data] + _preset_chain(data["base"])) if data.get("base") else [data]


@pytest.mark.parametrize("preset", available_presets())
def test_presets_set_the_train_settings_whose_config_default_changed(preset: str) -> None:
    # The train section used to default to 20 epochs and the piecewise schedule; it now takes TrainSpec's
    # defaults (10, constant). Presets set both, so their runs are unchanged.
    train_keys = set().union(*(d.get("train", {}) for d in _preset_chain(preset)))
    assert {"epochs", "schedule"} <= train_keys, preset


# --- stated wall times: measured (with machine and date) or labelled an estimate -------------------------------

#: A duration written in a preset header or the README: "346 s", "3-4 h", "~25 min", "20 GPU-hours", "days".
_DURATION = re.compile(
    r"(\d+(\.\d+)?\s*(-|–|to)?\s*\d*(\.\d+)?\s*(s|sec|seconds?|min|minutes?|h|hours?|GPU-hours)\b)|\bdays\b"
)
_MEASURED = re.compile(
    r"measured\b.*\b20\d\d-\d\d-\d\d\b.*\bcores?\b|measured\b.*\bcores?\b.*\b20\d\d-\d\d-\d\d\b", re.S
)
_LABELS = ("measured", "estimate", "extrapolated")
_README = Path(__file__).resolve().parents[2] / "README.md"


def _header(preset: str) -> list[str]:
    lines = (PRESET_DIR / f"{preset}.yaml").read_text().splitlines()
    return [line[1:].strip() for line in lines[: next(i for i, x in enumerate(lines) if not x.startswith("#"))]]


def _wall_time_paragraph(header: list[str]) -> tuple[str, list[str]]:
    """The header's ``Wall time:`` paragraph (its line and the continuation lines up to the next ``Key:``
    line) and the other header lines.
    """
    starts = [i for i, line in enumerate(header) if line.startswith("Wall time:")]
    assert len(starts) == 1, f"expected one 'Wall time:' line in the header, got {len(starts)}"
    end = next((i for i in range(starts[0] + 1, len(header)) if re.match(r"^[A-Z][\w -]*:", header[i])), len(header))
    return " ".join(header[starts[0] : end]), header[: starts[0]] + header[end:]


def _unlabelled_figures(text: str) -> list[str]:
    """Sentences of ``text`` that state a duration without saying it is measured, extrapolated or an estimate."""
    sentences = re.split(r"(?<=[.;])\s+", text)
    return [s for s in sentences if _DURATION.search(s) and not any(label in s.lower() for label in _LABELS)]


def test_the_duration_checks_tell_labelled_figures_from_bare_ones() -> None:
    assert _unlabelled_figures("About 3-4 h on 2 cores.") == ["About 3-4 h on 2 cores."]
    assert _unlabelled_figures("CPU only: days; one GPU ~1 h (estimate).") == ["CPU only: days;"]
    assert not _unlabelled_figures("51 s, measured 2026-12-07 on 2 cores. One GPU: ~1 min per cell (estimate).")
    assert _MEASURED.search("measured 2026-12-07 on 2 cores (Xeon)") and not _MEASURED.search("measured on 2 cores")


@pytest.mark.parametrize("preset", available_presets())
def test_every_preset_header_states_its_wall_time_measured_or_as_an_estimate(preset: str) -> None:
    paragraph, rest = _wall_time_paragraph(_header(preset))
    assert not _unlabelled_figures(paragraph), f"{preset}: a wall time that is neither measured nor an estimate"
    if "measured" in paragraph:
        assert _MEASURED.search(paragraph), f"{preset}: a measured wall time names the machine (cores) and date"
    else:
        assert "estimate" in paragraph or "extrapolated" in paragraph, preset
    stray = [line for line in rest if _DURATION.search(line)]
    assert not stray, f"{preset}: durations outside the 'Wall time:' paragraph: {stray}"


def test_the_readme_presets_table_states_measured_figures_or_estimates() -> None:
    text = _README.read_text()
    rows = [line for line in text.split("## Presets", 1)[1].split("\n\n", 2)[1].splitlines() if line.startswith("| `")]
    assert {r.split("`")[1] for r in rows} == {p for p in available_presets() if not p.endswith("-tiny")}
    for row in rows:
        wall = row.rstrip(" |").rsplit(" | ", 1)[1]
        assert not _unlabelled_figures(wall), row
        if "measured" in wall:
            assert _MEASURED.search(wall), f"a measured figure names the machine (cores) and date: {row}"
