"""Per-cell figures drawn from a bundle folder's files alone (``pipelines.figures``): a trial records what each
figure is drawn from, and drawing later from the data files gives the very PNGs the trial drew; with
``study.cell_figures=false`` a trial writes the same data and no PNG.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lgeom import names
from lgeom.table import Table
from pipelines.config import expand_matrix, load_config
from pipelines.figures import (
    checked_inputs,
    data_files,
    draw_figure,
    draw_figures,
    figure_inputs,
    main,
    write_figure,
)
from pipelines.probe import merge_on_t
from pipelines.trial import SHARPNESS_FIGURE, StageLog, run_stages
from tracking.bundle import Bundle, log_bundle
from tracking.runs import tracked_run

CELL = "mlp2x16/moons/sgd"
#: A seconds-scale cell with every kind of figure: tracked sharpness (train_sharpness), a trajectory (PCA
#: plane), aligned paths, small probe grids.
TINY = [
    "train.track_hessian_every=1",
    "train.snapshot_every=5",
    "curve.align=true",
    "probe.density_steps=6",
    "probe.slice_points=5",
    "probe.slice2d_points=4",
]


def run_trial(root: Path, overrides: list[str]) -> Bundle:
    """The computing part of a study trial of :data:`CELL` (train, connect, probe) into ``root/bundle``."""
    cfg = next(c.config for c in expand_matrix(load_config("quick-tiny", [*TINY, *overrides])) if c.name == CELL)
    bundle = Bundle(root / "bundle")
    run_stages(cfg, CELL, root, bundle, StageLog(root / "stages.json"))
    return bundle


@pytest.fixture(scope="module")
def trials(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    """The same cell run twice: figures drawn in the trial, and deferred."""
    return {
        "drawn": run_trial(tmp_path_factory.mktemp("drawn"), []),
        "deferred": run_trial(tmp_path_factory.mktemp("deferred"), ["study.cell_figures=false"]),
    }


def pngs(root: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted((root / names.FIGURES_DIR).glob("*.png"))}


def data_only_copy(src: Path, dst: Path) -> Path:
    """``figure_inputs.json`` and the data files it names, nothing else (what ``lgeom figures`` downloads)."""
    specs = figure_inputs(src)
    for rel in [names.FIGURE_INPUTS_FILE, *data_files(specs)]:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)
    return dst


def expected_figures(bundle: Bundle) -> set[str]:
    """Every per-cell figure of a study trial, from the data it wrote."""
    planes = {p.stem for p in (bundle.root / names.PLANES_DIR).glob("*.npz")}
    curves = {p for p in planes if not p.startswith("slice_") and p != "pca"}
    kinds = ("topk", "density", "sharpness", "slice1d", "slice2d", "surface3d")
    return {
        "paths",
        SHARPNESS_FIGURE,
        "pca_plane",
        *(f"plane_{c}" for c in curves),
        *(f"{p}_hessian" for p in bundle.path_names()),
        *(f"{pt}_{k}" for pt in names.POINTS for k in kinds),
    }


def test_a_trial_records_every_figure_and_draws_it(trials: dict[str, Bundle]) -> None:
    bundle = trials["drawn"]
    drawn = pngs(bundle.root)
    assert set(drawn) == expected_figures(bundle) == set(figure_inputs(bundle.root))
    assert {"plane_bezier", "linear_hessian", "linear_aligned_hessian", "mid_surface3d"} <= set(drawn)
    assert all(len(png) > 5000 for png in drawn.values())
    assert {f"{names.TRAINING_DIR}/{e}_sharpness.csv" for e in ("a", "b")} <= set(
        data_files(figure_inputs(bundle.root))
    )


def test_a_deferred_trial_writes_the_same_data_and_no_figure(trials: dict[str, Bundle]) -> None:
    drawn, deferred = trials["drawn"], trials["deferred"]
    assert not (deferred.root / names.FIGURES_DIR).exists()
    assert figure_inputs(deferred.root) == figure_inputs(drawn.root)
    without_figures = lambda b: {p for p in b.files() if p.parts[0] != names.FIGURES_DIR}  # noqa: E731
    assert without_figures(deferred) == without_figures(drawn)
    assert deferred.read_path("bezier").to_csv() == drawn.read_path("bezier").to_csv()
    results = lambda b: {  # noqa: E731 (timings differ between runs; results do not)
        k: v for k, v in b.metrics().items() if k.split("/")[0] in (names.BARRIER, names.TRIANGLE, names.HESSIAN)
    }
    assert results(deferred) == results(drawn) and results(drawn)


def test_drawing_from_the_data_files_alone_gives_the_trials_figures(trials: dict[str, Bundle], tmp_path: Path) -> None:
    drawn = pngs(trials["drawn"].root)
    folder = data_only_copy(trials["deferred"].root, tmp_path)  # what lgeom figures downloads of a deferred cell
    assert sorted(p.stem for p in draw_figures(folder)) == sorted(drawn)
    assert pngs(folder) == drawn  # byte for byte the figures the trial drew


def test_the_paths_figure_ignores_rows_the_probe_stage_added(tmp_path: Path) -> None:
    bundle = Bundle(tmp_path)
    t = np.linspace(0, 1, 5)
    connect = Table({"t": t, "train_loss": 1 + t**2, "test_loss": 2 + t, "train_acc": 90 - t, "test_acc": 80 + t})
    bundle.write_path("bezier", connect)
    write_figure(bundle, "paths", "paths", ["paths/bezier.csv"], draw=False, title="x", samples={"train": 7})
    before = draw_figure(tmp_path, "paths").read_bytes()
    probed = Table({"t": [0.0, 0.1, 0.5, 0.9], "hessian_top1": [3.0, 2.5, 2.0, 1.0]})  # two t of its own
    bundle.write_path("bezier", merge_on_t(connect, probed))  # as write_path_probes does: NaN loss at 0.1, 0.9
    assert len(bundle.read_path("bezier")) == 7
    assert draw_figure(tmp_path, "paths").read_bytes() == before


def test_bad_figure_requests_name_what_was_expected(tmp_path: Path) -> None:
    bundle = Bundle(tmp_path)
    with pytest.raises(ValueError, match=r"figure kind: expected one of plane, paths, .*, got 'pie'"):
        write_figure(bundle, "x", "pie", [])
    assert not (tmp_path / names.FIGURE_INPUTS_FILE).exists()
    write_figure(bundle, "a_topk", "topk", ["spectra/a.json"], draw=False, title="t", samples=3)
    with pytest.raises(KeyError, match="figure: expected one of a_topk in .*, got 'b_topk'"):
        draw_figure(tmp_path, "b_topk")
    with pytest.raises(FileNotFoundError, match="figure a_topk: expected its data file spectra/a.json"):
        draw_figure(tmp_path, "a_topk")
    assert not (tmp_path / names.FIGURES_DIR).exists()


#: figure_inputs.json entries a crafted run could carry: each would read or write outside the bundle folder.
CRAFTED = {
    "../../evil": {"kind": "topk", "data": ["spectra/a.json"]},  # a name that is a path: writes outside figures/
    "a_topk": {"kind": "topk", "data": ["../../../etc/passwd"]},  # reads (or downloads to) outside the folder
    "b_topk": {"kind": "topk", "data": ["/etc/passwd"]},
    "c_topk": {"kind": "topk", "data": ["spectra\\..\\..\\x.json"]},
    "d_topk": {"kind": "eval", "data": ["spectra/a.json"]},  # no such drawer
    "e_topk": {"kind": "topk", "data": "spectra/a.json"},  # not a list
}


def test_crafted_figure_inputs_are_refused_before_anything_is_read_or_written(tmp_path: Path) -> None:
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / names.FIGURE_INPUTS_FILE).write_text(json.dumps(CRAFTED))
    with pytest.raises(ValueError) as info:
        draw_figures(tmp_path / "bundle")
    msg = str(info.value)
    for bad in (
        "'../../evil'",
        "'../../../etc/passwd'",
        "'/etc/passwd'",
        "x.json'",
        "got 'eval'",
        "got 'spectra/a.json'",
    ):
        assert bad in msg, (bad, msg)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bundle", names.FIGURE_INPUTS_FILE]
    for good in ("spectra/a.json", "planes/slice_mid.npz", "training/a_sharpness.csv", "probes.json"):
        checked_inputs({"a_topk": {"kind": "topk", "data": [good]}}, "here")
    with pytest.raises(ValueError, match="here: expected a mapping of figure name -> inputs, got list"):
        checked_inputs([], "here")
    (tmp_path / "bundle" / names.FIGURE_INPUTS_FILE).write_bytes(b"\xff{")
    with pytest.raises(ValueError, match="expected JSON, got a file that does not parse"):
        figure_inputs(tmp_path / "bundle")


@pytest.mark.integration
@pytest.mark.parametrize("where", ["embedded_store", "server_store"])  # sqlite + local files; server + S3
def test_main_draws_logged_runs_once_and_rejects_bad_input(
    trials: dict[str, Bundle], where: str, unique_study: str, request: pytest.FixtureRequest
) -> None:
    store = request.getfixturevalue(where)
    deferred = trials["deferred"]
    with tracked_run(store, experiment=unique_study, tags={names.TAG_STAGE: names.STAGE_STUDY}) as parent:
        pass
    tags = {names.TAG_STAGE: names.STAGE_TRIAL, names.TAG_CELL: CELL, names.TAG_FIGURES: names.FIGURES_DEFERRED}
    with tracked_run(store, experiment=unique_study, run_name=CELL, parent_run_id=parent.run_id, tags=tags) as run:
        log_bundle(run, deferred)
    with tracked_run(store, experiment=unique_study, run_name="no inputs") as bare:
        bare.log_metrics({"x": 1.0})
    crafted_dir = Path(str(deferred.root) + "-crafted")
    shutil.copytree(deferred.root, crafted_dir, dirs_exist_ok=True)
    (crafted_dir / names.FIGURE_INPUTS_FILE).write_text(json.dumps(CRAFTED))
    with tracked_run(store, experiment=unique_study, run_name="crafted") as crafted:
        log_bundle(crafted, Bundle(crafted_dir))
    client = store.client()
    pngs_of = lambda rid: {i.path for i in client.list_artifacts(rid, names.FIGURES_DIR)}  # noqa: E731

    for kwargs, message in (
        ({}, "figures: expected --run RUN_ID ... or --study NAME, got neither"),
        ({"run_ids": [run.run_id], "study": unique_study}, "got both"),
        ({"run_ids": [run.run_id], "cell": "mlp"}, "--cell: expected it with --study, got --cell 'mlp' with --run"),
        ({"run_ids": [run.run_id, "0" * 32]}, f"--run: expected the id of a run in .*, got '{'0' * 32}'"),
        ({"run_ids": [run.run_id, bare.run_id]}, f"expected a run with figure_inputs.json .*, got run {bare.run_id}"),
        (
            {"run_ids": [run.run_id, crafted.run_id]},
            f"--run: run {crafted.run_id}'s figure_inputs.json: figure name: expected a file name .*'../../evil'",
        ),
        ({"study": unique_study, "cell": "mlp"}, f"--cell: expected one of {CELL} of '{unique_study}', got 'mlp'"),
        ({"study": "no-such-study"}, "study: expected one of .*, got 'no-such-study'"),
    ):
        with pytest.raises(ValueError, match=message):
            main(store=store, **kwargs)
    assert not pngs_of(run.run_id), "a bad request writes nothing, not even for the good run before it"
    assert not pngs_of(crafted.run_id)

    done = main(study=unique_study, cell=CELL, store=store)  # the study's cell runs, as lgeom report reads them
    expected = {names.figure_artifact(n) for n in figure_inputs(deferred.root)}
    assert set(done[run.run_id]) == pngs_of(run.run_id) == expected
    assert client.get_run(run.run_id).data.tags[names.TAG_FIGURES] == names.FIGURES_DRAWN
    assert main(run_ids=[run.run_id], store=store) == {}  # already drawn: skipped
    assert set(main(run_ids=[run.run_id], store=store, force=True)[run.run_id]) == expected
