"""Preset wall times: each preset run as ``lgeom study`` would run it, timed stage by stage from MLflow.

Every preset named runs through the real study (``pipelines.study.main``: a local Ray, one trial per cell,
the embedded sqlite MLflow store in a temporary folder). The seconds per stage are then read back from the
trials' child runs (``trial/train_s``, ``trial/fit_s``, ``trial/path_eval_s``, ``trial/plane_s``,
``trial/connect_s``, ``trial/probe_s``, ``trial/log_s``, ``trial/wall_time_s``; see
``tracking.query.stage_times``), not timed from outside. Printed as Markdown tables; with ``--out`` each
preset's table replaces its block in that file (``bench/RESULTS.md``), so a rerun after a change refreshes
only the presets it ran.

    PYTHONPATH=. python3 bench/presets.py                         # the four -tiny presets
    PYTHONPATH=. python3 bench/presets.py --presets quick-tiny,synthetic-matrix-sample --out bench/RESULTS.md
    PYTHONPATH=. python3 bench/presets.py --real --substitute-fashion-mnist --random-image-files

Presets: any name in ``pipelines/presets`` plus ``synthetic-matrix-sample``: 10 real cells of
``synthetic-matrix`` (its five MLPs x {SGD, weight decay 0; Adam, weight decay 1e-3}, on moons with ReLU and
seeds 0/1, the preset's full epochs, points and probes), from which the full 720-cell matrix is extrapolated
(per-model mean seconds per cell x that model's cells in the matrix, divided by the trials that run at
once, plus the sample study's fixed cost). ``--real`` adds ``quick``, ``synthetic-matrix-sample``,
``mnist-arch`` and ``resnet-depth`` (the last two only where their data is under ``data.root`` /
``$LGEOM_DATA``). A preset whose image data is missing is skipped, saying why, unless
``--substitute-fashion-mnist`` (MNIST cells on the real Fashion-MNIST, same shape and sizes, from
``/usr/share/datasets/fashion-mnist``) or ``--random-image-files`` (``-tiny`` presets only: files in the real
MNIST / CIFAR formats holding random pixels; the compute does not depend on the pixel values) says what to
run instead.

Needs the full install (mlflow, ray): run it in the project's .venv.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TINY = ("quick-tiny", "mnist-arch-tiny", "resnet-depth-tiny", "synthetic-matrix-tiny")
SAMPLE = "synthetic-matrix-sample"
REAL = ("quick", SAMPLE, "mnist-arch", "resnet-depth")
#: The cells of ``synthetic-matrix`` that ``synthetic-matrix-sample`` runs (a sub-matrix of the preset's).
SAMPLE_MATRIX = (
    'study.matrix={"model": [{"depth": 1, "width": 50}, {"depth": 1, "width": 500}, {"depth": 2, "width": 100}, '
    '{"depth": 4, "width": 100}, {"depth": 4, "width": 250}], '
    '"train": [{"optimizer": "sgd", "lr": 0.05, "weight_decay": 0.0}, '
    '{"optimizer": "adam", "lr": 0.005, "weight_decay": 0.001}]}'
)
#: Column titles of the stage table (``tracking.query.STAGE_TIME_COLUMNS``).
TITLES = {
    "train": "train A+B",
    "fit": "curve fits",
    "path_eval": "path eval",
    "plane": "planes",
    "connect_other": "connect, rest",
    "probe": "probes",
    "log": "logging",
    "other": "run set-up",
    "total": "total",
    "compute_cpu": "compute, CPU s",
}
MARK = "bench/presets.py"


class Skipped(Exception):
    """A preset that cannot run here (its message says why)."""


@dataclass
class Measured:
    """One preset's study: its stage table (one row per cell), wall time and how it was run."""

    preset: str
    cells: pd.DataFrame
    study_wall_s: float
    concurrent: int
    data_note: str = ""
    failed: dict[str, str] = field(default_factory=dict)
    extrapolation: str = ""
    probes: pd.DataFrame | None = None


# --- the machine and the code --------------------------------------------------------------------------------


def machine_line() -> str:
    """``N cores (nproc), <CPU model>, load average x/y/z``, torch version."""
    import torch

    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = "/".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{os.cpu_count()} cores (nproc), {model}, {platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, CPU only; load average {load} (1/5/15 min)"
    )


def git_commit() -> str:
    """Short commit of the checkout, ``+dirty`` when it has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


# --- data ----------------------------------------------------------------------------------------------------


def data_overrides(
    preset: str, data_root: Path, *, substitute_fashion_mnist: bool, random_files: bool
) -> tuple[list[str], str]:
    """Overrides that let ``preset`` run on the data present, and a note saying what it ran on.

    Raises:
        Skipped: image data missing and no substitute asked for.
    """
    from lgeom.data.vision import DEBIAN_FASHION_MNIST, EXPECTED_FILES, default_root
    from pipelines.config import expand_matrix, load_config

    cfg = load_config(_preset_file(preset))
    needed = sorted({c.config.data.name for c in expand_matrix(cfg)} & set(EXPECTED_FILES))
    root = default_root(cfg.data.root)
    missing = [n for n in needed if not all((root / EXPECTED_FILES[n][0] / f).exists() for f in EXPECTED_FILES[n][1])]
    if not missing:
        return [], f"data: {', '.join(needed) or 'generated'}{f' under {root}' if needed else ''}"
    if missing == ["mnist"] and substitute_fashion_mnist and Path(DEBIAN_FASHION_MNIST).is_dir():
        return ["data.name=fashion-mnist", f"data.root={data_root}"], (
            "data: Fashion-MNIST (real, /usr/share/datasets/fashion-mnist) in place of MNIST, which is absent"
        )
    if random_files and preset.endswith("-tiny"):
        sys.path.insert(0, str(ROOT))
        from tests.lgeom.vision_files import write_cifar, write_mnist

        n_train, n_test = cfg.data.options.get("n_train") or 64, cfg.data.options.get("n_test") or 32
        for name in missing:
            if name == "mnist":
                write_mnist(data_root, n_train=n_train, n_test=n_test)
            elif name == "fashion-mnist":
                write_mnist(data_root, n_train=n_train, n_test=n_test, folder="FashionMNIST")
            else:
                write_cifar(data_root, name, per_batch=-(-n_train // 5), n_test=n_test)
        return [f"data.root={data_root}"], (
            f"data: {', '.join(missing)} absent here; files in their real format with random pixels "
            f"({n_train} train / {n_test} test images)"
        )
    if missing == ["mnist"]:
        hint = f"--substitute-fashion-mnist runs it on Fashion-MNIST where {DEBIAN_FASHION_MNIST} exists"
    elif preset.endswith("-tiny"):
        hint = "--random-image-files runs it on files of random pixels"
    else:
        hint = "no stand-in for a full preset's image data"
    raise Skipped(f"{', '.join(missing)} not under {root} (data.root / $LGEOM_DATA); {hint}")


def _preset_file(preset: str) -> str:
    return "synthetic-matrix" if preset == SAMPLE else preset


# --- running ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _embedded_store_in(folder: Path) -> Iterator[None]:
    """Work in ``folder`` with the embedded store (``./mlflow.db``), restoring the cwd and environment."""
    saved = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "RAY_ADDRESS")}
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(cwd)
        os.environ.update({k: v for k, v in saved.items() if v is not None})


def run_preset(preset: str, overrides: Sequence[str], folder: Path, data_note: str) -> Measured:
    """Run ``preset`` as a study in ``folder`` and read its stage table back from MLflow."""
    from pipelines.config import load_config
    from pipelines.study import StudyFailed
    from pipelines.study import main as run_study
    from tracking import query
    from tracking.store import resolve_store

    extra = [SAMPLE_MATRIX, f"name={SAMPLE}"] if preset == SAMPLE else []
    with _embedded_store_in(folder):
        cfg = load_config(_preset_file(preset), [*extra, *overrides, f"output_dir={folder / 'outputs'}"])
        failed: dict[str, str] = {}
        t0 = time.perf_counter()
        try:
            run_study(cfg, report_dir=folder / "report")
        except StudyFailed as err:
            failed = dict(err.summary.failed)
        wall = time.perf_counter() - t0
        store = resolve_store()
        cells = query.stage_times(cfg.name, store=store)
        probes = probe_times(store, query.runs(cfg.name, store=store, stage="trial"), cells)
    per_trial = max(cfg.study.cpu, 1e-9)
    concurrent = max(1, min(int((os.cpu_count() or 1) // per_trial), cfg.study.max_concurrent or 10**6))
    return Measured(preset, cells, wall, concurrent, data_note, failed, probes=probes)


def probe_times(store: object, trials: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The probe stage of each cell split by probe: the seconds in the run's ``probes.json`` (per point a, b,
    mid) summed over the points, and ``rest`` = the stage's time less those (figures, the Hessian along every
    path, the PCA plane and effective dimensionality).
    """
    import json

    from lgeom import names

    client = store.client()  # type: ignore[attr-defined]
    rows = []
    for _, run in trials.drop_duplicates("cell").iterrows():
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = client.download_artifacts(run["run_id"], names.PROBES_FILE, tmp)
            except Exception:  # noqa: BLE001 - a run without the file: no split for that cell
                continue
            doc = json.loads(Path(local).read_text())
        probe_s = cells.set_index("cell")["probe"].get(run["cell"], float("nan"))
        rows.append({"cell": run["cell"], **probe_split(doc, probe_s)})
    return pd.DataFrame(rows).fillna(0.0).sort_values("cell", ignore_index=True) if rows else pd.DataFrame()


def probe_split(doc: Mapping[str, Mapping], probe_s: float) -> dict[str, float]:
    """Seconds per probe (``hessian``, ``trace`` ...) summed over the points of a ``probes.json`` document, then
    ``rest`` = ``probe_s`` less their sum.
    """
    out: dict[str, float] = {}
    for point in doc.values():
        for name, seconds in (point.get("timings") or {}).items():
            out[name] = out.get(name, 0.0) + float(seconds)
    out["rest"] = probe_s - sum(out.values())
    return out


# --- reporting -------------------------------------------------------------------------------------------------


def stage_markdown(cells: pd.DataFrame) -> str:
    """The stage table as Markdown: one row per cell (seconds), a sum row and a share-of-total row."""
    cols = [c for c in TITLES if c in cells.columns]
    lines = [
        "| cell | " + " | ".join(TITLES[c] for c in cols) + " |",
        "| --- |" + " --- |" * len(cols),
    ]
    for _, row in cells.iterrows():
        lines.append(f"| {row['cell']} | " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    if len(cells) > 1:
        sums = cells[cols].sum(min_count=1)
        lines.append("| **sum over cells** | " + " | ".join(f"**{_fmt(sums[c])}**" for c in cols) + " |")
    total = cells["total"].sum(min_count=1)
    if pd.notna(total) and total > 0:
        share = cells[cols].sum(min_count=1) / total * 100
        shares = [_pct(share[c]) if c != "compute_cpu" else "-" for c in cols]
        lines.append("| share of total | " + " | ".join(shares) + " |")
    return "\n".join(lines)


#: Above this many cells a block shows one row per model (the cells' sums) instead of one row per cell.
MAX_CELL_ROWS = 40


def model_of(cells: pd.Series) -> pd.Series:
    """The model label of each cell name (its first part: ``mlp4x250`` of ``mlp4x250/moons/sgd/...``)."""
    return cells.str.split("/").str[0]


def by_model(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (one row per cell, named ``<model>/...``) summed per model: one row per model, its ``cell``
    column ``"<model> (<n> cells)"``, the numeric columns summed over that model's cells.
    """
    model = model_of(frame["cell"])
    numeric = frame.drop(columns="cell").apply(pd.to_numeric, errors="coerce")
    sums = numeric.groupby(model, sort=True).sum(min_count=1)
    counts = model.value_counts()
    return sums.reset_index(names="cell").assign(cell=lambda d: [f"{m} ({counts[m]} cells)" for m in d["cell"]])


def _fmt(v: float) -> str:
    return "-" if pd.isna(v) else f"{v:.1f}"


def _pct(v: float) -> str:
    return "-" if pd.isna(v) else f"{v:.0f} %"


def extrapolate(sample: pd.DataFrame, matrix_cells: Mapping[str, int], concurrent: int, fixed_s: float) -> dict:
    """Extrapolate a sample of cells to a whole matrix.

    Args:
        sample: :func:`tracking.query.stage_times` of the sample (cells named ``<model>/...``).
        matrix_cells: cells of the full matrix per model label (the first part of a cell name).
        concurrent: trials that run at once.
        fixed_s: the study's cost outside its trials (Ray, Tune, parent run, report).

    Returns:
        ``{"cell_seconds": per-stage seconds summed over the matrix (pd.Series), "wall_s": extrapolated wall
        time, "per_model": mean seconds per cell by model (pd.Series)}``.

    Raises:
        ValueError: a model of the matrix that the sample has no cell of.
    """
    cols = [c for c in TITLES if c in sample.columns]
    by_model = sample.assign(model=model_of(sample["cell"])).groupby("model")[cols].mean()
    absent = sorted(set(matrix_cells) - set(by_model.index))
    if absent:
        raise ValueError(f"sample: expected cells of every model of the matrix, got none of {', '.join(absent)}")
    weights = pd.Series(matrix_cells, dtype=float)
    cell_seconds = by_model.loc[weights.index].mul(weights, axis=0).sum()
    out = {
        "cell_seconds": cell_seconds,
        "wall_s": cell_seconds["total"] / concurrent + fixed_s,
        "per_model": by_model["total"],
    }
    if "compute_cpu" in cell_seconds and pd.notna(cell_seconds["compute_cpu"]) and cell_seconds["compute_cpu"] > 0:
        # the stages' CPU seconds in place of their wall seconds: what an unshared machine's cells would take
        compute = cell_seconds[["train", "fit", "path_eval", "plane", "connect_other", "probe"]].sum()
        out["wall_cpu_s"] = (cell_seconds["total"] - compute + cell_seconds["compute_cpu"]) / concurrent + fixed_s
    return out


def sample_extrapolation(m: Measured) -> str:
    """The full synthetic matrix extrapolated from the measured sample, as Markdown lines."""
    from pipelines.config import expand_matrix, load_config

    full = expand_matrix(load_config("synthetic-matrix"))
    counts = model_of(pd.Series([c.name for c in full])).value_counts(sort=False).to_dict()
    fixed = max(m.study_wall_s - m.cells["total"].sum() / m.concurrent, 0.0)
    ex = extrapolate(m.cells, counts, m.concurrent, fixed)
    stages = ex["cell_seconds"]
    share = ", ".join(
        f"{TITLES[c]} {100 * stages[c] / stages['total']:.0f} %" for c in TITLES if c not in ("total", "compute_cpu")
    )
    cpu = (
        f" Counting the stages' CPU seconds instead of their wall seconds (what the cells would take with a core "
        f"each to themselves): **{ex['wall_cpu_s'] / 3600:.2f} h wall**."
        if "wall_cpu_s" in ex
        else ""
    )
    per_model = ", ".join(f"{k} {v:.1f} s" for k, v in ex["per_model"].items())
    return (
        f"**Extrapolated from {len(m.cells)} measured cells** to the {len(full)} cells of `synthetic-matrix` "
        f"({', '.join(f'{k} x {v}' for k, v in counts.items())}): {stages['total'] / 3600:.2f} cell-hours, "
        f"**{ex['wall_s'] / 3600:.2f} h wall with {m.concurrent} trials at once** (plus the sample study's fixed "
        f"{fixed:.0f} s; the report of 720 cells is not part of the sample). Mean seconds per cell by model: "
        f"{per_model}. Where the time goes, over the matrix: {share}.{cpu}"
    )


def preset_block(m: Measured, machine: str, commit: str, date: str, *, title: str | None = None) -> str:
    """One preset's Markdown block (what ``--out`` writes between its markers), headed ``title`` (default the
    preset's name).
    """
    head = (
        f"### `{title or m.preset}`\n\n"
        f"Measured {date} at commit `{commit}` on {machine}. {len(m.cells)} cell(s), {m.concurrent} trial(s) at "
        f"once; **study wall time {m.study_wall_s:.0f} s** (Ray start, trials, report). {m.data_note}."
    )
    if m.failed:
        head += " FAILED cells: " + "; ".join(f"{c}: {e}" for c, e in m.failed.items())
    grouped = len(m.cells) > MAX_CELL_ROWS
    cells = by_model(m.cells) if grouped else m.cells
    probes = by_model(m.probes) if grouped and m.probes is not None and not m.probes.empty else m.probes
    per = (
        "summed over each model's cells (from their child runs'"
        if grouped
        else "of each cell's trial (from its child run's"
    )
    body = stage_markdown(cells)
    if probes is not None and not probes.empty:
        cols = [c for c in probes.columns if c != "cell"]
        body += (
            "\n\nThe probe stage split by probe (seconds from each run's `probes.json`, summed over points a, b, mid"
            + (" and over each model's cells" if grouped else "")
            + "; rest = figures, Hessian along every path, PCA plane and effective dimensionality):\n\n"
            + "| cell | "
            + " | ".join(cols)
            + " |\n| --- |"
            + " --- |" * len(cols)
            + "\n"
            + "\n".join(f"| {r['cell']} | " + " | ".join(_fmt(r[c]) for c in cols) + " |" for _, r in probes.iterrows())
        )
    tail = f"\n\n{m.extrapolation}" if m.extrapolation else ""
    return f"{head}\n\nSeconds per stage {per} `trial/*` metrics):\n\n{body}{tail}"


def update_results(text: str, preset: str, block: str, section: str) -> str:
    """``text`` with ``preset``'s block replaced (or appended to ``section``, created at the end if absent)."""
    begin, end = f"<!-- {MARK}: {preset} -->", f"<!-- /{MARK}: {preset} -->"
    new = f"{begin}\n{block}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _m: new, text)
    if section not in text:
        return text.rstrip("\n") + f"\n\n{section}\n\n{new}\n"
    start = text.index(section) + len(section)
    nxt = text.find("\n## ", start)
    at = len(text.rstrip("\n")) if nxt < 0 else nxt
    return text[:at].rstrip("\n") + f"\n\n{new}\n" + text[at:]


SECTION = "## Preset wall times (issue 15, item 1)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=",".join(TINY), help=f"comma-separated (default {','.join(TINY)})")
    parser.add_argument("--real", action="store_true", help=f"also {', '.join(REAL)} where their data is present")
    parser.add_argument("--out", type=Path, help="update each preset's block in this Markdown file")
    parser.add_argument("--substitute-fashion-mnist", action="store_true", help="MNIST cells on Fashion-MNIST")
    parser.add_argument("--random-image-files", action="store_true", help="-tiny presets: random MNIST/CIFAR files")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every preset run (repeatable), e.g. to pick cells: study.matrix.model=[...]",
    )
    parser.add_argument(
        "--block",
        default=None,
        metavar="NAME",
        help="with one preset: the name of its block in --out (default the preset's), so that runs of different "
        "cells of one preset keep a block each, e.g. --block 'mnist-arch: cnn16'",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    presets = [p for p in args.presets.split(",") if p] + [p for p in REAL if args.real]
    presets = list(dict.fromkeys(presets))
    if args.block is not None and (len(presets) != 1 or not args.block.strip() or "--" in args.block):
        parser.error(
            f"--block: expected a name (without '--') and exactly one preset, got {args.block!r} for {presets}"
        )
    commit = git_commit()
    print(f"machine: {machine_line()}\ncommit: {commit}\n")
    skipped: dict[str, str] = {}
    for preset in presets:
        with tempfile.TemporaryDirectory(prefix=f"lgeom-bench-{preset}-") as tmp:
            folder = Path(tmp)
            try:
                overrides, note = data_overrides(
                    preset,
                    folder / "data",
                    substitute_fashion_mnist=args.substitute_fashion_mnist,
                    random_files=args.random_image_files,
                )
            except Skipped as why:
                skipped[preset] = str(why)
                print(f"SKIPPED {preset}: {why}\n")
                continue
            machine = machine_line()  # the load right before this preset
            date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
            m = run_preset(preset, [*overrides, *args.override], folder, note)
            if args.override:
                m.data_note += f"; overrides: {' '.join(f'`{o}`' for o in args.override)}"
        if preset == SAMPLE:
            m.extrapolation = sample_extrapolation(m)
        block = preset_block(m, machine, commit, date, title=args.block)
        print(f"\n{block}\n\nload average after: {'/'.join(f'{v:.2f}' for v in os.getloadavg())}\n")
        if args.out:
            args.out.write_text(
                update_results(args.out.read_text() if args.out.exists() else "", args.block or preset, block, SECTION)
            )
    for preset, why in skipped.items():
        print(f"skipped {preset}: {why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
