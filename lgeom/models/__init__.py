"""Model registry: ``build_model(name, num_classes=..., in_shape=..., **arch)``.

Architectures register a builder with :func:`register_model`; every builder takes ``num_classes``,
``in_shape`` (``(features,)`` or ``(channels, height, width)``) and its own keyword arguments, and
rejects unknown ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from lgeom._checks import check_positive_int, expected, keyword_types

ModelBuilder = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder(num_classes, in_shape, **arch) -> nn.Module`` under ``name``."""

    def wrap(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r}: expected a new name, got one already registered")
        _REGISTRY[name] = builder
        return builder

    return wrap


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(_REGISTRY)


def model_arch_args(name: str) -> dict[str, Any]:
    """The architecture keyword arguments of model ``name`` with their defaults (``inspect.Parameter.empty`` if required)."""
    if name not in _REGISTRY:
        raise expected("model name", "one of " + ", ".join(available_models()), name)
    sig = inspect.signature(_REGISTRY[name])
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.name not in ("num_classes", "in_shape") and p.kind == p.KEYWORD_ONLY
    }


def model_arch_types(name: str) -> dict[str, Any]:
    """The annotated types of model ``name``'s architecture options (resolved, e.g. ``int`` or ``bool | None``);
    options without an annotation, or whose annotation cannot be resolved, are left out."""
    options = model_arch_args(name)  # checks the name first
    return keyword_types(_REGISTRY[name], options)


def build_model(name: str, *, num_classes: int, in_shape: Sequence[int], **arch: Any) -> nn.Module:
    """Build a registered architecture.

    Args:
        name: one of :func:`available_models` (``mlp``, ``resmlp``, ``cnn``, ``rescnn``, ``preresnet``).
        num_classes: number of output logits.
        in_shape: shape of one input sample without the batch dimension.
        **arch: architecture options (e.g. ``depth``, ``width``, ``activation``).

    Returns:
        A freshly initialised ``nn.Module`` on the CPU in float32, mapping ``(N, *in_shape)`` to ``(N, num_classes)``.

    Raises:
        ValueError: unknown name, unknown option or a bad option value.
    """
    if name not in _REGISTRY:
        raise expected("model name", "one of " + ", ".join(available_models()), name)
    check_positive_int("num_classes", num_classes)
    in_shape = tuple(int(s) for s in in_shape)
    if not in_shape or any(s <= 0 for s in in_shape):
        raise expected("in_shape", "a non-empty shape of positive sizes", in_shape)
    allowed = model_arch_args(name)
    unknown = sorted(set(arch) - set(allowed))
    if unknown:
        raise expected(f"{name} option", "one of " + ", ".join(sorted(allowed)), unknown[0])
    return _REGISTRY[name](num_classes=num_classes, in_shape=in_shape, **arch)


# Importing the modules registers their architectures.
from lgeom.models import cnn, mlp, resnet  # noqa: E402,F401

__all__ = ["available_models", "build_model", "model_arch_args", "model_arch_types", "register_model"]
