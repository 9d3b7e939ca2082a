"""The ``lgeom`` console script: checks that the service is installed, then runs :func:`pipelines.cli.main`.

``pip install lgeom`` installs the pure library only; the command needs the ``study`` extra. This module
imports nothing of the service, so a missing extra is one clear line instead of an import traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence

# What the service needs beyond the pure library (the `study` extra of pyproject.toml), by import name.
SERVICE_MODULES = ("yaml", "pandas", "matplotlib", "mlflow", "ray", "optuna", "boto3")
EXIT_BAD_INPUT = 2


def missing_service_modules() -> list[str]:
    """Import names of the service's dependencies that are not installed (empty when all are)."""
    return [name for name in SERVICE_MODULES if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lgeom`` with ``argv`` (default ``sys.argv[1:]``); exit status 2 when the service is missing."""
    missing = missing_service_modules()
    if missing:
        print(
            f"lgeom: error: the lgeom command needs the service extra, expected {', '.join(missing)} to be "
            "installed, got none of them; install it with: pip install 'lgeom[study]'",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    # Imported by name only now that its dependencies are known to be present.
    cli = importlib.import_module("pipelines.cli")
    return int(cli.main(argv))


if __name__ == "__main__":
    sys.exit(main())
