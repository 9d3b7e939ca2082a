"""Fixtures of the tests under tests/pipelines/: ``study``, a known study logged to the session's MLflow server (see
:mod:`tests.tracking.known_study`).
"""

from tests.tracking.known_study import study  # noqa: F401 (a fixture)
