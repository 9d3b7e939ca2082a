"""MLflow runs, S3 artifacts, comparison queries and figures. Submodules import mlflow lazily so that
``tracking.figures`` stays usable without it. ``tracking`` builds on ``lgeom`` and never imports
``pipelines``: what it needs about a cell (name, config hash, params) arrives as plain values. Metric, tag
and artifact names come from ``lgeom.names``.

Modules (each imports only the ones listed before it, plus ``store``/``redact``):

* ``tracking.store`` — where runs go (:func:`~tracking.store.connect`, embedded ``./mlflow.db`` or
  ``$MLFLOW_TRACKING_URI``), health checks that fail fast, retries with backoff.
* ``tracking.log`` — the run handle (:class:`~tracking.log.TrackedRun`) and logging into it: metrics in
  batches, series, params, tags, artifacts, PyTorch models, upload verification.
* ``tracking.runs`` — experiments per study, parent/child runs (:func:`~tracking.runs.tracked_run`),
  FINISHED only after verified uploads, reuse by config hash, closing orphaned runs.
* ``tracking.bundle`` — the result folder steps write (:class:`~tracking.bundle.Bundle`, its layout) and
  :func:`~tracking.bundle.log_bundle`, which turns it into a run.
* ``tracking.steps`` — one run per pipeline step: :func:`~tracking.steps.log_step_bundle`,
  :func:`~tracking.steps.log_train_result`, :func:`~tracking.steps.log_tune_results`.
* ``tracking.query`` — pandas tables: runs, compare, path series, the depth study's tables.
* ``tracking.plots`` — study figures logged to the parent run.
* ``tracking.local_stack`` — SeaweedFS S3 + MLflow server on loopback (``lgeom up`` / ``down``, tests).
* ``tracking.processes`` — whether a process (pid + start time) still runs: stack health, orphaned runs.
* ``tracking.redact`` — keeping credentials out of params, tags, notes and artifacts.
"""
