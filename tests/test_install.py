"""Install footprint: ``pip install lgeom`` is the pure library; the service is the ``study`` extra.

The core's requirement closure is computed from pyproject.toml and the installed distributions' metadata.
A bare virtual environment then gets only that closure (links to the installed files, so the torch wheel is
reused instead of reinstalled) and must import every lgeom module, train a tiny model, and find none of
the service's packages; the ``lgeom`` command there says which extra to install instead of a traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ("mlflow", "ray", "optuna", "boto3", "botocore", "pandas", "matplotlib", "yaml")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def core_closure() -> dict[str, metadata.Distribution]:
    """Installed distributions that ``pip install lgeom`` (no extras) pulls in, by normalised name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = {**default_environment(), "extra": ""}
    todo = [Requirement(r) for r in project["dependencies"]]
    found: dict[str, metadata.Distribution] = {}
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = _normal(req.name)
        if name in found:
            continue
        dist = metadata.distribution(req.name)
        found[name] = dist
        todo.extend(Requirement(r) for r in dist.requires or [])
    return found


def test_the_core_install_pulls_no_service_package() -> None:
    closure = core_closure()
    assert {"torch", "numpy", "scipy"} <= set(closure)
    pulled = {"mlflow", "mlflow-skinny", "ray", "optuna", "boto3", "botocore", "pandas", "matplotlib"} & set(closure)
    assert not pulled, f"pip install lgeom would pull {sorted(pulled)}"


def test_the_service_extra_lists_the_service() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    study = {_normal(Requirement(r).name) for r in extras["study"]}
    assert {"mlflow", "ray", "optuna", "boto3"} <= study
    assert any("study" in r for r in extras["test"]), "make test must install the service extra"


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the core closure (linked from this environment) and the repository on its path."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    source = Path(sysconfig.get_paths()["purelib"])
    for dist in core_closure().values():
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            target = site / top
            if (source / top).exists() and not target.exists():
                target.symlink_to(source / top)
    (site / "lgeom-repo.pth").write_text(f"{ROOT}\n")
    return python


def _run(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_lgeom_imports_and_trains_with_only_the_core(bare_python: Path) -> None:
    code = f"""
import importlib, importlib.util, pkgutil
import lgeom
for info in pkgutil.walk_packages(lgeom.__path__, "lgeom."):
    importlib.import_module(info.name)
present = [m for m in {SERVICE!r} if importlib.util.find_spec(m) is not None]
assert not present, present
model = lgeom.build_model("mlp", num_classes=2, in_shape=(2,), depth=1, width=8)
splits = lgeom.build_splits("moons", n_train=64, n_test=32, seed=0)
spec = lgeom.TrainSpec(epochs=1, batch_size=32, device="cpu")
result = lgeom.train(model, splits.train, splits.test, spec, progress=False)
print("ok", len(result.history))
"""
    out = _run(bare_python, code)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().startswith("ok")


def test_the_command_without_the_service_names_the_extra(bare_python: Path) -> None:
    out = _run(bare_python, "import sys; from pipelines.launcher import main; sys.exit(main(['train']))")
    assert out.returncode == 2, out.stderr[-3000:]
    assert "pip install 'lgeom[study]'" in out.stderr
    assert "mlflow" in out.stderr
    assert "Traceback" not in out.stderr
