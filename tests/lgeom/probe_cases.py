"""Tiny float64 cases shared by the curvature/flatness probe tests (seeded, seconds to build)."""

from __future__ import annotations


import torch

from lgeom.models import build_model


def tiny_mlp(seed: int = 0, *, width: int = 8, classes: int = 3, features: int = 4) -> torch.nn.Module:
    """A float64 one-hidden-layer tanh MLP (P = 67 with the defaults)."""
    torch.manual_seed(seed)
    return build_model("mlp", num_classes=classes, in_shape=(features,), depth=1, width=width, activation="tanh").double()


def tiny_data(n: int = 40, *, features: int = 4, classes: int = 3, batch: int = 16, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` float64 Gaussian samples with random labels in batches of ``batch`` (the last one ragged)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def image_data(n: int = 12, *, shape: tuple[int, ...] = (3, 8, 8), classes: int = 3, batch: int = 8, seed: int = 2,
               dtype: torch.dtype = torch.float32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random images with random labels (the last batch ragged)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=gen)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def one_batch(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same samples as a single batch."""
    return [(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))]
