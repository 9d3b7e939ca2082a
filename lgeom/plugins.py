"""Builders by import path: ``"module:callable"`` names a model or dataset builder in the user's own code.

A name with one ``:`` whose left side is not a registered model family (``torchvision``) is a plug-in: the
module is imported from the working directory or ``PYTHONPATH`` and the callable taken from it. The
contracts are those of the registries:

- a model builder is ``builder(*, num_classes, in_shape, **options) -> nn.Module``;
- a dataset builder is ``builder(split, *, root, seed, **options) -> Dataset`` whose result has
  ``num_classes`` and ``in_shape`` (and ``__len__`` / ``__getitem__`` of ``(input, label)`` pairs).

The options are the builder's named parameters besides those (defaults and annotations included), so they
are checked before anything runs; a ``**kwargs`` catch-all is refused because it cannot be. Every failure
is a :class:`PluginError` naming the reference, the module, the attribute and the search path:

>>> split_ref("mynets:build_vit")
('mynets', 'build_vit')
>>> is_plugin_ref("mlp"), is_plugin_ref("mynets:build_vit"), plugin_label("pkg.nets:Builders.vit")
(False, True, 'vit')
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import os
import re
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
#: Parameters every model builder takes (not options).
MODEL_FIXED = ("num_classes", "in_shape")
#: Keyword parameters every dataset builder takes besides the split (not options).
DATASET_FIXED = ("root", "seed")
MODEL_CONTRACT = "builder(*, num_classes, in_shape, **options) -> nn.Module"
DATASET_CONTRACT = "builder(split, *, root, seed, **options) -> Dataset (with num_classes and in_shape)"


class PluginError(ValueError):
    """A plug-in reference that cannot be used: bad syntax, an import that fails, a missing attribute, not a
    callable, a signature outside the contract, or a built object without what the contract promises.
    """


def is_plugin_ref(name: Any) -> bool:
    """Whether ``name`` has the shape ``module:callable`` (one ``:`` with text on both sides)."""
    if not isinstance(name, str) or name.count(":") != 1:
        return False
    module, attr = name.split(":")
    return bool(module.strip()) and bool(attr.strip())


def split_ref(ref: str) -> tuple[str, str]:
    """``"pkg.mod:obj.attr"`` -> ``("pkg.mod", "obj.attr")``.

    Raises:
        PluginError: not two dotted Python names joined by one ``:``.
    """
    module, _, attr = ref.partition(":")
    if not is_plugin_ref(ref) or not _DOTTED.fullmatch(module) or not _DOTTED.fullmatch(attr):
        raise PluginError(f"plug-in {ref!r}: expected 'module:callable' (dotted Python names, e.g. 'mynets:build_vit')")
    return module, attr


def plugin_label(ref: str) -> str:
    """The short name of a plug-in (its callable's last name), e.g. ``build_vit`` for ``mynets:build_vit``."""
    return ref.partition(":")[2].rsplit(".", 1)[-1]


def qualified_label(ref: str) -> str:
    """The plug-in's label with its module's last name, e.g. ``mynets.build_vit`` (to tell apart two plug-ins
    whose callables share a name).
    """
    module, _, _ = ref.partition(":")
    return f"{module.rsplit('.', 1)[-1]}.{plugin_label(ref)}"


def search_path() -> list[str]:
    """Where plug-in modules are looked for: ``sys.path`` with the working directory first (as ``python -m``
    puts it; added when missing, e.g. under the ``lgeom`` console script).
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    return [p or cwd for p in sys.path]


def _import(ref: str, what: str) -> tuple[Any, Any]:
    """``(module, the attribute)`` named by ``ref``."""
    module_name, attr = split_ref(ref)
    path = search_path()
    where = f"search path (sys.path, working directory first): {', '.join(path)}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise PluginError(
                f"{what} {ref!r}: cannot import module {module_name!r} to take {attr!r} from it: no module named "
                f"{err.name!r} on the {where}"
            ) from None
        raise PluginError(
            f"{what} {ref!r}: importing module {module_name!r} (for {attr!r}) failed: {type(err).__name__}: {err}; "
            f"{where}"
        ) from err
    except Exception as err:  # noqa: BLE001 - the module's own code failed: report it as such
        raise PluginError(
            f"{what} {ref!r}: importing module {module_name!r} (for {attr!r}) failed: {type(err).__name__}: {err}; "
            f"{where}"
        ) from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(
                n
                for n, v in vars(module).items()
                if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
            )
            raise PluginError(
                f"{what} {ref!r}: module {module_name!r} ({getattr(module, '__file__', '?')}) has no attribute "
                f"{attr!r} (callables defined there: {', '.join(names) or 'none'}); {where}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise PluginError(f"{what} {ref!r}: expected a callable, got {type(obj).__name__} {obj!r}")
    return module, obj


def _signature(fn: Any, ref: str, what: str, contract: str) -> inspect.Signature:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError) as err:
        raise PluginError(
            f"{what} {ref!r}: expected a callable {contract}, got one without a signature ({err})"
        ) from None


def _bad_signature(ref: str, what: str, contract: str, fn: Any, sig: inspect.Signature, problems: list[str]) -> None:
    if problems:
        name = getattr(fn, "__qualname__", type(fn).__name__)
        raise PluginError(f"{what} {ref!r}: expected {contract}, got {name}{sig}: {'; '.join(problems)}")


def _options(sig: inspect.Signature, fixed: Sequence[str], skip_first: bool) -> list[inspect.Parameter]:
    params = list(sig.parameters.values())[1 if skip_first else 0 :]
    return [
        p.replace(kind=p.KEYWORD_ONLY)
        for p in params
        if p.name not in fixed and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def _common_problems(sig: inspect.Signature, fixed: Sequence[str], skip_first: bool) -> list[str]:
    out = []
    params = list(sig.parameters.values())
    for name in fixed:
        p = sig.parameters.get(name)
        if p is None or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) or (skip_first and p is params[0]):
            out.append(f"it takes no keyword parameter {name!r}")
    for p in params[1 if skip_first else 0 :]:
        if p.kind == p.VAR_KEYWORD:
            out.append(
                f"**{p.name} cannot be checked before the run: name every option as a keyword parameter with a default"
            )
        elif p.kind == p.POSITIONAL_ONLY and p.default is p.empty:
            out.append(f"positional-only parameter {p.name!r} is never passed")
    return out


def _hints(fn: Any, names: Sequence[str]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an unresolvable annotation only loses the type check
        return {}
    return {k: hints[k] for k in names if k in hints}


def _with_signature(wrapper: Any, fn: Any, ref: str, fixed: list[inspect.Parameter], options: list[inspect.Parameter]):
    wrapper.__signature__ = inspect.Signature([*fixed, *options])
    wrapper.__annotations__ = _hints(fn, [p.name for p in options])
    wrapper.__name__ = plugin_label(ref)
    wrapper.__qualname__ = plugin_label(ref)
    wrapper.__doc__ = getattr(fn, "__doc__", None)
    wrapper.plugin_ref = ref
    return wrapper


@functools.lru_cache(maxsize=64)
def model_plugin(ref: str) -> Callable[..., nn.Module]:
    """The model builder named by ``ref`` (``"module:callable"``), as a registry builder: keyword-only
    ``num_classes``, ``in_shape`` and the plug-in's options (with their defaults and annotations), checking
    that the plug-in returns an ``nn.Module``.

    Raises:
        PluginError: the module or attribute cannot be imported (naming module, attribute and search path), it
            is not callable, or its signature is not ``builder(*, num_classes, in_shape, **options)``.
    """
    what = "model.arch plug-in"
    _, fn = _import(ref, what)
    sig = _signature(fn, ref, what, MODEL_CONTRACT)
    _bad_signature(ref, what, MODEL_CONTRACT, fn, sig, _common_problems(sig, MODEL_FIXED, skip_first=False))

    def build(*, num_classes: int, in_shape: Sequence[int], **options: Any) -> nn.Module:
        model = fn(num_classes=num_classes, in_shape=tuple(in_shape), **options)
        if not isinstance(model, nn.Module):
            raise PluginError(
                f"{what} {ref!r}: expected the builder to return an nn.Module, got {type(model).__name__}"
            )
        return model

    kw = inspect.Parameter.KEYWORD_ONLY
    fixed = [inspect.Parameter("num_classes", kw, annotation=int), inspect.Parameter("in_shape", kw)]
    return _with_signature(build, fn, ref, fixed, _options(sig, MODEL_FIXED, skip_first=False))


@functools.lru_cache(maxsize=64)
def dataset_plugin(ref: str) -> Callable[..., Any]:
    """The dataset builder named by ``ref`` (``"module:callable"``), as a registry builder ``(split, *, root,
    seed, **options)`` that checks the plug-in's result: ``num_classes`` (an int > 0), ``in_shape`` (positive
    sizes; set as a tuple of ints), ``__len__`` and ``__getitem__``.

    Raises:
        PluginError: as :func:`model_plugin`, for the contract ``builder(split, *, root, seed, **options)``.
    """
    what = "data.name plug-in"
    _, fn = _import(ref, what)
    sig = _signature(fn, ref, what, DATASET_CONTRACT)
    params = list(sig.parameters.values())
    problems = _common_problems(sig, DATASET_FIXED, skip_first=True)
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        problems.insert(0, "its first parameter does not take the split positionally")
    _bad_signature(ref, what, DATASET_CONTRACT, fn, sig, problems)

    def build(split: str, *, root: str | None, seed: int, **options: Any) -> Any:
        ds = fn(split, root=root, seed=seed, **options)
        check_dataset(ds, f"{what} {ref!r} ({split} split)")
        return ds

    kw = inspect.Parameter.KEYWORD_ONLY
    fixed = [
        inspect.Parameter("split", inspect.Parameter.POSITIONAL_ONLY),
        inspect.Parameter("root", kw),
        inspect.Parameter("seed", kw),
    ]
    return _with_signature(build, fn, ref, fixed, _options(sig, DATASET_FIXED, skip_first=True))


def check_dataset(ds: Any, what: str) -> None:
    """Check that ``ds`` has what lgeom's datasets have (``num_classes``, ``in_shape``, ``__len__``,
    ``__getitem__``); ``in_shape`` is set to a tuple of ints and ``num_classes`` to an int.

    Raises:
        PluginError: naming ``what`` and the first missing or bad attribute.
    """
    for attr in ("__len__", "__getitem__"):
        if not hasattr(ds, attr):
            raise PluginError(f"{what}: expected a map-style dataset (with {attr}), got {type(ds).__name__}")
    try:
        num_classes = int(ds.num_classes)
        in_shape = tuple(int(s) for s in ds.in_shape)
    except (AttributeError, TypeError, ValueError) as err:
        raise PluginError(
            f"{what}: expected a dataset with num_classes (int) and in_shape (sizes of one input), got "
            f"{type(ds).__name__} ({err})"
        ) from None
    if num_classes < 1 or not in_shape or any(s < 1 for s in in_shape):
        raise PluginError(
            f"{what}: expected num_classes >= 1 and a non-empty in_shape of positive sizes, got "
            f"num_classes={num_classes}, in_shape={in_shape}"
        )
    if ds.num_classes != num_classes or ds.in_shape != in_shape:
        ds.num_classes, ds.in_shape = num_classes, in_shape


def plugin_source(ref: str) -> Path | None:
    """The source file of the module of an importable plug-in (None when it has none, e.g. a built-in)."""
    module, _ = _import(ref, "plug-in")
    try:
        src = inspect.getsourcefile(module)
    except TypeError:
        return None
    return Path(src).resolve() if src else None


def plugin_digest(ref: str) -> str:
    """The first 16 hex digits of the SHA-256 of the plug-in module's source file (``""`` without one), so a
    changed file is visible next to the unchanged reference.
    """
    src = plugin_source(ref)
    return hashlib.sha256(src.read_bytes()).hexdigest()[:16] if src is not None and src.is_file() else ""


def plugin_shipping_path(ref: str, roots: Sequence[str | os.PathLike[str]]) -> Path | None:
    """What to ship for the plug-in so that another machine can import it: the file of its top-level module
    (``mynets.py``) or its top-level package folder, when that lies under one of ``roots`` (the working
    directory, ``PYTHONPATH`` entries); None for a module from elsewhere (an installed package).
    """
    module, _ = split_ref(ref)
    top = importlib.import_module(module.split(".", 1)[0])
    where = getattr(top, "__path__", None)
    if where is not None:
        paths = list(where)
        if len(paths) != 1:
            return None
        path = Path(paths[0]).resolve()
    elif getattr(top, "__file__", None):
        path = Path(top.__file__).resolve()
    else:
        return None
    for root in roots:
        r = Path(root).resolve()
        if path.parent == r:
            return path
    return None


__all__ = [
    "DATASET_CONTRACT",
    "MODEL_CONTRACT",
    "PluginError",
    "check_dataset",
    "dataset_plugin",
    "is_plugin_ref",
    "model_plugin",
    "plugin_digest",
    "plugin_label",
    "plugin_shipping_path",
    "plugin_source",
    "qualified_label",
    "search_path",
    "split_ref",
]
