"""torchvision classifiers through the registry: ``build_model("torchvision:resnet18", num_classes=10, ...)``.

Any ``torchvision.models`` classification builder whose model takes ``num_classes`` is a member of the
``torchvision`` family. Its options are the builder's keyword arguments and, when it forwards ``**kwargs``
to its model class (most do), that class's optional constructor arguments; unknown options are refused
listing these. Models are always built untrained (``weights=None``): lgeom runs without network access, so
a ``weights`` option other than ``None`` is an error.

Two adaptations to small images: inputs with other than 3 channels get a first convolution of the right
width, and ``cifar_stem=True`` replaces a strided stem convolution (ResNet's 7x7 stride 2) by a 3x3 stride-1
one and drops a max-pool that comes before the second convolution (ResNet's stem pool), as is usual for
32x32 CIFAR images. Modules are taken in registration order, which is execution order in torchvision's
classifiers.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Sequence
from typing import Any

from torch import nn

from lgeom._checks import expected
from lgeom.models.registry import ModelBuilder, register_model_family

FAMILY = "torchvision"
# Builder arguments that lgeom sets itself (weights is kept as an option only to refuse it clearly).
_FIXED = ("progress", "num_classes")


def _classifier_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _model_options(builder: Any) -> dict[str, inspect.Parameter]:
    """Keyword options of a torchvision builder: its own, plus its model class's optional constructor
    arguments when the builder forwards ``**kwargs`` there.
    """
    sig = inspect.signature(builder)
    options = {p.name: p for p in sig.parameters.values() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        try:
            cls = typing.get_type_hints(builder).get("return")
        except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to the raw one
            cls = sig.return_annotation
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty:
                    options.setdefault(p.name, p.replace(kind=p.KEYWORD_ONLY))
    return options


@register_model_family(FAMILY)
def torchvision_builder(member: str) -> ModelBuilder:
    """The registry builder of ``torchvision:<member>``.

    Returns:
        ``build(*, num_classes, in_shape, cifar_stem=False, weights=None, **options) -> nn.Module`` whose
        signature lists the torchvision options (what :func:`~lgeom.models.model_arch_args` reports).

    Raises:
        ValueError: ``member`` is not a torchvision classifier, or its model takes no ``num_classes``.
    """
    import torchvision.models as tvm

    names = _classifier_names()
    if member not in names:
        raise expected(f"{FAMILY} model", "one of " + ", ".join(names), member)
    tv_builder = tvm.get_model_builder(member)
    options = _model_options(tv_builder)
    if "num_classes" not in options:
        raise expected(f"{FAMILY}:{member}", "a builder whose model takes num_classes", sorted(options))
    name = f"{FAMILY}:{member}"
    passed = [n for n in options if n not in _FIXED and n != "weights"]

    def build(
        *, num_classes: int, in_shape: Sequence[int], cifar_stem: bool = False, weights: Any = None, **kw: Any
    ) -> nn.Module:
        if weights is not None:
            raise expected(
                f"{name} weights",
                "None (models are built untrained: there is no network to download pretrained weights from)",
                weights,
            )
        if len(in_shape) != 3:
            raise expected(f"{name} in_shape", "(channels, height, width)", tuple(in_shape))
        model = tv_builder(weights=None, progress=False, num_classes=num_classes, **kw)
        adapt_stem(model, in_channels=int(in_shape[0]), cifar_stem=bool(cifar_stem), name=name)
        return model

    params = [
        inspect.Parameter("num_classes", inspect.Parameter.KEYWORD_ONLY, annotation=int),
        inspect.Parameter("in_shape", inspect.Parameter.KEYWORD_ONLY, annotation=Sequence[int]),
        inspect.Parameter("cifar_stem", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool),
        inspect.Parameter("weights", inspect.Parameter.KEYWORD_ONLY, default=None),
    ]
    params += [options[n].replace(kind=inspect.Parameter.KEYWORD_ONLY) for n in passed]
    build.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    build.__name__ = f"build_{member}"
    build.__doc__ = f"torchvision.models.{member} (untrained) for ``(channels, H, W)`` inputs."
    return build


def adapt_stem(model: nn.Module, *, in_channels: int, cifar_stem: bool, name: str = "model") -> None:
    """Fit a torchvision classifier's stem to small images, in place.

    Args:
        model: the classifier; its first registered ``Conv2d`` is taken as the stem convolution.
        in_channels: input channels; a stem of another width is replaced by one of ``in_channels``.
        cifar_stem: replace a strided stem convolution by a 3x3 stride-1 one (same output channels) and a
            ``MaxPool2d`` registered before the second convolution by the identity.
        name: the model's name in error messages.

    Raises:
        ValueError: the model has no convolution, or ``cifar_stem`` on a patch embedding (kernel equal to
            stride, as in vision transformers), whose sequence length the stem fixes.
    """
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise expected(f"{name} stem", "a Conv2d to adapt to the input", "a model without one")
    stem_name, stem = convs[0]
    if cifar_stem and stem.stride != (1, 1):
        if tuple(stem.kernel_size) == tuple(stem.stride):
            raise expected(
                f"{name} cifar_stem",
                "a model with an overlapping strided stem convolution",
                f"a patch embedding {stem_name!r} (kernel {tuple(stem.kernel_size)} = stride)",
            )
        new = nn.Conv2d(in_channels, stem.out_channels, 3, stride=1, padding=1, bias=stem.bias is not None)
        _replace(model, stem_name, _fresh(new))
    elif stem.in_channels != in_channels:
        new = nn.Conv2d(
            in_channels,
            stem.out_channels,
            stem.kernel_size,
            stride=stem.stride,
            padding=stem.padding,
            dilation=stem.dilation,
            bias=stem.bias is not None,
        )
        _replace(model, stem_name, _fresh(new))
    if cifar_stem:
        second = convs[1][0] if len(convs) > 1 else None
        for n, m in model.named_modules():
            if n == second:
                break
            if isinstance(m, nn.MaxPool2d):
                _replace(model, n, nn.Identity())
                break


def _fresh(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)
