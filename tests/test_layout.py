"""The test tree mirrors the source tree, so every module has its tests and no test outlives its module.

The rule, for the source packages ``lgeom``, ``tracking`` and ``pipelines``:

* a module ``<pkg>/<sub>/<mod>.py`` is tested in ``tests/<pkg>/<sub>/test_<mod>.py``; a private module
  drops its underscore (``lgeom/_checks.py`` -> ``tests/lgeom/test_checks.py``);
* a package whose ``__init__.py`` holds code of its own is tested in ``test_<package>.py`` inside the
  package's test folder (``lgeom/data/__init__.py`` -> ``tests/lgeom/data/test_data.py``); beside that
  folder (``tests/lgeom/test_data.py``) is accepted too, for a package that has no test folder;
* an ``__init__.py`` that only re-exports (or a ``__main__.py``) needs no test: :data:`NO_LOGIC` lists them;
* the other way round, every ``tests/<pkg>/**/test_<name>.py`` names an existing module, package or, in
  :data:`NON_MODULE_SOURCES`, a source folder that is not Python;
* end-to-end scenarios that run many modules together (CLI subprocesses, whole studies) live in
  ``tests/scenarios/`` under free names; repository-level checks (install, layering, infra) in ``tests/``.

Test folders below ``tests/<pkg>/`` are packages (``__init__.py``) so that same-named modules of different
folders (``tests/lgeom/models/test_registry.py``, ``tests/lgeom/data/test_registry.py``) never clash.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lgeom", "tracking", "pipelines")

#: Source modules without logic of their own, hence without a test module. Keep it short: a module that
#: gains code leaves this list and gets its test.
NO_LOGIC: dict[str, str] = {
    "lgeom/__init__.py": "re-exports the public API",
    "lgeom/hessian/__init__.py": "re-exports the estimators",
    "lgeom/models/__init__.py": "imports the architectures (registering them) and re-exports the registry",
    "lgeom/permutation/__init__.py": "re-exports the spec and the tracer",
    "pipelines/__init__.py": "empty",
    "pipelines/config/__init__.py": "re-exports the config's public names",
    "tracking/__init__.py": "docstring only",
}

#: Test modules of sources that are not Python modules: test module -> what it tests.
NON_MODULE_SOURCES: dict[str, str] = {
    "tests/pipelines/test_presets.py": "pipelines/presets/*.yaml",
}


def _source_modules() -> list[Path]:
    return sorted(p.relative_to(ROOT) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _test_modules() -> list[Path]:
    return sorted(p.relative_to(ROOT) for pkg in PACKAGES for p in (ROOT / "tests" / pkg).rglob("test_*.py"))


def expected_tests(module: Path) -> list[Path]:
    """Where the tests of a source module may be, preferred first."""
    folder = Path("tests") / module.parent
    if module.name == "__init__.py":
        package = module.parent.name
        return [folder / f"test_{package}.py", folder.parent / f"test_{package}.py"]
    return [folder / f"test_{module.stem.lstrip('_')}.py"]


def sources_named_by(test: Path) -> list[Path]:
    """The source modules a test module may name."""
    source = test.parent.relative_to("tests")
    name = test.stem.removeprefix("test_")
    candidates = [source / f"{name}.py", source / f"_{name}.py", source / name / "__init__.py"]
    if source.name == name:
        candidates.append(source / "__init__.py")
    return candidates


def test_every_source_module_has_its_test_module() -> None:
    missing = [
        f"{m} -> {expected_tests(m)[0]}"
        for m in _source_modules()
        if str(m) not in NO_LOGIC
        and m.name != "__main__.py"
        and not any((ROOT / t).is_file() for t in expected_tests(m))
    ]
    assert not missing, "source modules without their test module:\n  " + "\n  ".join(missing)


def test_every_test_module_names_an_existing_source() -> None:
    orphans = [
        str(t)
        for t in _test_modules()
        if str(t) not in NON_MODULE_SOURCES and not any((ROOT / s).is_file() for s in sources_named_by(t))
    ]
    assert not orphans, "test modules that name no source module (rename or move them):\n  " + "\n  ".join(orphans)


def test_the_lists_name_only_what_exists() -> None:
    assert all((ROOT / m).is_file() for m in NO_LOGIC), "NO_LOGIC names a module that is gone"
    assert all((ROOT / t).is_file() for t in NON_MODULE_SOURCES), "NON_MODULE_SOURCES names a test module that is gone"
    assert all(list(ROOT.glob(s)) for s in NON_MODULE_SOURCES.values()), "a non-module source is gone"


def test_test_folders_are_packages() -> None:
    folders = {p.parent for pkg in (*PACKAGES, "scenarios") for p in (ROOT / "tests" / pkg).rglob("test_*.py")}
    missing = sorted(str(f.relative_to(ROOT)) for f in folders | {ROOT / "tests"} if not (f / "__init__.py").is_file())
    assert not missing, "test folders without __init__.py (same-named test modules would clash): " + ", ".join(missing)
