"""Pieces shared by the architectures: activations, initialisation and the CPU evaluation layout."""

from __future__ import annotations

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


# Convolutions evaluated without autograd on the CPU run channels-last (NHWC), the layout oneDNN's kernels
# prefer: 1.2-1.7x faster forward passes for the MNIST CNN, ResCNN and PreResNet-8, results equal up to float
# rounding. Only where no gradient is taken: channels-last made PreResNet-8's double backward (Hessian-vector
# products) about 10 % slower. ``bench/conv_layout.py`` measures both settings side by side (it flips this).
CPU_EVAL_CHANNELS_LAST = True


def eval_layout(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last layout when it is a 4-D CPU tensor evaluated without autograd
    (``torch.is_grad_enabled()`` false: loss and accuracy along paths, planes and slices), else ``x`` itself.

    Call it on a convolution's input (and on the first convolution's output where the input has one channel,
    whose layout is ambiguous): later convolutions, BatchNorms, activations and pools keep the layout.
    Inside ``torch.func.vmap`` (several parameter points per pass), which cannot change layouts, and under
    ``torch.fx`` tracing, ``x`` is returned as it is.
    """
    if isinstance(x, torch.fx.Proxy):  # traced (the permutation spec): the layout is no operation on units
        return x
    if CPU_EVAL_CHANNELS_LAST and x.dim() == 4 and x.device.type == "cpu" and not torch.is_grad_enabled():
        try:
            return x.contiguous(memory_format=torch.channels_last)
        except RuntimeError:  # vmap's batched tensors: "NYI: querying is_contiguous inside of vmap"
            return x
    return x
