"""MLflow runs, S3 artifacts, comparison queries and figures. Submodules import mlflow lazily so that
``tracking.figures`` stays usable without it."""
