"""Model registry: ``build_model(name, num_classes=..., in_shape=..., **arch)``.

Architectures register a builder with :func:`register_model`; every builder takes ``num_classes``,
``in_shape`` (``(features,)`` or ``(channels, height, width)``) and its own keyword arguments, and
rejects unknown ones. A family of builders found elsewhere registers under a prefix with
:func:`register_model_family`: ``"torchvision:resnet18"`` names any ``torchvision.models`` classifier.
"""

from __future__ import annotations

# Importing the architecture modules registers them.
from lgeom.models import cnn, from_torchvision, mlp, resnet, vgg, wideresnet  # noqa: F401
from lgeom.models.registry import (
    ModelBuilder,
    ModelFamily,
    available_models,
    build_model,
    is_model_plugin,
    model_arch_args,
    model_arch_types,
    model_families,
    register_model,
    register_model_family,
)

__all__ = [
    "ModelBuilder",
    "ModelFamily",
    "available_models",
    "build_model",
    "is_model_plugin",
    "model_arch_args",
    "model_arch_types",
    "model_families",
    "register_model",
    "register_model_family",
]
