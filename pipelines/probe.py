"""Step ``probe``: Hessian spectra, sharpness, curvature, slices and the PCA plane at a checkpoint, or at the
endpoints and midpoint of a saved curve and along it.

Without a file the trained endpoint A (seed ``train.seeds[0]``) of every cell is probed (trained, resumed or
reused by ``pipelines.common.train_endpoint``); ``--checkpoint`` probes a file written by ``lgeom train``,
``--curve`` one written by ``lgeom connect`` (its endpoints t = 0 and 1 keep the trained BatchNorm statistics
of ``endpoints/a.pt`` / ``b.pt`` in the same connect bundle). Results go to the bundle
``<output_dir>/<name>/<cell>/probe/`` (or ``--out``): metrics ``hessian.<point>.lambda_max|topk_mean|trace``,
``sharpness.<point>.eps_avg|eps_worst`` (+ extras), ``spectra/<point>.json``, ``paths/<path>.csv`` with
``hessian_lambda_max`` and ``hessian_top<i>``, ``planes/slice_<point>.npz``, ``planes/pca.npz``, ``probes.json``
and ``figures/*.png``.

    lgeom probe --preset quick train.snapshot_every=20 train.grad_snapshot_every=5
    lgeom probe --preset quick-tiny --cell mlp2x16/moons/sgd --checkpoint outputs/.../seed0/final.pt
    lgeom probe --preset quick-tiny --cell mlp2x16/moons/sgd --curve outputs/.../connect/curves/bezier.pt
    mlflow run . -e probe -P preset=quick --env-manager local
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lgeom import names
from lgeom.batchnorm import has_batchnorm
from lgeom.curves import Curve, Line, check_model_matches, load_curve
from lgeom.data import Splits, fixed_batches
from lgeom.device import resolve_device
from lgeom.gradients import EffectiveDimensionality, effective_dimensionality
from lgeom.models import build_model
from lgeom.probes import PointMemo, PointProbes, ProbeSettings, probe_path, probe_point
from lgeom.progress import scoped
from lgeom.safe_io import load_plain
from lgeom.surfaces.pca import PCAPlaneResult, pca_plane
from lgeom.table import Table
from lgeom.train import TrainResult
from pipelines.common import applicable_params, build_cell_model, cell_dir, load_splits, train_endpoint
from pipelines.config import Config, config_hash
from pipelines.connect import load_endpoint, write_bundle_atomically
from pipelines.figures import write_figure
from pipelines.guards import check_writable_dir
from pipelines.train import select_cells
from tracking.bundle import Bundle
from tracking.steps import log_step_bundle
from tracking.store import connect

Batch = tuple[torch.Tensor, torch.Tensor]


# --- inputs ------------------------------------------------------------------------------------------------


def probe_batches(cfg: Config, splits: Splits) -> list[Batch]:
    """``probe.samples`` unaugmented training samples (seeded by ``probe.seed``) in batches of ``probe.batch_size``."""
    p = cfg.probe
    batches = fixed_batches(splits.train_eval, p.batch_size, n_batches=math.ceil(p.samples / p.batch_size), seed=p.seed)
    extra = batch_samples(batches) - p.samples
    if extra > 0:
        x, y = batches[-1]
        batches[-1] = (x[: len(y) - extra], y[: len(y) - extra])
    return batches


def batch_samples(batches: Sequence[Batch]) -> int:
    """How many samples ``batches`` hold (the count the probe figures name on their axes)."""
    return sum(int(y.shape[0]) for _, y in batches)


def curve_endpoint_buffers(
    curve_file: str | Path, curve: Curve
) -> tuple[dict[str, torch.Tensor] | None, dict[str, torch.Tensor] | None]:
    """Trained BatchNorm statistics of a saved curve's endpoints A and B, from the connect bundle holding it.

    ``lgeom connect`` writes ``<bundle>/curves/<name>.pt`` beside ``<bundle>/endpoints/a.pt`` and ``b.pt``
    (``b_aligned.pt`` for a ``*_aligned`` curve). An endpoint's buffers are returned when that file exists
    and its parameters are the curve's endpoint; otherwise ``None`` (that endpoint is then probed with
    statistics recomputed on the probe data, as any other point).
    """
    root = Path(curve_file).resolve().parent.parent
    ends = ("a", names.aligned("b") if names.is_aligned(Path(curve_file).stem) else "b")
    found: list[dict[str, torch.Tensor] | None] = []
    for name, end in zip(ends, (curve.start, curve.end)):
        f = root / names.endpoint_artifact(name)
        buffers = None
        if f.is_file():
            params, bufs = load_endpoint(f, names.endpoint_artifact(name))
            same = set(params) == set(end) and all(
                params[n].shape == end[n].shape
                and torch.allclose(params[n].cpu().to(end[n].dtype), end[n].cpu(), rtol=1e-6, atol=1e-8)
                for n in end
            )
            buffers = dict(bufs) if same else None
        found.append(buffers)
    return found[0], found[1]


def trajectory_of(checkpoint: str | Path) -> dict[str, list[Any]]:
    """Snapshots, their steps and gradient snapshots kept by ``lgeom train`` in ``last.pt`` beside a checkpoint
    (empty lists when there is none).
    """
    last = Path(checkpoint).with_name("last.pt")
    state = (
        load_plain(last, f"training state {last.name} beside the checkpoint", "the loop state written by lgeom train")
        if last.is_file()
        else {}
    )
    if not isinstance(state, dict):
        raise ValueError(
            f"training state {last}: expected the dict written by lgeom train, got a {type(state).__name__}"
        )
    return {k: list(state.get(k, [])) for k in ("snapshots", "snapshot_steps", "grads")}


# --- writing results into a bundle -------------------------------------------------------------------------


def write_point_probes(bundle: Bundle, point: str, result: PointProbes, *, figures: bool = True) -> dict[str, float]:
    """Write a :class:`~lgeom.probes.PointProbes` for ``point`` (``a``, ``b``, ``mid`` ...) into a bundle.

    Metrics ``<family>/<point>/<name>``: ``hessian/<point>/lambda_max``, ``topk_mean``, ``trace`` (+
    ``trace_stderr``, ``density_mean``; solver diagnostics ``diag/<point>/hessian_converged|hessian_n_hvp``),
    ``sharpness/<point>/eps_avg``, ``eps_worst`` (+ ``eps_avg_max``, ``flatness``),
    ``curvature/<point>/mc_mean|mc_std|mc_frac_negative``, ``probe/<point>/loss``; ``spectra/<point>.json``; the
    samples and the 1-D slice under ``probes.json``; ``planes/slice_<point>.npz``; figures ``<point>_topk``,
    ``_density``, ``_sharpness``, ``_slice1d``, ``_slice2d``, ``_surface3d``.

    Returns:
        The metrics written.
    """
    metrics = result.metrics(point)
    bundle.add_metrics(metrics)
    bundle.write_spectrum(point, result.spectrum())
    doc = {"summary": result.summary(include_topk=True), "timings": result.timings}
    for key in ("average", "worst", "curvature", "slice_1d"):
        part = getattr(result, key)
        doc[key] = part.to_dict() if part is not None else None
    bundle.write_json(names.PROBES_FILE, {**bundle.read_json(names.PROBES_FILE, {}), point: doc})
    if result.slice_2d is not None:
        bundle.write_plane(f"slice_{point}", result.slice_2d.to_dict())
    n = result.n_samples
    spectrum, probes = names.spectrum_artifact(point), names.PROBES_FILE
    drawn: dict[str, tuple[str, str, dict[str, Any]]] = {}  # figure after the point -> (kind, data file, inputs)
    if result.eigen is not None:
        drawn["topk"] = ("topk", spectrum, {"title": f"Hessian top-{len(result.eigen.values)} at {point}"})
    if result.density is not None:
        drawn["density"] = ("density", spectrum, {"title": f"spectral density at {point}"})
    if result.average is not None:
        title = f"eps-sharpness at {point} (eps = {result.average.eps:g})"
        drawn["sharpness"] = ("sharpness_samples", probes, {"title": title, "point": point})
    if result.slice_1d is not None:
        drawn["slice1d"] = ("slice1d", probes, {"title": f"1-D slice at {point}", "point": point})
    if result.slice_2d is not None:
        plane = names.plane_artifact(f"slice_{point}")
        drawn["slice2d"] = ("slice2d", plane, {"title": f"2-D slice at {point}"})
        drawn["surface3d"] = ("surface3d", plane, {"title": f"loss surface at {point}"})
    for name, (kind, data, inputs) in drawn.items():
        write_figure(bundle, f"{point}_{name}", kind, [data], draw=figures, samples=n, **inputs)
    return metrics


def merge_on_t(old: Table, new: Table) -> Table:
    """Outer join of two path tables on ``t`` (values within 1e-9 match); ``new`` wins on shared columns."""
    rows: list[dict[str, Any]] = [dict(r) for r in old.rows()]
    for r in new.rows():
        match = next((row for row in rows if abs(float(row["t"]) - float(r["t"])) <= 1e-9), None)
        if match is None:
            rows.append(dict(r))
        else:
            match.update({k: v for k, v in r.items() if k != "t"})
    return Table.from_rows(sorted(rows, key=lambda row: float(row["t"])))


def write_path_probes(
    bundle: Bundle, name: str, table: Table, *, figures: bool = True, samples: int | None = None
) -> Path:
    """Merge a :func:`~lgeom.probes.probe_path` table into ``paths/<name>.csv`` (joined on t with the table
    the connect stage wrote, NaN where a row has no probe) and draw ``figures/<name>_hessian.png`` (its axis
    naming ``samples``, the training samples the Hessian was computed on).
    """
    if (bundle.root / names.path_table_artifact(name)).exists():
        table = merge_on_t(bundle.read_path(name), table)
    out = bundle.write_path(name, table)
    if names.topk_columns(table.names):
        write_figure(
            bundle,
            f"{name}_hessian",
            "path_hessian",
            [names.path_table_artifact(name)],
            draw=figures,
            title=f"Hessian top-k along {name}",
            samples=samples,
        )
    return out


def write_trajectory_probes(
    bundle: Bundle,
    *,
    pca: PCAPlaneResult | None = None,
    effective_dim: EffectiveDimensionality | None = None,
    figures: bool = True,
    samples: int | None = None,
) -> None:
    """Write the PCA plane (``planes/pca.npz``, ``figures/pca_plane.png``, metrics ``pca/explained_variance_1|2``,
    ``pca.max_relative_residual``) and the gradients' effective dimensionality (``effective_dim.json``, metrics
    ``gradients/effective_dim``, ``gradients/effective_dim_ratio``).
    """
    if pca is not None:
        bundle.write_plane("pca", pca.to_arrays())
        bundle.add_metrics(
            {
                names.trajectory_metric(names.PCA, "explained_variance_1"): float(pca.explained_variance_ratio[0]),
                names.trajectory_metric(names.PCA, "explained_variance_2"): float(pca.explained_variance_ratio[1]),
                names.trajectory_metric(names.PCA, "max_relative_residual"): float(pca.relative_residuals.max()),
            }
        )
        write_figure(bundle, "pca_plane", "pca_plane", [names.plane_artifact("pca")], draw=figures, samples=samples)
    if effective_dim is not None:
        bundle.write_json(
            names.EFFECTIVE_DIM_FILE,
            {**vars(effective_dim), "explained_variance_ratio": effective_dim.explained_variance_ratio.tolist()},
        )
        bundle.add_metrics(
            {
                names.trajectory_metric(names.GRADIENTS, "effective_dim"): effective_dim.n_components,
                names.trajectory_metric(names.GRADIENTS, "effective_dim_ratio"): effective_dim.ratio,
            }
        )


# --- running probes ---------------------------------------------------------------------------------------------


def run_trajectory_probes(
    bundle: Bundle,
    cfg: Config,
    model: nn.Module,
    data: list[Batch],
    trajectory: TrainResult | Mapping[str, Sequence[Any]],
    *,
    final: Mapping[str, torch.Tensor] | None = None,
    progress: bool = True,
    figures: bool = True,
) -> None:
    """PCA plane (``probe.pca``, needs >= 3 snapshots) and effective dimensionality (``probe.effective_dim``,
    needs >= 2 gradient snapshots) of a training trajectory, written with :func:`write_trajectory_probes`.
    """
    if isinstance(trajectory, TrainResult):
        trajectory = {
            "snapshots": trajectory.snapshots,
            "snapshot_steps": trajectory.snapshot_steps,
            "grads": trajectory.grad_snapshots,
        }
    snaps, grads = list(trajectory.get("snapshots", [])), list(trajectory.get("grads", []))
    if cfg.probe.pca and len(snaps) < 3:
        print(
            f"probe: PCA plane skipped: {len(snaps)} trajectory snapshots (set train.snapshot_every > 0 for at least 3)"
        )
    if cfg.probe.effective_dim and len(grads) < 2:
        print(
            f"probe: effective dimensionality skipped: {len(grads)} gradient snapshots "
            "(set train.grad_snapshot_every > 0)"
        )
    pca = None
    if cfg.probe.pca and len(snaps) >= 3:
        pca = pca_plane(
            model,
            snaps,
            data,
            final=final,
            steps=trajectory.get("snapshot_steps"),
            n_points=cfg.probe.slice2d_points,
            bn_batches=data if has_batchnorm(model) else None,
            progress=progress,
        )
    effdim = effective_dimensionality(grads) if cfg.probe.effective_dim and len(grads) >= 2 else None
    write_trajectory_probes(bundle, pca=pca, effective_dim=effdim, figures=figures, samples=batch_samples(data))


def probe_cell(
    cfg: Config,
    model: nn.Module,
    bundle: Bundle,
    splits: Splits,
    *,
    trajectory: TrainResult | Mapping[str, Sequence[Any]] | None = None,
    callbacks: Sequence[Any] | None = None,
    progress: bool = True,
    figures: bool = True,
) -> dict[str, float]:
    """A study trial's probe stage on a bundle the train and connect stages filled: points ``a`` and ``b``
    (``endpoints/a.pt``, ``b.pt``, trained buffers kept), ``mid`` (midpoint of ``curves/bezier.pt``, else of the
    first curve, else of the line), the top-k along every path (``linear`` between A and B, ``linear_aligned``
    with ``endpoints/b_aligned.pt``, every ``curves/<path>.pt``), and the PCA plane / effective dimensionality
    of A's training run when ``trajectory`` (A's ``TrainResult`` or a :func:`trajectory_of` dict) is given.

        probe_cell(
            cfg, model, bundle, endpoints["splits"], trajectory=endpoints["a"], callbacks=callbacks, progress=progress
        )

    Returns:
        The metrics of the points: ``hessian/<point>/*``, ``sharpness/<point>/*``, ``curvature/<point>/*``,
        ``probe.<point>.loss`` for point in a, b, mid (path columns and trajectory metrics go to the bundle).

    Raises:
        ValueError: an endpoint or curve that does not match ``model``.
    """
    settings, data = ProbeSettings.from_object(cfg.probe), probe_batches(cfg, splits)
    device = resolve_device(cfg.train.device)
    model.to(device)
    on = lambda d: {n: v.to(device) for n, v in d.items()}  # noqa: E731
    ends = {
        n: tuple(map(on, load_endpoint(bundle.root / names.endpoint_artifact(n), n)))
        for n in ("a", "b", names.aligned("b"))
        if (bundle.root / names.endpoint_artifact(n)).is_file()
    }
    for name, (params, _) in ends.items():
        check_model_matches(model, params, what=names.endpoint_artifact(name))
    metrics: dict[str, float] = {}
    memo = PointMemo(model)  # A, B and the midpoint come back as points of the paths: probed once
    for name in ("a", "b"):
        res = probe_point(
            model,
            ends[name][0],
            data,
            settings,
            buffers=ends[name][1],
            endpoint=True,
            callbacks=scoped(callbacks, name),
            progress=progress,
            memo=memo,
        )
        metrics.update(write_point_probes(bundle, name, res, figures=figures))
    paths: dict[str, Curve] = {names.LINE: Line(ends["a"][0], ends["b"][0])}
    if names.aligned("b") in ends:
        paths[names.aligned(names.LINE)] = Line(ends["a"][0], ends[names.aligned("b")][0])
    for f in sorted((bundle.root / names.CURVES_DIR).glob("*.pt")):
        paths[f.stem] = load_curve(f)[0].to(device)
        check_model_matches(model, paths[f.stem].start, what=names.curve_artifact(f.stem))
    mid = paths.get("bezier") or next((c for c in paths.values() if c.n_bends), paths[names.LINE])
    res = probe_point(
        model, mid.midpoint(), data, settings, callbacks=scoped(callbacks, names.MID), progress=progress, memo=memo
    )
    metrics.update(write_point_probes(bundle, names.MID, res, figures=figures))
    for name, curve in paths.items() if settings.hessian_points > 0 else ():
        b_end = ends[names.aligned("b") if names.is_aligned(name) else "b"]
        write_path_probes(
            bundle,
            name,
            probe_path(
                model,
                curve,
                None,
                data,
                settings=settings,
                endpoint_buffers=(ends["a"][1], b_end[1]),
                callbacks=scoped(callbacks, name),
                progress=progress,
                memo=memo,
            ),
            figures=figures,
            samples=batch_samples(data),
        )
    if trajectory is not None:
        run_trajectory_probes(
            bundle, cfg, model, data, trajectory, final=ends["a"][0], progress=progress, figures=figures
        )
    return metrics


def _model_for_curve(cfg: Config, splits: Splits, extra: Mapping[str, Any]) -> nn.Module:
    if isinstance(extra.get("model"), Mapping) and "num_classes" in extra and "in_shape" in extra:
        opts = dict(extra["model"])
        return build_model(
            opts.pop("arch"), num_classes=int(extra["num_classes"]), in_shape=tuple(extra["in_shape"]), **opts
        )
    return build_cell_model(cfg, splits)


def main(
    cfg: Config,
    *,
    checkpoint: str | None = None,
    curve: str | None = None,
    out: str | None = None,
    cell: str | None = None,
    point: str = "a",
    progress: bool = True,
    track: bool = True,
    store: Any = None,
) -> list[dict[str, Any]]:
    """Probe every cell's endpoint A, or the ``checkpoint`` / ``curve`` file (one cell); returns one summary per bundle.

    With ``track`` each bundle is logged as an MLflow run (stage ``probe``) in ``store`` (default: resolved
    from the environment and health-checked before any work starts).

    Raises:
        FileNotFoundError: the checkpoint or curve file does not exist.
        ValueError: both files given, a file with several cells and no ``--cell``, a file not matching the model.
    """
    for label, f in (("--checkpoint", checkpoint), ("--curve", curve)):
        if f is not None and not Path(f).is_file():
            raise FileNotFoundError(f"{label}: expected a file at {f}, got nothing there")
    if checkpoint and curve:
        raise ValueError("--checkpoint/--curve: expected one of them, got both")

    cells = select_cells(cfg, cell)
    if out:
        check_writable_dir(out, "--out")
    if not (out and (checkpoint or curve)):  # endpoints are trained (or reused) under output_dir
        check_writable_dir(cfg.output_dir, "output_dir")
    if track and store is None:
        store = connect()
    if (checkpoint or curve) and len(cells) > 1:
        raise ValueError(
            f"--cell: expected one of {', '.join(c.name for c in cells)} with --checkpoint/--curve, got none"
        )
    summaries = []
    for c in cells:
        ccfg, splits = c.config, load_splits(c.config)
        target = (
            (Path(out) / c.name.replace("/", "_") if len(cells) > 1 else Path(out))
            if out
            else cell_dir(cfg, c.name) / "probe"
        )
        if curve:
            path_curve, extra = load_curve(curve)
            model = _model_for_curve(ccfg, splits, extra)
            check_model_matches(model, path_curve.start, what=f"curve {curve}")
            params, buffers, trajectory, name = None, None, {}, Path(curve).stem
            end_buffers = curve_endpoint_buffers(curve, path_curve) if has_batchnorm(model) else (None, None)
            for label, bufs in zip(("a", "b"), end_buffers):
                if has_batchnorm(model) and bufs is None:
                    print(
                        f"probe: no trained BatchNorm statistics for endpoint {label} of {curve} "
                        "(no matching endpoints/*.pt "
                        "beside its curves/ folder): recomputed on the probe data"
                    )
        else:
            if checkpoint:
                model = build_cell_model(ccfg, splits)
                params, buffers = load_endpoint(checkpoint, "--checkpoint")
                check_model_matches(model, params, what=f"checkpoint {checkpoint}")
                trajectory = trajectory_of(checkpoint)
            else:
                model, result, _ = train_endpoint(
                    ccfg, ccfg.train.seeds[0], splits, cell_dir(cfg, c.name), progress=progress
                )
                params, buffers = result.final_params, result.final_buffers
                trajectory = result
        device = resolve_device(ccfg.train.device)
        model.to(device)
        settings, data = ProbeSettings.from_object(ccfg.probe), probe_batches(ccfg, splits)

        def fill(bundle: Bundle) -> None:
            if curve:
                # Trained endpoints keep their trained statistics (as --checkpoint and the study do).
                pc = path_curve.to(device)
                ends = tuple(None if b is None else {n: v.to(device) for n, v in b.items()} for b in end_buffers)
                memo = PointMemo(model)  # t = 0, 0.5 and 1 of the path are the three points probed first
                for pname, t, bufs in (("a", 0.0, ends[0]), (names.MID, 0.5, None), ("b", 1.0, ends[1])):
                    write_point_probes(
                        bundle,
                        pname,
                        probe_point(
                            model,
                            pc.point(t),
                            data,
                            settings,
                            buffers=bufs,
                            endpoint=bufs is not None,
                            progress=progress,
                            memo=memo,
                        ),
                    )
                if settings.hessian_points > 0:
                    write_path_probes(
                        bundle,
                        name,
                        probe_path(
                            model,
                            pc,
                            None,
                            data,
                            settings=settings,
                            endpoint_buffers=ends,
                            progress=progress,
                            memo=memo,
                        ),
                        samples=batch_samples(data),
                    )
            else:
                on = {n: v.to(device) for n, v in params.items()}
                res = probe_point(
                    model,
                    on,
                    data,
                    settings,
                    buffers={n: v.to(device) for n, v in buffers.items()},
                    endpoint=True,
                    progress=progress,
                )
                write_point_probes(bundle, point, res)
                run_trajectory_probes(bundle, ccfg, model, data, trajectory, final=on, progress=progress)
            bundle.add_tags({names.TAG_CELL: c.name, names.TAG_STAGE: names.STAGE_PROBE})

        bundle = write_bundle_atomically(target, fill)
        metrics = bundle.metrics()
        headline = {
            names.probe_metric(family, quantity, point=p)
            for p in {*names.POINTS, point}
            for family, quantity in (
                (names.HESSIAN, "lambda_max"),
                (names.HESSIAN, "trace"),
                (names.SHARPNESS, "eps_avg"),
                (names.SHARPNESS, "eps_worst"),
            )
        }
        shown = {k: v for k, v in metrics.items() if k in headline and v is not None}
        print(f"{c.name}: " + "  ".join(f"{k} {v:.4g}" for k, v in shown.items()) + f"  -> {target}")
        summary = {"cell": c.name, "bundle": str(target), "metrics": metrics}
        if track:
            summary["run_id"] = log_step_bundle(
                target,
                study=cfg.name,
                cell=c.name,
                config_hash=config_hash(ccfg),
                stage=names.STAGE_PROBE,
                params=applicable_params(ccfg.flat()),
                store=store,
            )
            print(f"{c.name}: logged to MLflow run {summary['run_id']} ({store.describe()})")
        summaries.append(summary)
    return summaries


def add_arguments(parser: Any, step: str) -> None:
    """``--checkpoint``, ``--curve`` (what to probe), ``--point`` (its name) and ``--out`` (the bundle folder)."""
    parser.add_argument(
        "--checkpoint", default=None, metavar="PATH", help="checkpoint written by lgeom train ({params, buffers})"
    )
    parser.add_argument(
        "--curve", default=None, metavar="PATH", help="curve written by lgeom connect (curves/<name>.pt)"
    )
    parser.add_argument("--point", default="a", help="metric name of the checkpoint's point (a, b, ...); default a")
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="bundle folder (default <output_dir>/<name>/<cell>/probe)"
    )
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow (local outputs only)")


def cli(cfg: Config, args: Any) -> int:
    """``lgeom probe``: probe and report; exit status 0."""
    main(
        cfg,
        checkpoint=args.checkpoint,
        curve=args.curve,
        out=args.out,
        cell=args.cell,
        point=args.point or "a",
        progress=not args.no_progress,
        track=not args.no_tracking,
    )
    return 0


if __name__ == "__main__":
    from pipelines.cli import main as cli_main

    sys.exit(cli_main(["probe", *sys.argv[1:]]))
