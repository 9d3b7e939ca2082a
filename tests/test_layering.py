"""Layers point one way (``lgeom`` <- ``tracking`` <- ``pipelines``) and no first-party modules import each
other in a circle.

The checks read the source with :mod:`ast` (nothing is imported), so an import inside a function or an
``if TYPE_CHECKING:`` block counts as much as one at the top of a module. The rules:

* ``lgeom`` imports none of ``tracking``, ``pipelines``, ``mlflow``, ``ray``, ``optuna``, ``boto3``,
  ``botocore`` -- anywhere, ``TYPE_CHECKING`` blocks included -- and importing every lgeom module at run
  time loads none of them either (a subprocess checks ``sys.modules``).
* ``tracking`` imports nothing from ``pipelines``, anywhere (``TYPE_CHECKING`` blocks included: a type
  from an outer layer is still a dependency on it).
* No cycle between first-party modules. The import graph has an edge ``A -> B`` when module ``A`` imports
  ``B`` at any depth (module level, in a function, in a conditional), except inside ``if TYPE_CHECKING:``
  (never executed, so it cannot close a cycle). ``from pkg import name`` is an edge to ``pkg.name`` when
  that is a module, else to ``pkg`` (its ``__init__``). The parent packages Python initialises on the way
  to a module are not edges: ``lgeom.path`` importing ``lgeom.names`` does not depend on ``lgeom/__init__``.
  So a submodule importing its package's ``__init__`` (``from lgeom import build_model``) is a cycle only
  when that ``__init__`` imports the submodule back. ``importlib.import_module`` calls are not followed.
  Every strongly connected component of more than one module is reported.
* Private names (``_name``) of a first-party module are not imported by another module of ``tracking``
  or ``pipelines``: what is shared is public and documented.
* ``tracking`` and ``pipelines`` import first-party modules at module top, not inside functions (only
  heavy third-party libraries -- mlflow, ray, torch, matplotlib -- are imported lazily, for start-up time).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lgeom", "tracking", "pipelines")
LGEOM_FORBIDDEN = ("mlflow", "ray", "optuna", "boto3", "botocore", "pipelines", "tracking")


@dataclass(frozen=True)
class Import:
    """One import statement's target as written (``module``) and the names it takes from it."""

    source: str
    module: str
    names: tuple[str, ...]
    line: int
    type_checking: bool


def module_name(path: Path) -> str:
    """``lgeom/surfaces/pca.py`` -> ``lgeom.surfaces.pca``; ``lgeom/__init__.py`` -> ``lgeom``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def first_party_files() -> dict[str, Path]:
    """Every module of the three packages by dotted name."""
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path) -> Iterator[Import]:
    """Every import in the module, at any depth, marked when inside ``if TYPE_CHECKING:``."""
    is_package = path.name == "__init__.py"

    def walk(node: ast.AST, guarded: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk_stmt(stmt, True)
                for stmt in child.orelse:
                    yield from walk_stmt(stmt, guarded)
                continue
            yield from walk_stmt(child, guarded)

    def walk_stmt(node: ast.AST, guarded: bool) -> Iterator[Import]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, (), node.lineno, guarded)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield Import(name, target, tuple(a.name for a in node.names), node.lineno, guarded)
        else:
            yield from walk(node, guarded)

    yield from walk(ast.parse(path.read_text(), filename=str(path)), False)


def all_imports() -> list[Import]:
    """Imports of every first-party module."""
    return [imp for name, path in first_party_files().items() for imp in imports_of(name, path)]


def import_graph(imports: list[Import], modules: set[str]) -> dict[str, set[str]]:
    """Edges between first-party modules (see the module doc for the rules)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports:
        if imp.type_checking:
            continue
        targets = []
        if imp.names:
            for n in imp.names:
                sub = f"{imp.module}.{n}"
                targets.append(sub if sub in modules else imp.module)
        else:
            targets.append(imp.module)
        for t in targets:
            # ``import lgeom.surfaces.pca`` or a name of a module: the longest first-party module it names.
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != imp.source:
                graph[imp.source].add(t)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _where(imp: Import) -> str:
    return f"{imp.source}:{imp.line} imports {imp.module}" + (f" ({', '.join(imp.names)})" if imp.names else "")


# --- the rules -------------------------------------------------------------------------------------------------


def test_lgeom_imports_no_outer_layer_anywhere() -> None:
    bad = [
        _where(i)
        for i in all_imports()
        if i.source.split(".")[0] == "lgeom" and i.module.split(".")[0] in LGEOM_FORBIDDEN
    ]
    assert not bad, "lgeom must not import outer layers or tracking libraries:\n" + "\n".join(bad)


def test_tracking_imports_nothing_from_pipelines() -> None:
    bad = [
        _where(i)
        for i in all_imports()
        if i.source.split(".")[0] == "tracking" and i.module.split(".")[0] == "pipelines"
    ]
    assert not bad, "tracking must not import pipelines (pass plain values instead):\n" + "\n".join(bad)


def test_no_import_cycles_between_first_party_modules() -> None:
    modules = set(first_party_files())
    cycles = strongly_connected(import_graph(all_imports(), modules))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_private_names_stay_in_their_module() -> None:
    modules = set(first_party_files())
    bad = [
        _where(i)
        for i in all_imports()
        if i.source.split(".")[0] in ("tracking", "pipelines")
        and i.module.split(".")[0] in PACKAGES
        and any(n.startswith("_") and f"{i.module}.{n}" not in modules for n in i.names)
    ]
    assert not bad, "private names imported from another module (make them public, with a docstring):\n" + "\n".join(
        bad
    )


def _function_level_imports(name: str, path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            targets = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            if any(t.split(".")[0] in PACKAGES for t in targets):
                found.append(f"{name}:{node.lineno} ({fn.name}) imports {', '.join(targets)}")
    return found


def test_outer_layers_import_first_party_modules_at_module_top() -> None:
    bad = [
        hit
        for name, path in first_party_files().items()
        if name.split(".")[0] in ("tracking", "pipelines")
        for hit in _function_level_imports(name, path)
    ]
    assert not bad, "first-party imports inside functions (move them to the module top):\n" + "\n".join(bad)


# --- the checker checks itself on tiny trees --------------------------------------------------------------------


def test_cycle_finder_reports_each_component_once() -> None:
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": set(), "d": {"e"}, "e": {"f"}, "f": {"d"}}
    assert strongly_connected(graph) == [["a", "b"], ["d", "e", "f"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_graph_rules_on_written_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "from lgeom import names, build_model\n"
        "import tracking.log\n"
        "if TYPE_CHECKING:\n"
        "    from pipelines.config import Config\n"
        "def f():\n"
        "    from tracking.store import connect\n"
    )
    imports = list(imports_of("tracking.m", src))
    assert [i.type_checking for i in imports if i.module == "pipelines.config"] == [True]
    modules = {"lgeom", "lgeom.names", "tracking.log", "tracking.store", "tracking.m", "pipelines.config"}
    graph = import_graph(imports, modules)
    # a submodule named in ``from pkg import`` is the edge; another name is the package's __init__; a
    # function-level import counts; the TYPE_CHECKING one does not
    assert graph["tracking.m"] == {"lgeom", "lgeom.names", "tracking.log", "tracking.store"}


def test_lgeom_imports_no_outer_layer_at_run_time() -> None:
    script = f"""
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
bad = sorted({{m.split(".")[0] for m in sys.modules}} & set({LGEOM_FORBIDDEN!r}))
print(",".join(bad))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"lgeom imported: {out.stdout.strip()}"


def test_public_api_is_listed() -> None:
    import lgeom

    assert lgeom.__all__ == sorted(lgeom.__all__)
    for name in lgeom.__all__:
        assert hasattr(lgeom, name), name
