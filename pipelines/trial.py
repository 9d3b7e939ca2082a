"""One study trial = one matrix cell: train the endpoints, connect them, probe, log to the cell's MLflow
child run.

Stages run in order and each records its completion in ``<work>/stages.json`` next to its outputs (the
cell's result bundle and endpoint checkpoints), so a trial that is killed resumes at the next unfinished
stage when the study is run again; training itself resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lgeom import names
from lgeom.params import count_params
from lgeom.progress import ProgressEvent, scoped
from lgeom.table import Table
from lgeom.train import TRACK_HESSIAN_SAMPLES
from pipelines.common import applicable_params, load_splits, train_endpoint
from pipelines.config import Config, config_from_dict, config_hash
from pipelines.connect import connect_endpoints, model_extra, write_connect_result
from pipelines.figures import write_figure
from pipelines.probe import probe_cell
from tracking.bundle import Bundle, log_bundle, write_json
from tracking.figures.training import has_sharpness
from tracking.live import LiveLogger
from tracking.log import warm_model_logging
from tracking.provenance import log_dataset, system_metrics
from tracking.runs import close_superseded_attempts, flatten_params, run_tags, tracked_run
from tracking.store import wait_for_store

STAGES = ("train", "connect", "probe", "log")
#: Figure of the endpoints' tracked lambda_max against 2 / lr (``figures/<name>.png``).
SHARPNESS_FIGURE = "train_sharpness"
#: Value of tag ``lgeom.current_stage`` once a trial's run has everything logged.
STAGE_DONE = "done"
#: The connect stage's timed parts (:data:`lgeom.connect.PATH_PARTS`) and the trial metric of each.
CONNECT_PART_TIMES = {"fit": "fit_s", "evaluate": "path_eval_s", "plane": "plane_s"}


#: Seconds a long loop runs before its percentage lines reach a trial's log (``$LGEOM_PROGRESS_AFTER_S``).
PROGRESS_AFTER_S = 5.0


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs, as plain values (sent to Ray workers).

    Attributes:
        study: study (= experiment) name.
        cell: the cell's name.
        config: the cell's config as a dict (``Config.to_dict()``).
        experiment_id: MLflow experiment id.
        parent_run_id: the study invocation's parent run.
        store: ``tracking.store.Store`` (picklable).
        work_dir: absolute folder of the cell's checkpoints and bundle.
        bars: draw per-trial progress bars on the driver (its output is a terminal) instead of log lines.
        progress_after_s: with log lines, a long loop's lines start once it has run this many seconds.
        tags: tags for the child run decided by the driver (git commit and dirty flag of the driver's
            working tree, ``mlflow.source.name`` = the entry point), which a Ray worker cannot see itself.
    """

    study: str
    cell: str
    config: dict[str, Any]
    experiment_id: str
    parent_run_id: str
    store: Any
    work_dir: str
    bars: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    progress_after_s: float = PROGRESS_AFTER_S


class StageLog:
    """Which stages of a cell are complete (``stages.json``, written atomically after each stage)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}

    def is_done(self, stage: str) -> bool:
        """Whether ``stage`` completed in an earlier attempt."""
        return stage in self.done

    def mark(self, stage: str) -> None:
        """Record ``stage`` as complete."""
        self.done[stage] = time.time()
        write_json(self.path, self.done)


def work_dir(output_dir: str | os.PathLike[str], study: str, cell: str, cfg: Config) -> Path:
    """``<output_dir>/<study>/<cell>/<config hash>`` (absolute): a changed config never reuses stale stages."""
    return (Path(output_dir) / study / cell / config_hash(cfg)).resolve()


def run_cell(
    ctx: TrialContext,
    *,
    report: Callable[[dict[str, Any]], None] | None = None,
    callbacks: list[Callable[[ProgressEvent], None]] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run every unfinished stage of one cell inside its MLflow child run.

    Returns:
        ``{"cell", "status": "FINISHED"|"FAILED", "run_id", "error", "stages_skipped", <headline metrics>}``.
        Errors never propagate: the child run ends FAILED with the error recorded and the summary says why.
        Stages completed by an earlier attempt are listed in ``stages_skipped`` and in the run's tag
        ``lgeom.stages_skipped``.
    """
    cfg = config_from_dict(ctx.config)
    h = config_hash(cfg)
    root = Path(ctx.work_dir)
    root.mkdir(parents=True, exist_ok=True)
    stages = StageLog(root / "stages.json")
    skipped = [s for s in STAGES if stages.is_done(s)]
    summary: dict[str, Any] = {
        "cell": ctx.cell,
        "status": "FAILED",
        "run_id": None,
        "error": "",
        "stages_skipped": skipped,
    }
    send = report or (lambda _m: None)
    summary["started_at"] = time.time()
    t0 = time.perf_counter()
    try:
        wait_for_store(ctx.store)  # a server being restarted is waited for, not a reason to fail the cell
        with tracked_run(
            ctx.store,
            experiment_id=ctx.experiment_id,
            run_name=ctx.cell,
            parent_run_id=ctx.parent_run_id,
            tags=run_tags(
                study=ctx.study,
                stage=names.STAGE_TRIAL,
                cell=ctx.cell,
                config_hash=h,
                extra={
                    **ctx.tags,
                    names.TAG_NOTE: describe_cell(cfg, ctx.cell, ctx.study),
                    **({names.TAG_STAGES_SKIPPED: ",".join(skipped)} if skipped else {}),
                    names.TAG_FIGURES: names.FIGURES_DRAWN if cfg.study.cell_figures else names.FIGURES_DEFERRED,
                },
            ),
            params=flatten_params(applicable_params(cfg.flat())),
        ) as run:
            summary["run_id"] = run.run_id
            if ctx.parent_run_id:  # a retry closes the attempt it replaces (its process or node was lost)
                close_superseded_attempts(
                    ctx.store,
                    ctx.experiment_id,
                    parent_run_id=ctx.parent_run_id,
                    cell=ctx.cell,
                    current_run_id=run.run_id,
                )
            warm_model_logging()  # the first model of a process costs ~1 s of set-up: paid while computing
            bundle = Bundle(root / "bundle")
            with system_metrics(run), LiveLogger(run) as live:
                live.set_tag(names.TAG_CURRENT_STAGE, STAGES[0])

                def send_live(m: dict[str, Any]) -> None:
                    if m.get("stage") in STAGES[:-1]:  # a stage finished: the next one starts
                        live.set_tag(names.TAG_CURRENT_STAGE, STAGES[STAGES.index(m["stage"]) + 1])
                    send(m)

                example: dict[str, Any] = {}

                def on_data(splits: Any) -> None:
                    log_dataset(run, **dataset_input(cfg, splits))
                    example["x"] = input_example(splits)

                t_compute, cpu_compute = time.perf_counter(), time.process_time()
                model = run_stages(
                    cfg,
                    ctx.cell,
                    root,
                    bundle,
                    stages,
                    callbacks=[*(callbacks or []), live.progress_callback],
                    progress=progress,
                    report=send_live,
                    history=live.log_history,
                    data=on_data,
                )
                summary["compute_s"] = time.perf_counter() - t_compute
                bundle.add_metrics(
                    {
                        names.trial_metric("compute_s"): summary["compute_s"],
                        names.trial_metric("compute_cpu_s"): time.process_time() - cpu_compute,
                    }
                )
                t_log = time.perf_counter()
                log_bundle(run, bundle, model=model, cell=ctx.cell, input_example=example.get("x"))
                run.log_metrics(  # after the bundle, so that logging it is timed too
                    {
                        names.trial_metric("log_s"): time.perf_counter() - t_log,
                        names.trial_metric("wall_time_s"): time.perf_counter() - t0,
                    }
                )
                live.set_tag(names.TAG_CURRENT_STAGE, STAGE_DONE)  # sent by the logger's last flush, on close
            summary["live_logging_s"] = live.seconds
        stages.mark("log")
        summary["status"] = "FINISHED"
        summary.update(headline_metrics(bundle.metrics()))
    except Exception as err:  # noqa: BLE001 - isolate the cell; the run is already FAILED with the error
        summary["error"] = f"{type(err).__name__}: {err}"
        summary["traceback"] = traceback.format_exc(limit=8)
    summary["wall_time_s"] = time.perf_counter() - t0
    summary["ended_at"] = time.time()
    return summary


def run_stages(
    cfg: Config,
    cell: str,
    root: Path,
    bundle: Bundle,
    stages: StageLog,
    *,
    callbacks: list[Callable[[ProgressEvent], None]] | None = None,
    progress: bool = False,
    report: Callable[[dict[str, Any]], None] | None = None,
    history: Callable[[str, Any], None] | None = None,
    data: Callable[[Any], None] | None = None,
) -> Any:
    """The computing part of a trial (no tracking): train, then the unfinished ones of connect and probe,
    each marked done in ``stages`` when it completes, its seconds in the bundle's metrics
    (``trial/train_s``, ``trial/connect_s`` with ``fit_s``, ``path_eval_s``, ``plane_s``, ``trial/probe_s``).
    Returns the architecture (holding endpoint A).

    Progress events of endpoint ``a``'s training reach ``callbacks`` scoped ``"a"`` (a curve fit's scoped by
    its path); ``history(endpoint, table)`` receives each endpoint's whole per-epoch history once it is
    trained (or reloaded), so epochs restored from a checkpoint are reported too; ``data(splits)`` the
    loaded dataset splits before training.
    """
    send = report or (lambda _m: None)
    t0 = time.perf_counter()
    model, endpoints = _stage_train(cfg, root, bundle, callbacks, progress, history, data)
    bundle.add_metrics({names.trial_metric("train_s"): time.perf_counter() - t0})
    stages.mark("train")
    send({"stage": "train", "stages_done": 1})
    if not stages.is_done("connect"):
        t0 = time.perf_counter()
        parts = _stage_connect(cfg, cell, model, endpoints, bundle, callbacks, progress)
        bundle.add_metrics(
            {
                names.trial_metric("connect_s"): time.perf_counter() - t0,
                **{names.trial_metric(q): parts[part] for part, q in CONNECT_PART_TIMES.items()},
            }
        )
        stages.mark("connect")
    send({"stage": "connect", "stages_done": 2})
    if not stages.is_done("probe"):
        t0 = time.perf_counter()
        _stage_probe(cfg, model, endpoints, bundle, callbacks, progress)
        bundle.add_metrics({names.trial_metric("probe_s"): time.perf_counter() - t0})
        stages.mark("probe")
    send({"stage": "probe", "stages_done": 3})
    bundle.add_params({names.PARAM_N_PARAMS: count_params(model)})
    return model


def describe_cell(cfg: Config, cell: str, study: str) -> str:
    """The child run's description (``mlflow.note.content``): its cell in words."""
    t, c = cfg.train, cfg.curve
    sizes = ", ".join(f"{k}={cfg.data.options[k]}" for k in ("n_train", "n_test") if k in cfg.data.options)
    return (
        f"Cell `{cell}` of study `{study}`: a {cfg.model.arch} on {cfg.data.name}{f' ({sizes})' if sizes else ''}; "
        f"endpoints A and B (seeds {', '.join(str(s) for s in t.seeds[:2])}) trained {t.epochs} epochs with "
        f"{t.optimizer} lr={t.lr:g} ({t.schedule} schedule, batch {t.batch_size}); connected by the line and "
        f"{', '.join(c.kinds)} ({c.fit.epochs} fit epochs{', with B aligned onto A too' if c.align else ''}), "
        "then probed at A, B and the curve midpoint."
    )


def input_example(splits: Any, n: int = 4) -> Any:
    """The first ``n`` test inputs, stacked: the logged models' input example (and signature)."""
    import torch

    return torch.stack([splits.test[i][0] for i in range(min(n, len(splits.test)))]).numpy()


def dataset_input(cfg: Config, splits: Any) -> dict[str, Any]:
    """What :func:`tracking.provenance.log_dataset` records for a cell's data: the dataset's name, a digest
    of the data config and split sizes (the data are a deterministic function of both), the data config as
    source and the split sizes as profile.
    """
    sizes = {"train": len(splits.train), "train_eval": len(splits.train_eval), "test": len(splits.test)}
    source = {k: v for k, v in cfg.to_dict()["data"].items() if v is not None}
    digest = hashlib.sha256(
        json.dumps({"data": source, "sizes": sizes}, sort_keys=True, default=str).encode()
    ).hexdigest()
    return {
        "name": cfg.data.name,
        "digest": digest[:16],
        "source": source,
        "profile": {"num_rows": sizes["train"], **sizes},
    }


HEADLINE = (
    names.barrier_metric(names.LINE, "test", "loss_barrier"),
    names.barrier_metric("bezier", "test", "loss_barrier"),
    names.triangle_metric("bezier", "angle_acb_deg"),
    names.probe_metric(names.HESSIAN, "lambda_max", point="a"),
    names.probe_metric(names.HESSIAN, "lambda_max", point=names.MID),
)


def headline_metrics(metrics: Mapping[str, float | None]) -> dict[str, float]:
    """The few metrics shown in Tune's progress table."""
    return {k: float(v) for k, v in metrics.items() if k in HEADLINE and v is not None}


def _stage_train(
    cfg: Config,
    root: Path,
    bundle: Bundle,
    callbacks: Any,
    progress: bool,
    history: Callable[[str, Any], None] | None = None,
    data: Callable[[Any], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train (or reload) endpoints A and B; records their metrics and checkpoints in the bundle."""
    seeds = cfg.train.seeds
    if len(seeds) < 2:
        raise ValueError(f"train.seeds: expected two seeds (endpoints A and B) for a study cell, got {list(seeds)!r}")
    splits = load_splits(cfg)
    if data is not None:
        data(splits)
    endpoints: dict[str, Any] = {"splits": splits}
    model = None
    histories: dict[str, Any] = {}
    for name, seed in zip(("a", "b"), seeds[:2]):
        model, result, _ = train_endpoint(cfg, seed, splits, root, callbacks=scoped(callbacks, name), progress=progress)
        if history is not None:
            history(name, result.history)
        endpoints[name] = result
        if has_sharpness(result.history):
            histories[name] = result.history
        bundle.write_endpoint(name, result.final_params, result.final_buffers)
        bundle.add_metrics(
            {
                names.endpoint_metric(name, split, k): getattr(res, k)
                for split, res in result.final.items()
                for k in names.SPLIT_QUANTITIES
            }
        )
    if histories:  # train.track_hessian_every: lambda_max against 2 / lr
        for name, hist in histories.items():
            columns = [c for c in ("epoch", *names.TRACK_QUANTITIES) if c in hist.names]
            bundle.write_table(names.sharpness_history_artifact(name), Table({c: hist[c] for c in columns}))
        write_figure(
            bundle,
            SHARPNESS_FIGURE,
            "train_sharpness",
            [names.sharpness_history_artifact(name) for name in histories],
            draw=cfg.study.cell_figures,
            endpoints=list(histories),
            title=cfg.name,
            samples=min(TRACK_HESSIAN_SAMPLES, len(splits.train_eval)),
        )
    return model, endpoints


def _stage_connect(
    cfg: Config, cell: str, model: Any, endpoints: dict[str, Any], bundle: Bundle, callbacks: Any, progress: bool
) -> dict[str, float]:
    """Line, Bezier, PolyChain (and aligned variants) between A and B: path tables, metrics, curves, planes.
    Returns the seconds of its parts summed over the paths (:meth:`lgeom.connect.ConnectResult.seconds`).
    """
    a, b, splits = endpoints["a"], endpoints["b"], endpoints["splits"]
    result, skipped = connect_endpoints(
        cfg,
        model,
        splits,
        (a.final_params, a.final_buffers),
        (b.final_params, b.final_buffers),
        callbacks=callbacks,
        progress=progress,
    )
    write_connect_result(
        bundle,
        result,
        extra=model_extra(cfg, splits),
        title=cell,
        align_skipped=skipped,
        figures=cfg.study.cell_figures,
    )
    return result.seconds()


def _stage_probe(
    cfg: Config, model: Any, endpoints: dict[str, Any], bundle: Bundle, callbacks: Any, progress: bool
) -> None:
    """Hessian, sharpness and curvature at A, B and the curve midpoint; Hessian top-k along every path;
    PCA plane and effective dimensionality of A's trajectory when snapshots were kept.
    """
    probe_cell(
        cfg,
        model,
        bundle,
        endpoints["splits"],
        trajectory=endpoints["a"],
        callbacks=callbacks,
        progress=progress,
        figures=cfg.study.cell_figures,
    )
