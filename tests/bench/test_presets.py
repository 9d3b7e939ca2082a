"""``bench/presets.py``'s reporting: the stage table in Markdown, each preset's block replaced in place in
``bench/RESULTS.md`` on a rerun, and the extrapolation of a sample of cells to a whole matrix. (Running the
presets themselves takes minutes: that is the script's job, not a test's.)
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.presets import (
    MAX_CELL_ROWS,
    SECTION,
    Measured,
    extrapolate,
    main,
    preset_block,
    probe_split,
    stage_markdown,
    update_results,
)
from tracking.query import STAGE_TIME_COLUMNS


def _cells(rows: dict[str, dict[str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"cell": c, **{k: v.get(k, 0.0) for k in STAGE_TIME_COLUMNS}} for c, v in rows.items()])


def test_stage_table_has_a_row_per_cell_a_sum_and_shares() -> None:
    table = stage_markdown(
        _cells({"mlp1x50/moons/sgd": {"train": 2.0, "plane": 6.0, "total": 8.0}, "mlp4x250/moons/sgd": {"total": 2.0}})
    )
    lines = table.splitlines()
    assert lines[0].startswith("| cell | train A+B | curve fits | path eval | planes |") and len(lines) == 6
    assert lines[2] == "| mlp1x50/moons/sgd | 2.0 | 0.0 | 0.0 | 6.0 | 0.0 | 0.0 | 0.0 | 0.0 | 8.0 | 0.0 |"
    assert lines[4].startswith("| **sum over cells** | **2.0** |") and lines[4].endswith("**10.0** | **0.0** |")
    assert lines[5] == "| share of total | 20 % | 0 % | 0 % | 60 % | 0 % | 0 % | 0 % | 0 % | 100 % | - |"
    missing = stage_markdown(_cells({"old/moons/sgd": {"total": 3.0}}).assign(train=math.nan))
    assert "| old/moons/sgd | - |" in missing  # a trial logged before stage timing


def test_a_big_matrix_is_shown_one_row_per_model_with_its_cells_summed() -> None:
    n = MAX_CELL_ROWS + 1
    stages = {f"mlp1x50/moons/sgd/seeds={i}": {"train": 1.0, "total": 2.0} for i in range(n - 1)}
    stages["mlp4x250/moons/sgd/seeds=0"] = {"train": 5.0, "total": 10.0}
    probes = pd.DataFrame(
        [{"cell": c, "hessian": 0.5, "rest": 0.25} for c in sorted(stages)], columns=["cell", "hessian", "rest"]
    )
    block = preset_block(
        Measured("synthetic-matrix", _cells(stages), 99.0, 2, "data: generated", probes=probes), "m", "c", "d"
    )
    rows = [line for line in block.splitlines() if line.startswith("| mlp")]
    assert len(rows) == 4  # two models in each of the two tables, no row per cell
    assert rows[0].startswith(f"| mlp1x50 ({n - 1} cells) | {n - 1:.1f} |") and f"| {2.0 * (n - 1):.1f} |" in rows[0]
    assert rows[1].startswith("| mlp4x250 (1 cells) | 5.0 |")
    assert rows[2] == f"| mlp1x50 ({n - 1} cells) | {0.5 * (n - 1):.1f} | {0.25 * (n - 1):.1f} |"
    assert "summed over each model's cells" in block and f"{n} cell(s)" in block
    few = preset_block(
        Measured("quick", _cells(dict(list(stages.items())[:3])), 9.0, 2, "data: generated"), "m", "c", "d"
    )
    assert "| mlp1x50/moons/sgd/seeds=0 |" in few and "of each cell's trial" in few


def test_a_rerun_replaces_only_its_presets_block() -> None:
    text = "# Benchmark results\n\n## Earlier section\n\nkept\n"
    once = update_results(text, "quick-tiny", "quick v1", SECTION)
    assert once.startswith(text.rstrip("\n")) and SECTION in once and "quick v1" in once
    both = update_results(once, "resnet-depth-tiny", "resnet v1", SECTION)
    again = update_results(both + "\n## Later section\n\nalso kept\n", "quick-tiny", "quick v2", SECTION)
    assert "quick v1" not in again and again.count("quick v2") == 1 and "resnet v1" in again
    assert again.index("quick v2") < again.index("resnet v1") < again.index("## Later section")
    assert "kept" in again and "also kept" in again and again.count(SECTION) == 1
    added = update_results(again, "synthetic-matrix-tiny", "synthetic v1", SECTION)
    assert added.index("synthetic v1") < added.index("## Later section")  # new blocks stay inside the section


def test_a_sample_extrapolates_per_model_to_the_matrix() -> None:
    sample = _cells(
        {
            "mlp1x50/moons/sgd": {"train": 10.0, "plane": 2.0, "total": 20.0},
            "mlp1x50/moons/adam": {"train": 14.0, "plane": 2.0, "total": 30.0},
            "mlp4x250/moons/sgd": {"train": 50.0, "plane": 10.0, "total": 100.0},
        }
    )
    out = extrapolate(sample, {"mlp1x50": 144, "mlp4x250": 144}, concurrent=2, fixed_s=30.0)
    assert out["per_model"].to_dict() == {"mlp1x50": 25.0, "mlp4x250": 100.0}
    assert out["cell_seconds"]["total"] == pytest.approx(144 * 25 + 144 * 100)
    assert out["cell_seconds"]["train"] == pytest.approx(144 * 12 + 144 * 50)
    assert out["wall_s"] == pytest.approx((144 * 25 + 144 * 100) / 2 + 30)
    assert "wall_cpu_s" not in out  # no CPU seconds in this sample
    cpu = sample.assign(compute_cpu=[6.0, 6.0, 40.0], other=[8.0, 14.0, 40.0])  # compute = total - other
    timed = extrapolate(cpu, {"mlp1x50": 144, "mlp4x250": 144}, concurrent=2, fixed_s=30.0)
    # per cell: total - compute wall + compute CPU = other + CPU; model means 17 and 80
    assert timed["wall_cpu_s"] == pytest.approx((144 * 17 + 144 * 80) / 2 + 30)
    with pytest.raises(ValueError, match="got none of mlp2x100"):
        extrapolate(sample, {"mlp1x50": 1, "mlp2x100": 1}, concurrent=1, fixed_s=0.0)


def test_probe_split_sums_each_probe_over_the_points_and_keeps_the_rest() -> None:
    doc = {
        "a": {"summary": {}, "timings": {"hessian": 1.0, "trace": 2.0}},
        "b": {"summary": {}, "timings": {"hessian": 3.0, "slices": 0.5}},
        "mid": {"summary": {}, "timings": {}},
    }
    assert probe_split(doc, 10.0) == {"hessian": 4.0, "trace": 2.0, "slices": 0.5, "rest": 3.5}


def test_a_named_block_keeps_one_cells_run_beside_the_presets_own(capsys: pytest.CaptureFixture[str]) -> None:
    text = update_results("", "mnist-arch", "all cells", SECTION)
    cnn = update_results(text, "mnist-arch: cnn16", "the cnn cell", SECTION)
    again = update_results(cnn, "mnist-arch: cnn16", "the cnn cell, rerun", SECTION)
    assert "all cells" in again and "the cnn cell, rerun" in again and "the cnn cell\n" not in again
    for argv in (
        ["--presets", "quick-tiny,mnist-arch-tiny", "--block", "x"],
        ["--presets", "quick-tiny", "--block", "a--b"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "--block: expected a name (without '--') and exactly one preset" in capsys.readouterr().err
