"""Fixtures of the tests under tests/pipelines/: ``study``, a known study logged to the session's MLflow server (see
:mod:`tests.tracking.known_study`).
"""

from tests.pipelines.plugin_files import plugins  # noqa: F401,E402 (a fixture)
from tests.tracking.known_study import study  # noqa: F401 (a fixture)
