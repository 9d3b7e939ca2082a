"""Step ``figures``: draw the per-cell figures of logged runs from their data files (a study run with
``study.cell_figures=false`` logs the data and ``figure_inputs.json`` but no PNG).

Every per-run figure is drawn by one function, :func:`draw_figure`, from a bundle folder's files alone: what
to draw (kind, data files, title, sample counts) is recorded in ``figure_inputs.json`` by the step that wrote
the data (:func:`write_figure`), so a figure drawn later is the one the trial would have drawn. For each run
the step downloads that file and the data files it names, draws, uploads the PNGs to ``figures/`` (verified
by listing them back) and tags the run ``lgeom.figures=drawn``; a run already drawn is skipped unless
``--force``.

    lgeom figures --study synthetic-matrix --cell mlp2x16/moons/sgd
    lgeom figures --run 0123abcd... 4567ef01...
    mlflow run . -e figures -P study=synthetic-matrix --env-manager local
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from tqdm import tqdm

from lgeom import names
from lgeom.table import Table
from tracking.bundle import Bundle
from tracking.figures import probes as fig
from tracking.figures import save_figure
from tracking.figures.paths import paths_figure, plane_figure
from tracking.figures.training import sharpness_figure
from tracking.log import download_artifact, log_artifacts, set_tags, verify_uploads
from tracking.query import StudyNotFoundError, runs
from tracking.runs import attach_run
from tracking.store import Store, connect

# --- what each kind of figure is drawn from ------------------------------------------------------------------


def _npz(root: Path, spec: Mapping[str, Any]) -> dict[str, np.ndarray]:
    with np.load(root / spec["data"][0]) as arrays:
        return {k: arrays[k] for k in arrays.files}


def _json(root: Path, spec: Mapping[str, Any]) -> Any:
    return json.loads((root / spec["data"][0]).read_text())


def _plane(root: Path, spec: Mapping[str, Any]) -> Figure:
    return plane_figure(_npz(root, spec), title=spec["title"], samples=spec["samples"], curve_name=spec["curve"])


def _evaluated_rows(table: Table) -> Table:
    """The rows of a path table that the connect stage evaluated (the probe stage adds rows at other t with
    only probe columns; their loss and accuracy are NaN).
    """
    cols = [c for s in names.SPLITS for q in ("loss", "acc") if (c := names.split_column(s, q)) in table]
    if not cols:
        return table
    keep = np.zeros(len(table), dtype=bool)
    for c in cols:
        keep |= np.isfinite(np.asarray(table[c], dtype=np.float64))
    return Table({c: np.asarray(table[c])[keep] for c in table.names})


def _paths(root: Path, spec: Mapping[str, Any]) -> Figure:
    tables = {Path(f).stem: _evaluated_rows(Table.read_csv(root / f)) for f in spec["data"]}
    return paths_figure(tables, title=spec["title"], samples=spec["samples"])


def _topk(root: Path, spec: Mapping[str, Any]) -> Figure:
    return fig.topk_figure(_json(root, spec)["eigenvalues"], title=spec["title"], samples=spec["samples"])


def _density(root: Path, spec: Mapping[str, Any]) -> Figure:
    doc = _json(root, spec)
    d = doc["density"]
    return fig.spectral_density_figure(
        d["grid"],
        d["density"],
        eigenvalues=doc["eigenvalues"],
        ritz_values=[v for row in d["nodes"] for v in row],  # finite values of each run, in order
        sigma=d["sigma"],
        title=spec["title"],
        samples=spec["samples"],
    )


def _sharpness_samples(root: Path, spec: Mapping[str, Any]) -> Figure:
    doc = _json(root, spec)[spec["point"]]
    average, worst = doc["average"], doc.get("worst")
    return fig.sharpness_samples_figure(
        np.asarray(average["increases"], dtype=np.float64),
        eps=average["eps"],
        worst=None if worst is None else worst["increase"],
        title=spec["title"],
        samples=spec["samples"],
    )


def _slice1d(root: Path, spec: Mapping[str, Any]) -> Figure:
    s1 = _json(root, spec)[spec["point"]]["slice_1d"]
    return fig.slice_1d_figure(
        np.asarray(s1["alphas"]),
        np.asarray(s1["loss"]),
        acc=np.asarray(s1["acc"]),
        title=spec["title"],
        samples=spec["samples"],
    )


def _slice2d(root: Path, spec: Mapping[str, Any]) -> Figure:
    s2 = _npz(root, spec)
    return fig.slice_2d_figure(s2["alphas"], s2["betas"], s2["loss"], title=spec["title"], samples=spec["samples"])


def _surface3d(root: Path, spec: Mapping[str, Any]) -> Figure:
    s2 = _npz(root, spec)
    return fig.surface_3d_figure(s2["alphas"], s2["betas"], s2["loss"], title=spec["title"], samples=spec["samples"])


def _path_hessian(root: Path, spec: Mapping[str, Any]) -> Figure:
    table = Table.read_csv(root / spec["data"][0])
    cols = names.topk_columns(table.names)
    keep = np.isfinite(np.asarray(table[cols[0]], dtype=np.float64))
    return fig.eigenvalues_along_path_figure(
        table["t"][keep],
        {c: np.asarray(table[c], dtype=np.float64)[keep] for c in cols},
        title=spec["title"],
        samples=spec["samples"],
    )


def _pca_plane(root: Path, spec: Mapping[str, Any]) -> Figure:
    p = _npz(root, spec)
    return fig.pca_plane_figure(
        p["xs"],
        p["ys"],
        p["loss"],
        p["coords"],
        explained=p["explained_variance_ratio"],
        snapshot_loss=p["snapshot_loss"],
        projected_loss=p["projected_loss"],
        samples=spec["samples"],
    )


def _train_sharpness(root: Path, spec: Mapping[str, Any]) -> Figure:
    histories = {e: Table.read_csv(root / f) for e, f in zip(spec["endpoints"], spec["data"])}
    return sharpness_figure(histories, title=spec["title"], samples=spec["samples"])


#: Figure kind -> the function drawing it from a bundle folder and its entry in ``figure_inputs.json``.
DRAWERS: dict[str, Callable[[Path, Mapping[str, Any]], Figure]] = {
    "plane": _plane,
    "paths": _paths,
    "topk": _topk,
    "density": _density,
    "sharpness_samples": _sharpness_samples,
    "slice1d": _slice1d,
    "slice2d": _slice2d,
    "surface3d": _surface3d,
    "path_hessian": _path_hessian,
    "pca_plane": _pca_plane,
    "train_sharpness": _train_sharpness,
}


# --- recording and drawing ----------------------------------------------------------------------------------


#: A figure's name: a file name (it becomes ``figures/<name>.png``), no folder.
_FIGURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _inside(rel: Any) -> bool:
    """Whether ``rel`` is a relative POSIX path that stays inside the folder it is relative to."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return False
    path = PurePosixPath(rel)
    return not path.is_absolute() and all(part not in ("", ".", "..") for part in rel.split("/"))


def checked_inputs(specs: Any, source: str) -> dict[str, dict[str, Any]]:
    """``specs`` (a ``figure_inputs.json`` read from ``source``) when every entry is well formed: a figure name
    that is a plain file name, a known ``kind`` and ``data`` files that are relative paths inside the bundle.
    A run's artifacts are data that anyone with write access to the store could have crafted, so nothing is
    downloaded, read or written outside the folder on their say-so.

    Raises:
        ValueError: every malformed entry, naming ``source``, the figure and the bad value.
    """
    if not isinstance(specs, dict):
        raise ValueError(f"{source}: expected a mapping of figure name -> inputs, got {type(specs).__name__}")
    problems = []
    for name, spec in specs.items():
        if not isinstance(name, str) or not _FIGURE_NAME.fullmatch(name):
            problems.append(f"figure name: expected a file name (letters, digits, '_', '.', '-'), got {name!r}")
        if not isinstance(spec, dict):
            problems.append(f"figure {name!r}: expected a mapping of its inputs, got {type(spec).__name__}")
            continue
        if spec.get("kind") not in DRAWERS:
            problems.append(f"figure {name!r}: kind expected one of {', '.join(DRAWERS)}, got {spec.get('kind')!r}")
        data = spec.get("data")
        if not isinstance(data, list) or not data:
            problems.append(f"figure {name!r}: data expected a non-empty list of files, got {data!r}")
            continue
        for rel in data:
            if not _inside(rel):
                problems.append(f"figure {name!r}: data file expected a relative path inside the run, got {rel!r}")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    return specs


def figure_inputs(root: str | Path) -> dict[str, dict[str, Any]]:
    """``figure_inputs.json`` of a bundle folder: figure name -> ``{"kind", "data": [files], ...}`` (empty
    when the folder has none).

    Raises:
        ValueError: a malformed file (:func:`checked_inputs`).
    """
    path = Path(root) / names.FIGURE_INPUTS_FILE
    if not path.is_file():
        return {}
    try:
        specs = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: expected JSON, got a file that does not parse ({err})") from None
    return checked_inputs(specs, str(path))


def write_figure(
    bundle: Bundle, name: str, kind: str, data: Sequence[str], *, draw: bool = True, **inputs: Any
) -> None:
    """Record figure ``name`` in the bundle's ``figure_inputs.json`` (its ``kind``, the ``data`` files it is
    drawn from, relative to the bundle, and the other arguments, e.g. ``title`` and ``samples``) and, with
    ``draw``, draw it now with :func:`draw_figure` (``figures/<name>.png``).

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind not in DRAWERS:
        raise ValueError(f"figure kind: expected one of {', '.join(DRAWERS)}, got {kind!r}")
    spec = {"kind": kind, "data": list(data), **inputs}
    bundle.write_json(names.FIGURE_INPUTS_FILE, {**figure_inputs(bundle.root), name: spec})
    if draw:
        draw_figure(bundle.root, name)


def draw_figure(root: str | Path, name: str) -> Path:
    """Draw figure ``name`` of the bundle folder ``root`` from its data files as ``figure_inputs.json``
    records it; returns ``<root>/figures/<name>.png``.

    Raises:
        KeyError: ``name`` is not in ``figure_inputs.json``.
        FileNotFoundError: a data file it needs is missing.
    """
    root = Path(root)
    specs = figure_inputs(root)
    if name not in specs:
        raise KeyError(
            f"figure: expected one of {', '.join(specs) or 'none'} in {root / names.FIGURE_INPUTS_FILE}, got {name!r}"
        )
    spec = specs[name]
    for f in spec["data"]:
        if not (root / f).is_file():
            raise FileNotFoundError(f"figure {name}: expected its data file {f} in {root}, got nothing there")
    return save_figure(DRAWERS[spec["kind"]](root, spec), root / names.figure_artifact(name))


def draw_figures(root: str | Path, *, progress: bool = False) -> list[Path]:
    """Draw every figure ``figure_inputs.json`` of the bundle folder ``root`` records; returns the PNGs."""
    return [draw_figure(root, name) for name in tqdm(figure_inputs(root), desc="figures", disable=not progress)]


def data_files(specs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The data files (relative paths) the figures of ``specs`` are drawn from, each once."""
    return sorted({f for spec in specs.values() for f in spec["data"]})


# --- the step: drawing logged runs -----------------------------------------------------------------------------


def _not_found(err: Exception) -> bool:
    return getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def run_tags_of(store: Store, run_id: str) -> dict[str, str]:
    """The tags of run ``run_id``.

    Raises:
        ValueError: no such run in ``store``.
    """
    try:
        return dict(store.client().get_run(run_id).data.tags)
    except Exception as err:
        if _not_found(err):
            raise ValueError(f"--run: expected the id of a run in {store.describe()}, got {run_id!r}") from None
        raise


def study_cell_runs(store: Store, study: str, cell: str | None = None) -> list[str]:
    """The FINISHED cell runs of ``study`` (the child runs of its study runs, of every invocation: a rerun
    reuses finished cells without new runs, so these are the runs ``lgeom report`` reads), or those of ``cell``.

    Raises:
        ValueError: no such study, no finished cell run, or none of ``cell`` (naming the cells there are).
    """
    try:
        children = runs(study, store=store, stage=names.STAGE_TRIAL, children_only=True)
    except StudyNotFoundError as err:
        raise ValueError(str(err)) from None
    if children.empty:
        raise ValueError(f"--study: expected finished cell runs of {study!r} (logged by lgeom study), got none")
    cells = sorted({str(c) for c in children["cell"]})
    if cell is not None:
        children = children[children["cell"] == cell]
        if children.empty:
            raise ValueError(f"--cell: expected one of {', '.join(cells)} of {study!r}, got {cell!r}")
    return [str(r) for r in children["run_id"]]


def _download(store: Store, run_id: str, rel: str, root: str) -> None:
    """Download artifact ``rel`` of ``run_id`` to ``<root>/<rel>`` (artifact stores differ in whether they
    keep the folders of a single file's path).
    """
    target = Path(root) / rel
    local = download_artifact(store, run_id, rel, target.parent)
    if local.resolve() != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(local, target)


def draw_run(store: Store, run_id: str) -> list[str]:
    """Draw the figures of logged run ``run_id`` from its data artifacts, upload them to ``figures/``, verify
    the uploads and tag the run ``lgeom.figures=drawn``; returns the artifact paths of the figures.
    """
    with tempfile.TemporaryDirectory(prefix="lgeom-figures-") as tmp:
        _download(store, run_id, names.FIGURE_INPUTS_FILE, tmp)
        for f in data_files(figure_inputs(tmp)):
            _download(store, run_id, f, tmp)
        pngs = draw_figures(tmp)
        run = attach_run(store, run_id)
        uploaded = log_artifacts(run, [(p, names.FIGURES_DIR) for p in pngs])
    verify_uploads(run)
    set_tags(run, {names.TAG_FIGURES: names.FIGURES_DRAWN})
    return sorted(uploaded)


def main(
    *,
    run_ids: Sequence[str] = (),
    study: str | None = None,
    cell: str | None = None,
    force: bool = False,
    store: Store | None = None,
) -> dict[str, list[str]]:
    """Draw the figures of ``run_ids`` or of ``study``'s cell runs (only ``cell``); every run is checked
    before anything is drawn. Runs tagged ``lgeom.figures=drawn`` are skipped unless ``force``.

    Returns:
        run id -> artifact paths of the figures uploaded (runs skipped are left out).

    Raises:
        ValueError: both or neither of runs and study, ``cell`` without ``study``, an unknown run, study or
            cell, or a run without a well-formed ``figure_inputs.json`` (nothing is written then).
    """
    if bool(run_ids) == (study is not None):
        raise ValueError(
            "figures: expected --run RUN_ID ... or --study NAME, got " + ("both" if run_ids else "neither")
        )
    if cell is not None and study is None:
        raise ValueError(f"--cell: expected it with --study, got --cell {cell!r} with --run")
    store = store or connect()
    targets = list(run_ids) if run_ids else study_cell_runs(store, study or "", cell)
    todo = []
    for run_id in targets:
        tags = run_tags_of(store, run_id)
        if tags.get(names.TAG_FIGURES) == names.FIGURES_DRAWN and not force:
            print(f"figures: run {run_id} ({tags.get(names.TAG_CELL, '')}): already drawn, skipped (--force redraws)")
            continue
        listed = {i.path for i in attach_run(store, run_id).list_artifacts(None)}
        if names.FIGURE_INPUTS_FILE not in listed:
            raise ValueError(
                f"--run: expected a run with {names.FIGURE_INPUTS_FILE} (a study trial's run), got run {run_id} "
                "without it"
            )
        with tempfile.TemporaryDirectory(prefix="lgeom-figures-") as tmp:
            _download(store, run_id, names.FIGURE_INPUTS_FILE, tmp)
            try:
                figure_inputs(tmp)
            except ValueError as err:
                raise ValueError(f"--run: run {run_id}'s {err}".replace(tmp + "/", "")) from None
        todo.append(run_id)
    done = {}
    for run_id in tqdm(todo, desc="figures", unit="run", disable=len(todo) < 2):
        done[run_id] = draw_run(store, run_id)
        print(f"figures: run {run_id}: {len(done[run_id])} figures uploaded to {names.FIGURES_DIR}/")
    return done


def add_arguments(parser: Any, step: str) -> None:
    """``--run`` or ``--study`` (with ``--cell``), ``--force``, ``--tracking-uri``."""
    parser.add_argument("--run", nargs="+", default=None, metavar="RUN_ID", help="the runs to draw")
    parser.add_argument("--study", default=None, help="draw the finished cell runs of this study")
    parser.add_argument("--cell", default=None, help="with --study: only this cell (e.g. mlp2x16/moons/sgd)")
    parser.add_argument("--force", action="store_true", help="redraw runs already tagged lgeom.figures=drawn")
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or ./mlflow.db)"
    )


def cli(cfg: Any, args: Any) -> int:
    """``lgeom figures``: draw, upload and tag; exit status 0."""
    main(
        run_ids=[r for r in args.run or () if r],  # MLproject passes --run= when none is given
        study=args.study,
        cell=args.cell,
        force=args.force,
        store=connect(args.tracking_uri),
    )
    return 0


if __name__ == "__main__":
    from pipelines.cli import main as cli_main

    sys.exit(cli_main(["figures", *sys.argv[1:]]))
