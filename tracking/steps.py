"""One MLflow run per pipeline step: a step's bundle (``connect``, ``probe``), a trained endpoint
(``train``), a hyperparameter search (``tune``).

Everything about the cell arrives as plain values from the pipelines caller (study, cell name, config
hash, flattened params), so ``tracking`` never reads a pipeline config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from lgeom import names
from lgeom.params import count_params
from tracking.bundle import Bundle, log_bundle
from tracking.log import TrackedRun, log_metrics, log_model, log_params, log_series
from tracking.runs import (
    end_run,
    ensure_experiment,
    find_finished_run,
    run_tags,
    start_run,
    tracked_run,
)
from tracking.store import Store, connect


def log_step_bundle(
    bundle: Bundle | str | os.PathLike[str],
    *,
    study: str,
    cell: str,
    config_hash: str,
    stage: str,
    params: Mapping[str, Any],
    model: nn.Module | None = None,
    store: Store | None = None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    reuse: bool = False,
) -> str:
    """Log one step's bundle as its own run and return the run id: what ``connect`` / ``probe`` call.

    The run goes to experiment ``study`` in ``store`` (default: resolved from the environment and
    health-checked), with tags ``lgeom.study``, ``lgeom.cell`` = ``cell``, ``lgeom.config_hash`` =
    ``config_hash``, ``lgeom.stage`` = ``stage`` and ``mlflow.parentRunId`` when ``parent_run_id`` is
    given; params = ``params`` (the cell's flattened config). It ends FINISHED only after every upload is
    verified, else FAILED with the error (which is re-raised).

    Args:
        model: the endpoints' architecture (see :func:`tracking.bundle.log_bundle`).
        reuse: return the id of a FINISHED run with the same config hash, stage and cell instead of logging.

    Raises:
        tracking.store.StoreUnavailableError: the store does not answer; logging/verification errors.
    """
    store = store or connect()
    exp_id = ensure_experiment(store, study)
    if reuse:
        found = find_finished_run(store, exp_id, config_hash, stage=stage, cell=cell)
        if found is not None:
            return found.info.run_id
    tags = run_tags(study=study, stage=stage, cell=cell, config_hash=config_hash, parent_run_id=parent_run_id)
    with tracked_run(
        store,
        experiment_id=exp_id,
        run_name=run_name or f"{stage}:{cell}",
        parent_run_id=parent_run_id,
        tags=tags,
        params=params,
        adopt_project_run=True,
    ) as run:
        log_bundle(run, bundle, model=model)
        return run.run_id


def log_train_result(run: TrackedRun, name: str, module: nn.Module, result: Any, *, log_model_too: bool = True) -> None:
    """Log one trained endpoint (an ``lgeom.train.TrainResult``) as endpoint ``name`` of ``run``:

    * final metrics ``endpoint/<name>/{train,test}_{loss,acc}`` (eval mode, :func:`lgeom.names.endpoint_metric`)
      plus ``endpoint/<name>/samples_per_s``, ``endpoint/<name>/n_params``;
    * the per-epoch history as series ``train/<name>/<column>`` with step = epoch
      (:func:`lgeom.names.history_metric`);
    * the trained ``module`` as MLflow PyTorch model ``name`` (when ``log_model_too``).
    """
    n_params = count_params(module)
    final = {
        names.endpoint_metric(name, split, k): getattr(res, k)
        for split, res in result.final.items()
        for k in names.SPLIT_QUANTITIES
    }
    final[names.endpoint_stat_metric(name, "samples_per_s")] = result.samples_per_s
    final[names.endpoint_stat_metric(name, "n_params")] = n_params
    log_metrics(run, final)
    log_params(run, {names.PARAM_N_PARAMS: n_params})
    history = result.history
    epochs = [int(e) for e in history["epoch"]]
    log_series(run, name, history, skip=("epoch",), steps=epochs, naming=names.history_metric)
    if log_model_too:
        log_model(run, name, module)


def log_tune_results(
    outcome: Mapping[str, Any],
    *,
    study: str,
    cell: str,
    config_hash: str,
    params: Mapping[str, Any],
    preset_path: str | os.PathLike[str] | None = None,
    store: Store | None = None,
) -> str:
    """Log a hyperparameter search (``pipelines.tune``) and return the id of its ``tune`` run.

    One parent run (experiment ``study``, stage ``tune``, tags ``lgeom.cell`` = ``cell`` and
    ``lgeom.config_hash`` = ``config_hash`` of the tuned cell) with the cell's ``params`` plus
    ``best.<key>``, metric ``best_test_acc`` and the tuned preset file as artifact ``tuned/<file>``; one
    child run per trial (stage ``tune-trial``) with the trial's sampled values as params and ``test_acc``
    / ``epochs`` as metrics. Trials that failed end FAILED with their error recorded.

    Args:
        outcome: ``{"best": {...}, "best_test_acc": float, "trials": [{..., "test_acc", "epochs", "error"}]}``.

    Raises:
        ValueError: ``outcome`` lacks ``best`` or ``trials``; tracking.store.StoreUnavailableError.
    """
    if "best" not in outcome or "trials" not in outcome:
        raise ValueError(f"tune outcome: expected keys 'best' and 'trials', got {sorted(outcome)}")
    store = store or connect()
    exp_id = ensure_experiment(store, study)
    tags = run_tags(study=study, stage=names.STAGE_TUNE, cell=cell, config_hash=config_hash)
    best = {names.tune_best_param(k): v for k, v in outcome["best"].items()}
    with tracked_run(
        store,
        experiment_id=exp_id,
        run_name=f"{names.STAGE_TUNE}:{cell}",
        tags=tags,
        params={**params, **best},
        adopt_project_run=True,
    ) as parent:
        if outcome.get(names.TUNE_BEST_METRIC) is not None:
            parent.log_metrics({names.TUNE_BEST_METRIC: outcome[names.TUNE_BEST_METRIC]})
        if preset_path is not None:
            parent.log_artifact(preset_path, names.TUNED_DIR)
        for i, trial in enumerate(outcome["trials"]):
            values = {k: v for k, v in trial.items() if k not in (*names.TUNE_TRIAL_METRICS, "error")}
            child_tags = run_tags(study=study, stage=names.STAGE_TUNE_TRIAL, cell=cell, parent_run_id=parent.run_id)
            child = start_run(
                store,
                experiment_id=exp_id,
                run_name=f"trial {i}",
                parent_run_id=parent.run_id,
                tags=child_tags,
                params=values,
                check=False,
            )
            if trial.get("error"):
                end_run(child, "FAILED", error=RuntimeError(str(trial["error"])))
                continue
            try:
                child.log_metrics({k: trial[k] for k in names.TUNE_TRIAL_METRICS if trial.get(k) is not None})
            except BaseException as err:
                end_run(child, "FAILED", error=err)
                raise
            end_run(child, "FINISHED")
        return parent.run_id
