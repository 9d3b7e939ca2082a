"""The model registry: builders by name and model families by prefix, and ``build_model``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from lgeom._checks import check_positive_int, expected, keyword_types
from lgeom.plugins import is_plugin_ref, model_plugin

ModelBuilder = Callable[..., nn.Module]
ModelFamily = Callable[[str], ModelBuilder]
_REGISTRY: dict[str, ModelBuilder] = {}
_FAMILIES: dict[str, ModelFamily] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder(num_classes, in_shape, **arch) -> nn.Module`` under ``name``."""

    def wrap(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r}: expected a new name, got one already registered")
        _REGISTRY[name] = builder
        return builder

    return wrap


def register_model_family(prefix: str) -> Callable[[ModelFamily], ModelFamily]:
    """Decorator registering ``resolve(member) -> builder`` for the model names ``"<prefix>:<member>"``.

    ``resolve`` returns a builder like those of :func:`register_model` (keyword-only ``num_classes``,
    ``in_shape`` and options, whose signature lists the options) or raises ``ValueError`` for an unknown
    member.
    """

    def wrap(resolve: ModelFamily) -> ModelFamily:
        if prefix in _FAMILIES or ":" in prefix:
            raise ValueError(f"model family {prefix!r}: expected a new prefix without ':', got {prefix!r}")
        _FAMILIES[prefix] = resolve
        return resolve

    return wrap


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, besides the ``"<family>:<member>"`` names of model families."""
    return sorted(_REGISTRY)


def model_families() -> list[str]:
    """Prefixes of the registered model families (``"<prefix>:<member>"`` names that are not plug-ins)."""
    return sorted(_FAMILIES)


def is_model_plugin(name: str) -> bool:
    """Whether the model name ``name`` is a plug-in ``module:callable`` (not registered, and its prefix not a
    registered model family such as ``torchvision``).
    """
    return name not in _REGISTRY and is_plugin_ref(name) and name.partition(":")[0] not in _FAMILIES


def _builder(name: str) -> ModelBuilder:
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, colon, member = str(name).partition(":")
    if colon and prefix in _FAMILIES:
        return _FAMILIES[prefix](member)
    if is_model_plugin(name):  # any other "module:callable": the user's own builder
        return model_plugin(name)
    families = "".join(f", {p}:<name>" for p in sorted(_FAMILIES))
    raise expected(
        "model name", "one of " + ", ".join(available_models()) + families + " or a plug-in module:callable", name
    )


def model_arch_args(name: str) -> dict[str, Any]:
    """The architecture keyword arguments of model ``name`` with their defaults (``inspect.Parameter.empty`` if
    required).

    Raises:
        ValueError: an unknown model name (or family member).
    """
    sig = inspect.signature(_builder(name))
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.name not in ("num_classes", "in_shape") and p.kind == p.KEYWORD_ONLY
    }


def model_arch_types(name: str) -> dict[str, Any]:
    """The annotated types of model ``name``'s architecture options (resolved, e.g. ``int`` or ``bool | None``);
    options without an annotation, or whose annotation cannot be resolved, are left out.
    """
    return keyword_types(_builder(name), model_arch_args(name))


def build_model(name: str, *, num_classes: int, in_shape: Sequence[int], **arch: Any) -> nn.Module:
    """Build a registered architecture.

    Args:
        name: one of :func:`available_models` (``mlp``, ``resmlp``, ``cnn``, ``rescnn``, ``preresnet``,
            ``vgg16``, ``wideresnet``), ``"torchvision:<builder>"`` (see :mod:`lgeom.models.from_torchvision`)
            or a plug-in ``"module:callable"`` (see :mod:`lgeom.plugins`): a ``<prefix>:<member>`` name whose
            prefix is a registered model family is that family's member, any other is imported.
        num_classes: number of output logits.
        in_shape: shape of one input sample without the batch dimension.
        **arch: architecture options (e.g. ``depth``, ``width``, ``activation``).

    Returns:
        A freshly initialised ``nn.Module`` on the CPU in float32, mapping ``(N, *in_shape)`` to ``(N, num_classes)``.

    Raises:
        ValueError: unknown name, unknown option or a bad option value.
        lgeom.plugins.PluginError: a plug-in that cannot be imported or breaks the builder contract (a
            ``ValueError`` too).
    """
    builder = _builder(name)
    check_positive_int("num_classes", num_classes)
    in_shape = tuple(int(s) for s in in_shape)
    if not in_shape or any(s <= 0 for s in in_shape):
        raise expected("in_shape", "a non-empty shape of positive sizes", in_shape)
    allowed = model_arch_args(name)
    unknown = sorted(set(arch) - set(allowed))
    if unknown:
        raise expected(f"{name} option", "one of " + ", ".join(sorted(allowed)), unknown[0])
    return builder(num_classes=num_classes, in_shape=in_shape, **arch)
