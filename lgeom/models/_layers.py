"""Pieces shared by the architectures: activations, initialisation and the memory layout of CPU convolutions."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import nn

from lgeom._checks import check_choice

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def make_activation(name: str) -> nn.Module:
    """An activation module by name (relu | tanh | gelu)."""
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def init_weights(module: nn.Module, activation: str) -> None:
    """He (Kaiming normal, fan-in) init for relu/gelu, Xavier normal for tanh; zero biases; BN to identity."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if activation == "tanh":
                nn.init.xavier_normal_(m.weight, gain=nn.init.calculate_gain("tanh"))
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# Convolutions on the CPU run channels-last (NHWC), the layout oneDNN's kernels prefer, where no gradient is
# taken (evaluation: 1.2-1.7x faster forward passes for the MNIST CNN, ResCNN and PreResNet-8) and in training
# steps (inside :func:`channels_last_steps`), results equal up to float rounding. Not under double backward:
# channels-last made PreResNet-8's Hessian-vector products about 10 % slower. ``bench/conv_layout.py`` measures
# each setting side by side (it flips this switch).
CPU_CHANNELS_LAST = True
_IN_STEPS: contextvars.ContextVar[bool] = contextvars.ContextVar("lgeom_channels_last_steps", default=False)


@contextlib.contextmanager
def channels_last_steps() -> Iterator[None]:
    """Inside, :func:`conv_layout` switches CPU convolutions to channels-last with autograd on as well: wrap
    the forward of a first-order training step (lgeom's ``train`` and ``fit_curve`` do). Forward passes whose
    graph is differentiated twice (Hessian-vector products) stay outside.
    """
    token = _IN_STEPS.set(True)
    try:
        yield
    finally:
        _IN_STEPS.reset(token)


def conv_layout(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last layout when it is a 4-D CPU tensor evaluated without autograd
    (``torch.is_grad_enabled()`` false: loss and accuracy along paths, planes and slices) or inside
    :func:`channels_last_steps`; else ``x`` itself.

    Call it on a convolution's input (and on the first convolution's output where the input has one channel,
    whose layout is ambiguous): later convolutions, BatchNorms, activations and pools keep the layout.
    Inside ``torch.func.vmap`` (several parameter points per pass), which cannot change layouts, and under
    ``torch.fx`` tracing, ``x`` is returned as it is.
    """
    if isinstance(x, torch.fx.Proxy):  # traced (the permutation spec): the layout is no operation on units
        return x
    if (
        CPU_CHANNELS_LAST
        and x.dim() == 4
        and x.device.type == "cpu"
        and (not torch.is_grad_enabled() or _IN_STEPS.get())
    ):
        try:
            return x.contiguous(memory_format=torch.channels_last)
        except RuntimeError:  # vmap's batched tensors: "NYI: querying is_contiguous inside of vmap"
            return x
    return x
