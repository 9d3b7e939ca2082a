"""Step ``connect``: connect two endpoints of every cell with a line, Bezier and PolyChain curves (and
the same after aligning B onto A when ``curve.align``), measure the paths and the plane through A, C, B.

The endpoints are two checkpoints written by ``lgeom train`` (``--a`` / ``--b``, one cell) or are trained
(or reused, or resumed) from the preset with the first two seeds of ``train.seeds``. Results go to the
bundle ``<output_dir>/<name>/<cell>/connect/`` (see :mod:`tracking.bundle`), written all at once: a run
that fails leaves any earlier bundle as it was.

    lgeom connect --preset quick
    lgeom connect --preset quick-tiny --cell mlp2x16/moons/sgd --a A/final.pt --b B/final.pt curve.align=false
    mlflow run . -e connect -P preset=quick --env-manager local
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lgeom import names
from lgeom._checks import check_same_structure
from lgeom.align import permutation_spec
from lgeom.connect import ConnectResult, ConnectSpec, connect_pair
from lgeom.curves import check_model_matches
from lgeom.data import Splits
from lgeom.device import resolve_device
from lgeom.params import Params, count_params
from lgeom.permutation import PermutationSpecError
from lgeom.safe_io import load_plain
from lgeom.seed import set_seed
from pipelines.common import (
    applicable_params,
    build_cell_model,
    cell_dir,
    load_splits,
    plugin_tags,
    train_endpoint,
)
from pipelines.config import Cell, Config, config_hash
from pipelines.figures import write_figure
from pipelines.guards import check_writable_dir
from pipelines.train import select_cells
from tracking.bundle import Bundle
from tracking.steps import log_step_bundle
from tracking.store import connect


def main(
    cfg: Config,
    *,
    a: str | None = None,
    b: str | None = None,
    cell: str | None = None,
    progress: bool = True,
    track: bool = True,
    store: Any = None,
) -> list[dict[str, Any]]:
    """Connect the endpoints of every cell of ``cfg`` (or of ``cell``); returns one summary per cell.

    With ``track`` each cell's bundle is logged as an MLflow run (stage ``connect``) in ``store`` (default:
    resolved from the environment and health-checked before any work starts).

    Raises:
        ValueError: only one of ``a`` / ``b``, several cells with checkpoints, fewer than two seeds,
            checkpoints of different architectures or not matching the configured model.
        FileNotFoundError: a checkpoint file does not exist.
    """
    if (a is None) != (b is None):
        raise ValueError(f"--a/--b: expected both checkpoints or neither, got only {'--a' if b is None else '--b'}")

    cells = select_cells(cfg, cell)
    check_writable_dir(cfg.output_dir, "output_dir")
    if a is not None and len(cells) > 1:
        raise ValueError(f"--cell: expected one of {', '.join(c.name for c in cells)} with --a/--b, got none")
    if track and store is None:
        store = connect()
    summaries = []
    for c in cells:
        ccfg = c.config
        splits = load_splits(ccfg)
        if a is not None and b is not None:
            set_seed(ccfg.curve.seed)
            model = build_cell_model(ccfg, splits)
            (pa, ba), (pb, bb) = load_pair(model, a, b)
        else:
            if len(ccfg.train.seeds) < 2:
                raise ValueError(f"train.seeds: expected two seeds (endpoints A and B), got {list(ccfg.train.seeds)!r}")
            trained = [
                train_endpoint(ccfg, s, splits, cell_dir(cfg, c.name), progress=progress) for s in ccfg.train.seeds[:2]
            ]
            model = trained[0][0]
            (pa, ba), (pb, bb) = [(r.final_params, r.final_buffers) for _, r, _ in trained]
        result, skipped = connect_endpoints(ccfg, model, splits, (pa, ba), (pb, bb), progress=progress)
        if skipped:
            print(f"{c.name}: {skipped}")
        out = cell_dir(cfg, c.name) / "connect"
        write_bundle_atomically(
            out,
            functools.partial(
                _fill_cell_bundle, cell=c, result=result, model=model, splits=splits, align_skipped=skipped
            ),
        )
        metrics = result.metrics()
        for name in result.paths:
            print(
                f"{c.name} {name}: "
                f"test loss barrier {metrics[names.barrier_metric(name, 'test', 'loss_barrier')]:.4f}, "
                f"test acc drop {metrics[names.barrier_metric(name, 'test', 'acc_drop')]:.2f} pp"
            )
        print(f"{c.name}: results in {out}")
        summary = {"cell": c.name, "bundle": str(out), "metrics": metrics}
        if track:
            summary["run_id"] = log_step_bundle(
                out,
                study=cfg.name,
                cell=c.name,
                config_hash=config_hash(ccfg),
                stage=names.STAGE_CONNECT,
                params=applicable_params(ccfg.flat()),
                model=model,
                store=store,
            )
            print(f"{c.name}: logged to MLflow run {summary['run_id']} ({store.describe()})")
        summaries.append(summary)
    return summaries


def connect_endpoints(
    cfg: Config,
    model: torch.nn.Module,
    splits: Splits,
    a: tuple[Params, Params],
    b: tuple[Params, Params],
    *,
    callbacks: Sequence[Any] | None = None,
    progress: bool = True,
) -> tuple[ConnectResult, str | None]:
    """Connect endpoints ``a`` and ``b`` (each ``(params, buffers)``) as the config's ``curve`` section says,
    on ``train.device``, seeded by ``curve.seed``.

    Returns:
        ``(result, why alignment was skipped)``: with ``curve.align`` on a model whose permutation spec cannot
        be built (:class:`~lgeom.permutation.PermutationSpecError`, e.g. attention), the endpoints are
        connected without alignment (no ``_aligned`` paths) and the reason is returned (None otherwise).
    """
    spec, skipped = alignment_plan(connect_spec(cfg), model)
    device = resolve_device(cfg.train.device)
    model.to(device)
    on = lambda d: {n: v.to(device) for n, v in d.items()}  # noqa: E731
    set_seed(cfg.curve.seed)
    result = connect_pair(
        model,
        on(a[0]),
        on(b[0]),
        a_buffers=on(a[1]),
        b_buffers=on(b[1]),
        train=splits.train,
        train_eval=splits.train_eval,
        test=splits.test,
        spec=spec,
        callbacks=callbacks,
        progress=progress,
    )
    return result, skipped


def alignment_plan(spec: ConnectSpec, model: torch.nn.Module) -> tuple[ConnectSpec, str | None]:
    """``spec`` as it can run on ``model``, and why alignment was turned off (None: nothing changed).

    With ``spec.align``, the model's permutation spec is built first (hand-written or traced); when it
    cannot be (:class:`~lgeom.permutation.PermutationSpecError`, which names the module and the op), the
    connection runs without alignment and the error's message is the reason.
    """
    if not spec.align:
        return spec, None
    try:
        permutation_spec(model)
    except PermutationSpecError as err:
        return dataclasses.replace(spec, align=False), f"alignment skipped: {err}"
    return spec, None


def _fill_cell_bundle(
    bundle: Bundle,
    *,
    cell: Cell,
    result: ConnectResult,
    model: torch.nn.Module,
    splits: Splits,
    align_skipped: str | None = None,
) -> None:
    write_connect_result(
        bundle, result, extra=model_extra(cell.config, splits), title=cell.name, align_skipped=align_skipped
    )
    bundle.add_params({**applicable_params(cell.config.flat()), names.PARAM_N_PARAMS: count_params(model)})
    bundle.add_tags(
        {
            names.TAG_CELL: cell.name,
            names.TAG_STAGE: names.STAGE_CONNECT,
            names.TAG_CONFIG_HASH: config_hash(cell.config),
            **plugin_tags(cell.config),
        }
    )


def connect_spec(cfg: Config) -> ConnectSpec:
    """The :class:`~lgeom.connect.ConnectSpec` of a config: its ``curve`` section is one (evaluating in batches
    of ``data.eval_batch_size``).
    """
    return cfg.curve


def model_extra(cfg: Config, splits: Splits) -> dict[str, Any]:
    """What a saved curve needs to rebuild its architecture: ``model`` (``arch`` + options),
    ``num_classes`` and ``in_shape`` (``lgeom.build_model(extra["model"]["arch"], ...)``).
    """
    return {
        "model": {"arch": cfg.model.arch, **cfg.model.options},
        "num_classes": int(splits.test.num_classes),  # type: ignore[attr-defined]
        "in_shape": list(splits.test.in_shape),  # type: ignore[attr-defined]
    }


def load_pair(model: torch.nn.Module, a: str, b: str) -> tuple[tuple[Params, Params], tuple[Params, Params]]:
    """Read two ``lgeom train`` checkpoints and check they share the configured architecture.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: an unreadable file, or parameters that differ between A and B or from the model
            (naming the first mismatching parameter).
    """
    pa, pb = load_endpoint(a, "--a"), load_endpoint(b, "--b")
    check_same_structure(pa[0], pb[0], first_name=f"checkpoint A ({a})", second_name=f"checkpoint B ({b})")
    try:
        check_model_matches(model, pa[0], what=f"checkpoint A ({a})")
    except ValueError as err:
        raise ValueError(f"{err} -- set model.* overrides to the checkpoints' architecture") from None
    return pa, pb


def load_endpoint(path: str | os.PathLike[str], label: str) -> tuple[Params, Params]:
    """``(params, buffers)`` of a checkpoint written by ``lgeom train`` (``{"params", "buffers"}``), read as
    plain data (``torch.load(weights_only=True)``: nothing in the file is executed).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not plain data (:class:`~lgeom.safe_io.UnsafeFileError`), or not such a dict.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {label}: expected a file written by lgeom train at {p}, got nothing there")
    state = load_plain(
        p, f"checkpoint {label}", "a checkpoint written by lgeom train ({'params', 'buffers'} of tensors)"
    )
    if not isinstance(state, dict) or not isinstance(state.get("params"), Mapping):
        raise ValueError(
            f"checkpoint {label}: expected a dict with 'params' and 'buffers' (as written by lgeom train), got {p}"
        )
    return dict(state["params"]), dict(state.get("buffers") or {})


def write_connect_result(
    bundle: Bundle,
    result: ConnectResult,
    *,
    extra: Mapping[str, Any],
    figures: bool = True,
    title: str | None = None,
    align_skipped: str | None = None,
) -> None:
    """Write a :class:`~lgeom.connect.ConnectResult` into a bundle.

    Writes ``metrics.json`` (``ConnectResult.metrics()``), ``paths/<path>.csv``, ``curves/<curve>.pt``
    (control points + ``extra``), ``fits/<curve>.json`` (fit history), ``planes/<curve>.npz``,
    ``endpoints/a.pt``, ``endpoints/b.pt`` (and ``b_aligned.pt`` + ``alignment.json`` when aligned), and
    ``figures/paths.png`` and ``figures/plane_<curve>.png`` (recorded in ``figure_inputs.json`` and, with
    ``figures``, drawn now: :func:`pipelines.figures.write_figure`); ``align_skipped`` (why alignment was skipped,
    see :func:`alignment_plan`) becomes the tag ``lgeom.align_skipped``.
    """
    cpu = lambda d: {n: v.detach().cpu() for n, v in d.items()}  # noqa: E731
    # every path point is evaluated on the same batches as the endpoints; a plane on its own cap (plane_samples)
    samples = {split: res.n for split, res in next(iter(result.endpoints.values()), {}).items()}
    bundle.add_metrics(result.metrics())
    if align_skipped:
        bundle.add_tags({names.TAG_ALIGN_SKIPPED: align_skipped})
    for name, p in result.paths.items():
        bundle.write_path(name, p.table)
        if p.curve.bends:
            bundle.write_curve(name, p.curve, **dict(extra))
        if p.fit is not None:
            bundle.write_json(names.fit_artifact(name), p.fit.history.to_dict())
        if p.plane is not None:
            bundle.write_plane(name, p.plane.to_arrays())
            write_figure(
                bundle,
                f"plane_{name}",
                "plane",
                [names.plane_artifact(name)],
                draw=figures,
                title=f"{title or ''} {name}".strip(),
                samples=dict(p.plane.samples or samples),
                curve=name,
            )
    bundle.write_endpoint("a", cpu(result.a_params), cpu(result.a_buffers))
    bundle.write_endpoint("b", cpu(result.b_params), cpu(result.b_buffers))
    if result.alignment is not None:
        bundle.write_endpoint(
            names.aligned("b"), cpu(result.alignment.params), cpu(result.alignment.buffers or result.b_buffers)
        )
        bundle.write_json(
            names.ALIGNMENT_FILE,
            {
                "iterations": result.alignment.iterations,
                "perms": {k: v.tolist() for k, v in result.alignment.perms.items()},
            },
        )
    if result.paths:
        write_figure(
            bundle,
            "paths",
            "paths",
            [names.path_table_artifact(n) for n in result.paths],
            draw=figures,
            title=title,
            samples=samples,
        )


def write_bundle_atomically(target: Path, fill: Callable[[Bundle], None]) -> Bundle:
    """Fill a bundle in a temporary folder beside ``target`` and move it into place only when complete."""
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fill(Bundle(tmp))
        old = target.with_name(f"{target.name}.old-{os.getpid()}")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Bundle(target)


def add_arguments(parser: Any, step: str) -> None:
    """``--a`` and ``--b``: checkpoints of the endpoints (instead of training them)."""
    parser.add_argument(
        "--a", default=None, metavar="PATH", help="checkpoint of endpoint A (final.pt written by lgeom train)"
    )
    parser.add_argument("--b", default=None, metavar="PATH", help="checkpoint of endpoint B")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow (local outputs only)")


def cli(cfg: Config, args: Any) -> int:
    """``lgeom connect``: connect and report; exit status 0."""
    main(
        cfg,
        a=args.a or None,
        b=args.b or None,
        cell=args.cell,
        progress=not args.no_progress,
        track=not args.no_tracking,
    )
    return 0


if __name__ == "__main__":
    from pipelines.cli import main as cli_main

    sys.exit(cli_main(["connect", *sys.argv[1:]]))
