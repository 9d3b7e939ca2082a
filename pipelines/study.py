"""Step ``study``: the matrix on Ray Tune — one trial per cell, each logged to an MLflow child run under
the invocation's parent run — then the comparison table and the report.

    lgeom study --preset quick                      # local Ray, embedded MLflow (sqlite:///mlflow.db)
    lgeom study --preset resnet-depth --address ray://head:10001
    mlflow run . -e study -P preset=quick --env-manager local

Rerunning the same command is safe: cells whose child run with the same config hash is FINISHED are
skipped, unfinished cells resume at their next stage, and RUNNING runs left by a killed invocation are
marked KILLED. Exit status 0 when every cell finished, 1 when some failed (they are listed), 2 on bad input.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lgeom import names
from lgeom.progress import LONG_TASKS, PercentLines
from pipelines.common import plugin_modules, plugin_tags, trial_settings
from pipelines.config import Cell, Config, config_hash, expand_matrix
from pipelines.guards import (
    StudyLock,
    StudyLockedError,
    check_local_resources,
    check_no_running_study,
    check_writable_dir,
    describe_holder,
)
from pipelines.ray_runtime import (
    hidden_credentials,
    ray_session,
    resolve_address,
    spans_hosts,
)
from pipelines.report import main_table, write_report
from pipelines.trial import PROGRESS_AFTER_S, TrialContext, run_cell, work_dir
from tracking.provenance import git_tags, set_experiment_note
from tracking.query import format_table
from tracking.redact import redact
from tracking.registry import register_endpoints
from tracking.runs import (
    ensure_experiment,
    find_finished_run,
    mark_orphaned_runs,
    run_tags,
    tracked_run,
)
from tracking.store import (
    Store,
    StoreUnavailableError,
    connect,
    is_transient,
    resolve_store,
)

# ray is imported inside the functions that use it (seconds to import; every ``lgeom`` command imports
# this module to build its parser), and torch inside the trial, which runs in a Ray worker.


@dataclass
class StudySummary:
    """What a study invocation did, cell by cell."""

    study: str
    parent_run_id: str = ""
    finished: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    orphans_closed: list[str] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    report: Path | None = None
    wall_time_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every cell is FINISHED (now or before)."""
        return not self.failed

    def lines(self) -> list[str]:
        """A human summary."""
        out = [
            f"study {self.study}: {len(self.finished)} cell(s) finished, {len(self.reused)} reused from earlier runs, "
            f"{len(self.failed)} failed ({self.wall_time_s:.0f} s)"
        ]
        if self.orphans_closed:
            out.append(f"  closed {len(self.orphans_closed)} run(s) left RUNNING by a killed invocation")
        for cell, err in self.failed.items():
            out.append(f"  FAILED {cell}: {err}")
        return out


#: Environment variable: seconds a long loop runs before its percentage lines reach a trial's log (default 5;
#: 0 shows every loop from its start).
PROGRESS_AFTER_ENV = "LGEOM_PROGRESS_AFTER_S"


def progress_after_s(environ: Mapping[str, str] | None = None) -> float:
    """The delay before a long loop's progress lines are written (``$LGEOM_PROGRESS_AFTER_S``, default 5 s).

    Raises:
        ValueError: the variable is not a finite number of seconds >= 0 (the message names it and its value).
    """
    raw = (os.environ if environ is None else environ).get(PROGRESS_AFTER_ENV, "").strip()
    if not raw:
        return PROGRESS_AFTER_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{PROGRESS_AFTER_ENV}: expected seconds >= 0 (e.g. 0 or 5), got {raw!r}")
    return value


def _cell_trial(config: dict[str, Any], *, contexts: dict[str, TrialContext]) -> None:
    """The Ray Tune trainable: runs one cell and reports its stages and outcome."""
    import torch
    from ray import tune

    ctx = contexts[config["cell"]]
    cpus = max(1, int(float(tune.get_context().get_trial_resources().required_resources.get("CPU", 1))))
    torch.set_num_threads(cpus)
    summary = run_cell(
        ctx,
        report=lambda m: tune.report({**m, "status": "RUNNING"}),
        callbacks=[_trial_progress(ctx.cell, ctx.bars, ctx.progress_after_s)],
    )
    final = {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and k != "traceback"}
    tune.report({**final, "stage": "done", "stages_done": 4})


def _trial_progress(cell: str, bars: bool, after_s: float = PROGRESS_AFTER_S) -> Any:
    """Per-trial progress: bars that Ray draws on the driver's terminal (``ray.experimental.tqdm_ray``), or,
    when the driver's output is not a terminal, one line per task start/end and at most one per 10 s, and one
    line per 10% of the loops that can run for minutes (:data:`lgeom.progress.LONG_TASKS`) once such a loop has
    run ``after_s`` seconds (``$LGEOM_PROGRESS_AFTER_S``; shorter ones, as in small cells, stay out of the log).
    """
    from ray.experimental.tqdm_ray import tqdm

    open_bars: dict[str, Any] = {}
    last = {"t": 0.0}
    long_lines = PercentLines(
        f"[{cell}] ", tasks=LONG_TASKS, write=lambda line: print(line, flush=True), quiet_for=after_s
    )

    def callback(event: Any) -> None:
        if not bars and event.task in LONG_TASKS:  # a line per 10% of the loops that can run for minutes
            long_lines(event)
            return
        if bars:
            if event.kind == "start":
                open_bars[event.task] = tqdm(total=event.total or None, desc=f"{cell} {event.task}")
            elif event.task in open_bars:
                bar = open_bars[event.task]
                bar.update(max(event.step - bar.n, 0))
                if event.kind == "end":
                    bar.close()
                    del open_bars[event.task]
            return
        now = time.monotonic()
        if event.kind in ("start", "end") or (event.kind == "epoch" and now - last["t"] > 10):
            last["t"] = now
            shown = "  ".join(f"{k} {v:.4g}" for k, v in list(event.metrics.items())[:4] if isinstance(v, (int, float)))
            where = f"epoch {event.epoch + 1}" if event.epoch >= 0 else f"step {event.step}/{event.total or '?'}"
            print(
                f"[{cell}] {event.task} {event.kind if event.kind != 'epoch' else where}  {shown}".rstrip(), flush=True
            )

    return callback


def trial_resources(
    cpu: float, gpu: float, cluster: Mapping[str, float], *, external: bool
) -> tuple[dict[str, float], str | None]:
    """Per-trial resources (``cpu`` CPUs, ``gpu`` GPU fraction) for a Ray cluster that has ``cluster`` now.

    On a cluster the study joins (``external``), nodes come and go (an autoscaler adds GPU workers when
    trials ask for them; a head node may have no CPUs for trials), so the request is kept as is and Ray
    queues the trials until nodes that have the resources join. On the local Ray the study starts itself
    nothing will ever join: a trial needing more CPUs or GPUs than this machine has is an error, and GPU
    trials run on CPUs when there is no GPU at all.

    Returns:
        ``({"cpu": ..., "gpu": ...}, notice)``: ``notice`` is a line for the user (``None`` when all is well).

    Raises:
        ValueError: (local Ray only) a trial would need more CPUs, or GPUs, than the machine has.
    """
    have_cpu, have_gpu = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    if external:
        short = [
            f"{need:g} {what} (the cluster has {have:g} now)"
            for need, have, what in ((cpu, have_cpu, "CPUs"), (gpu, have_gpu, "GPUs"))
            if need > have
        ]
        notice = None
        if short:
            notice = (
                f"study: each trial needs {' and '.join(short)}; trials wait in Ray's queue until nodes with "
                "these resources join (the autoscaler starts them, or start them with `ray start --address`)"
            )
        return {"cpu": cpu, "gpu": gpu}, notice
    if cpu > have_cpu:
        raise ValueError(
            f"study.cpu: expected at most {have_cpu:g} CPUs per trial (what the Ray cluster has), got {cpu:g}"
        )
    if gpu > 0 and have_gpu == 0:
        return {
            "cpu": cpu,
            "gpu": 0.0,
        }, f"study: no GPU in the Ray cluster; running trials on CPUs (study.gpu={gpu:g} ignored)"
    if gpu > have_gpu:
        raise ValueError(
            f"study.gpu: expected at most {have_gpu:g} GPUs per trial (what the Ray cluster has), got {gpu:g}"
        )
    return {"cpu": cpu, "gpu": gpu}, None


def check_store_for_cluster(
    store: Store,
    address: str | None,
    node_ips: Sequence[str],
    local_ips: Collection[str] = (),
    *,
    waits_for_nodes: bool = False,
) -> None:
    """Make sure every trial can write to ``store``: the embedded store (a sqlite file and ``./mlruns`` on
    this machine) only works when all trials run on this machine.

    Args:
        address: the cluster joined (``None``: the local Ray the study starts).
        node_ips, local_ips: the cluster's alive nodes and this machine's addresses.
        waits_for_nodes: the trials need nodes that are not up yet (see :func:`trial_resources`); they
            may start on any machine, so a joined cluster counts as spanning hosts.

    Raises:
        ValueError: embedded store and a Ray cluster whose trials may run on other machines
            (:func:`pipelines.ray_runtime.spans_hosts`); the message says what to set.
    """
    if store.mode != "embedded" or address is None:
        return
    if waits_for_nodes or spans_hosts(address, node_ips, local_ips):
        why = (
            "trials wait for nodes that are not up yet, which may be other machines"
            if waits_for_nodes
            else f"its nodes {', '.join(node_ips)} are not all on this machine"
            if node_ips
            else "it is another machine"
        )
        raise ValueError(
            f"MLFLOW_TRACKING_URI: expected an MLflow server that every Ray node can reach when the study runs on "
            f"the cluster at {address} ({why}), got the embedded store {store.tracking_uri}, which trials on "
            "other machines would not see (each would write its own mlflow.db); set "
            "MLFLOW_TRACKING_URI=http://<host>:<port> (see infra/docker-compose.yml) and pass it to the job, "
            "or run without --address / RAY_ADDRESS to use a local Ray"
        )


def ui_command(store: Store) -> str:
    """How to look at ``store``'s runs: the ``mlflow ui`` command for the embedded store (its actual
    database and artifact folder), else the server's address.
    """
    if store.mode == "embedded":
        return (
            f"MLflow UI: mlflow ui --backend-store-uri {store.tracking_uri} "
            f"--default-artifact-root {store.artifact_root}"
            "   (then open http://127.0.0.1:5000)"
        )
    return f"MLflow UI: {redact(store.tracking_uri)}"


def run_trials(
    cfg: Config, cells: list[Cell], contexts: dict[str, TrialContext], resources: dict[str, float]
) -> list[dict[str, Any]]:
    """One Ray Tune trial per cell (grid search over cell names) on the connected Ray; returns each cell's
    final report.
    """
    from ray import tune

    storage = (Path(cfg.output_dir) / cfg.name / "ray").resolve()
    trainable = tune.with_resources(tune.with_parameters(_cell_trial, contexts=contexts), resources)
    tuner = tune.Tuner(
        trainable,
        param_space={"cell": tune.grid_search([c.name for c in cells])},
        tune_config=tune.TuneConfig(
            reuse_actors=cfg.study.reuse_actors, max_concurrent_trials=cfg.study.max_concurrent or None
        ),
        run_config=tune.RunConfig(
            name=f"study-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(storage),
            failure_config=tune.FailureConfig(max_failures=cfg.study.max_failures),
            verbose=1,
        ),
    )

    with hidden_credentials():  # Tune would copy AWS_* into each trial's (logged) runtime environment
        grid = tuner.fit()
    out = []
    for result in grid:
        cell = (result.config or {}).get("cell", "?")
        metrics = result.metrics or {}
        if result.error is not None or metrics.get("stage") != "done":
            out.append(
                {
                    "cell": cell,
                    "status": "FAILED",
                    "error": f"trial crashed: {result.error}" if result.error else "trial ended early",
                }
            )
        else:
            out.append({"cell": cell, **metrics})
    return out


def main(
    cfg: Config, *, address: str | None = None, report_dir: Path | None = None, register: bool = False
) -> StudySummary:
    """Run the study of ``cfg``: skip FINISHED cells, close orphans, run the rest on Ray Tune, log the
    summary, comparison table and figures to the parent run, and write the report. With ``register`` the
    endpoints of every FINISHED cell (finished now or reused) go to the Model Registry
    (:func:`tracking.registry.register_endpoints`).

    Before anything is created (no MLflow run, no Ray): the output and report folders must be writable,
    a local Ray's per-trial CPUs / GPUs must fit this machine, and no other study of the same name may
    be running in the same output folder (:class:`~pipelines.guards.StudyLock`) or, on this host, in the
    same store.

    Raises:
        ValueError: an unwritable folder, a resource request larger than the machine or a bad
            ``$LGEOM_PROGRESS_AFTER_S`` (bad input).
        pipelines.guards.StudyLockedError: the same study is running already (names its pid, host, start).
        StudyFailed: some cells failed (the summary lists them).
    """
    t0 = time.perf_counter()
    cells = expand_matrix(cfg)
    after_s = progress_after_s()  # a bad $LGEOM_PROGRESS_AFTER_S is bad input: found before anything is created
    out = check_writable_dir(cfg.output_dir, "output_dir")
    check_writable_dir(
        report_dir or Path("reports") / cfg.name, "--report-dir" if report_dir else f"report folder reports/{cfg.name}"
    )
    if resolve_address(address) is None:
        check_local_resources(cfg.study.cpu, cfg.study.gpu)
    with StudyLock(out / cfg.name, cfg.name) as lock:
        if lock.previous:
            print(
                f"study {cfg.name}: taking over the lock of a study that is no longer running "
                f"({describe_holder(lock.previous)})"
            )
        return _run_study(
            cfg, cells, address=address, report_dir=report_dir, t0=t0, register=register, progress_after=after_s
        )


def _run_study(
    cfg: Config,
    cells: list[Cell],
    *,
    address: str | None,
    report_dir: Path | None,
    t0: float,
    register: bool = False,
    progress_after: float = PROGRESS_AFTER_S,
) -> StudySummary:
    """The study itself, once :func:`main` checked its inputs and holds the lock."""
    store = connect()
    exp_id = ensure_experiment(store, cfg.name)
    check_no_running_study(store, exp_id, cfg.name)
    summary = StudySummary(cfg.name)
    summary.orphans_closed = mark_orphaned_runs(store, exp_id, status="KILLED")
    todo: list[Cell] = []
    reused_runs: dict[str, str] = {}  # cell -> its FINISHED run, registered with --register like fresh ones
    for cell in cells:
        done = find_finished_run(store, exp_id, config_hash(cell.config), stage=names.STAGE_TRIAL, cell=cell.name)
        if done is not None:
            summary.reused.append(cell.name)
            reused_runs[cell.name] = done.info.run_id
        else:
            todo.append(cell)
    print(
        f"study {cfg.name}: {len(cells)} cell(s), {len(summary.reused)} already FINISHED, {len(todo)} to run; "
        f"MLflow: {store.describe()}"
    )
    params = {
        "preset": cfg.name,
        "n_cells": len(cells),
        "n_to_run": len(todo),
        "study.cpu": cfg.study.cpu,
        "study.gpu": cfg.study.gpu,
        "study.matrix": {k: v for k, v in cfg.study.matrix.items()},
    }
    with contextlib.ExitStack() as stack:
        resources: dict[str, float] = {}
        if todo:  # Ray first: a cluster that cannot run the trials is reported before any run is created
            ray_info = stack.enter_context(ray_session(address, py_modules=plugin_modules(c.config for c in todo)))
            external = ray_info["external"]
            resources, notice = trial_resources(cfg.study.cpu, cfg.study.gpu, ray_info["resources"], external=external)
            check_store_for_cluster(
                store,
                ray_info["address"] if external else None,
                ray_info["node_ips"],
                ray_info["local_ips"],
                waits_for_nodes=external and notice is not None,
            )
            if notice:
                print(notice, file=sys.stderr, flush=True)
        set_experiment_note(store, exp_id, describe_study(cfg))
        parent_tags = run_tags(
            study=cfg.name,
            stage=names.STAGE_STUDY,
            extra={names.TAG_NOTE: describe_invocation(cfg, cells, todo, report_dir)},
        )
        parent = stack.enter_context(
            tracked_run(
                store,
                experiment_id=exp_id,
                run_name=f"study {time.strftime('%Y-%m-%d %H:%M:%S')}",
                tags=parent_tags,
                params=params,
                adopt_project_run=True,
            )
        )
        summary.parent_run_id = parent.run_id
        check_no_running_study(store, exp_id, cfg.name, own_run=parent.client.get_run(parent.run_id))
        trial_tags = {**git_tags(), names.TAG_SOURCE_NAME: ENTRY_POINT}
        contexts = {
            c.name: TrialContext(
                cfg.name,
                c.name,
                trial_settings(c.config),
                exp_id,
                parent.run_id,
                store,
                str(work_dir(cfg.output_dir, cfg.name, c.name, c.config)),
                bars=sys.stdout.isatty(),
                tags={**trial_tags, **plugin_tags(c.config)},
                progress_after_s=progress_after,
            )
            for c in todo
        }
        results = summary.trials = run_trials(cfg, todo, contexts, resources) if todo else []
        for r in results:
            if r.get("status") == "FINISHED":
                summary.finished.append(r["cell"])
                if register and r.get("run_id"):
                    register_endpoints(store, r["run_id"], study=cfg.name, cell=r["cell"])
            else:
                summary.failed[r["cell"]] = r.get("error") or "unknown error"
        if register:  # idempotent: a cell registered by an earlier invocation keeps its versions
            for cell_name, run_id in reused_runs.items():
                register_endpoints(store, run_id, study=cfg.name, cell=cell_name)
        # A trial whose worker died leaves its child run RUNNING: close it before the parent ends.
        mark_orphaned_runs(store, exp_id, status="FAILED", parent_run_id=parent.run_id, include_parent=False)
        summary.wall_time_s = time.perf_counter() - t0
        summary.report = finish_study(cfg, store, parent, summary, report_dir)
        if summary.failed:
            raise StudyFailed(summary)
    return summary


#: The entry point recorded as each trial's ``mlflow.source.name`` (instead of Ray's worker script).
ENTRY_POINT = "lgeom study"


def describe_study(cfg: Config) -> str:
    """The experiment's description: the study and its preset's description."""
    text = (
        f"Study `{cfg.name}` (`lgeom study --preset {cfg.name}`): one child run per cell of the matrix under one "
        "parent run per invocation."
    )
    return f"{text}\n\n{cfg.description.strip()}" if cfg.description.strip() else text


def describe_invocation(cfg: Config, cells: Sequence[Cell], todo: Sequence[Cell], report_dir: Path | None) -> str:
    """The parent run's description: preset, matrix axes, number of cells, where the report goes."""
    axes = "; ".join(f"`{k}` in {json.dumps(v, default=str)}" for k, v in cfg.study.matrix.items()) or "none (one cell)"
    out = report_dir or Path("reports") / cfg.name
    return (
        f"`lgeom study --preset {cfg.name}`: {len(cells)} cell(s) ({len(todo)} run now, {len(cells) - len(todo)} "
        f"already FINISHED), matrix axes: {axes}. Report: artifacts `{names.REPORT_DIR}/{names.REPORT_HTML}` and "
        f"`{names.REPORT_DIR}/{names.REPORT_MARKDOWN}` of this run, and the folder {out}."
    )


class StudyFailed(RuntimeError):
    """Some cells failed; carries the :class:`StudySummary` (the parent run ends FAILED)."""

    def __init__(self, summary: StudySummary) -> None:
        self.summary = summary
        super().__init__(f"{len(summary.failed)} cell(s) failed: " + ", ".join(summary.failed))


def finish_study(cfg: Config, store: Any, parent: Any, summary: StudySummary, report_dir: Path | None) -> Path | None:
    """Log the summary to the parent run and write the report (figures, tables) there and to ``report_dir``."""
    parent.log_metrics(
        {
            names.study_metric("cells_finished"): len(summary.finished),
            names.study_metric("cells_reused"): len(summary.reused),
            names.study_metric("cells_failed"): len(summary.failed),
            names.study_metric("wall_time_s"): summary.wall_time_s,
        }
    )
    parent.set_tags({names.TAG_FAILED_CELLS: ", ".join(summary.failed) or "none"})
    if not summary.finished and not summary.reused:
        return None
    out = report_dir or Path("reports") / cfg.name
    return write_report(cfg.name, out, store=store, parent=parent)


def add_arguments(parser: Any, step: str) -> None:
    """Cluster and resource options."""
    parser.add_argument("--address", default="", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--cpu", type=float, default=0.0, help="CPUs per trial (0: the preset's study.cpu)")
    parser.add_argument("--gpu", type=float, default=-1.0, help="GPU fraction per trial (-1: the preset's study.gpu)")
    parser.add_argument("--report-dir", default="", help="where to write the report (default: reports/<study>)")
    parser.add_argument(
        "--register",
        action="store_true",
        help="put the endpoints of every FINISHED cell (run now or reused) in the Model Registry "
        "(<cell>-a / <cell>-b, alias = the study; a version registered before is reused)",
    )


def cli(cfg: Config, args: Any) -> int:
    """``lgeom study``: run, print the summary, the comparison table, the report path and the UI command."""
    if args.cpu < 0:
        raise ValueError(f"--cpu: expected a number >= 0 (0 keeps study.cpu), got {args.cpu!r}")
    if args.gpu < -1:
        raise ValueError(f"--gpu: expected a number >= 0 (-1 keeps study.gpu), got {args.gpu!r}")
    changes = {}
    if args.cpu > 0:
        changes["study.cpu"] = args.cpu
    if args.gpu >= 0:
        changes["study.gpu"] = args.gpu
    if changes:
        cfg = cfg.replace(**changes)
    if args.cell is not None:
        cells = [c for c in expand_matrix(cfg) if c.name == args.cell]
        if not cells:
            raise ValueError(
                f"--cell: expected one of {', '.join(c.name for c in expand_matrix(cfg))}, got {args.cell!r}"
            )
        cfg = cells[0].config.replace(**{"study.matrix": {}})
    try:
        summary = main(
            cfg,
            address=args.address or None,
            report_dir=Path(args.report_dir) if args.report_dir else None,
            register=bool(getattr(args, "register", False)),
        )
        code = 0
    except StudyFailed as err:
        summary, code = err.summary, 1
    except StudyLockedError as err:
        print(f"lgeom study: refused: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - only a lost store is handled here; anything else propagates
        if isinstance(err, StoreUnavailableError) or not is_transient(err):
            raise  # a store that never answered is reported by the CLI as it was
        print(
            f"lgeom study: failed: the MLflow store stopped answering ({type(err).__name__}: "
            f"{redact(str(err)).strip().splitlines()[0][:300] if str(err).strip() else 'no details'}); rerun the same "
            "command once it is back: FINISHED cells are kept, the others resume, and runs left RUNNING are closed",
            file=sys.stderr,
        )
        return 1
    print("\n".join(summary.lines()))
    if summary.finished or summary.reused:
        print()
        print(format_table(main_table(cfg.name), "text"))
    if summary.report is not None:
        print(f"\nreport: {summary.report}")
    print(ui_command(resolve_store()))
    return code


if __name__ == "__main__":
    from pipelines.cli import main as cli_main

    sys.exit(cli_main(["study", *sys.argv[1:]]))
