"""lgeom stays pure: importing every lgeom module pulls in no outer layer or tracking dependency."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("mlflow", "ray", "optuna", "boto3", "botocore", "pipelines", "tracking")

SCRIPT = f"""
import importlib, pkgutil, sys
import lgeom
for info in pkgutil.walk_packages(lgeom.__path__, "lgeom."):
    importlib.import_module(info.name)
import lgeom.surfaces as s
for name in s.__all__:
    try:
        getattr(s, name)
    except (ImportError, AttributeError):
        pass
bad = sorted({{m.split(".")[0] for m in sys.modules}} & set({FORBIDDEN!r}))
print(",".join(bad))
"""


def test_lgeom_imports_no_outer_layer() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"lgeom imported: {out.stdout.strip()}"


def test_public_api_is_listed() -> None:
    import lgeom

    assert lgeom.__all__ == sorted(lgeom.__all__)
    for name in lgeom.__all__:
        assert hasattr(lgeom, name), name
