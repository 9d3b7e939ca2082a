"""MLflow runs, S3 artifacts, comparison queries and figures. Submodules import mlflow lazily so that
``tracking.figures`` stays usable without it.

Modules:

* ``tracking.store`` — where runs go (:func:`~tracking.store.connect`, embedded ``./mlflow.db`` or
  ``$MLFLOW_TRACKING_URI``), health checks that fail fast, retries with backoff.
* ``tracking.runs`` — experiments per study, parent/child runs (:func:`~tracking.runs.tracked_run`),
  FINISHED only after verified uploads, reuse by config hash, closing orphaned runs.
* ``tracking.log`` — metrics in batches, series, artifacts, PyTorch models, result bundles
  (:func:`~tracking.log.log_bundle`, :func:`~tracking.log.log_step_bundle`).
* ``tracking.query`` — pandas tables: runs, compare, path series, the depth study's tables.
* ``tracking.plots`` — study figures logged to the parent run.
* ``tracking.local_stack`` — SeaweedFS S3 + MLflow server on loopback (``lgeom up`` / ``down``, tests).
* ``tracking.redact`` — keeping credentials out of params, tags, notes and artifacts.
"""
