"""An example lgeom plug-in file: a model and a dataset of your own, used by import path.

Put this file next to your preset (or anywhere on ``PYTHONPATH``) and name its builders as
``model.arch: mynets:build_vit`` and ``data.name: mynets:stripes``. Launch (from this folder):

    lgeom study --preset plugin-study.yaml

Contracts (checked before anything runs; the keyword parameters besides the fixed ones are the options,
settable in the preset as ``model.<option>`` / ``data.<option>``, typed by their annotations):

- model: ``builder(*, num_classes, in_shape, **options) -> nn.Module`` mapping ``(N, *in_shape)`` to
  ``(N, num_classes)`` logits;
- dataset: ``builder(split, *, root, seed, **options) -> Dataset`` of ``(input, label)`` pairs with the
  attributes ``num_classes`` and ``in_shape``; ``split`` is ``"train"`` or ``"test"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import TensorDataset


class SelfAttention(nn.Module):
    """Multi-head self-attention written with plain tensor operations (so every probe, Hessian included,
    can differentiate it twice): ``heads`` heads over ``dim`` features.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(N, T, dim)`` -> attended tokens ``(N, T, dim)``."""
        n, t, d = x.shape[0], x.shape[1], x.shape[2]
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(n, t, d))


class TinyViT(nn.Module):
    """A vision transformer for small images: ``patch`` x ``patch`` patches embedded in ``dim`` features,
    ``layers`` pre-norm blocks (attention with ``heads`` heads, then an MLP), mean-pooled tokens, a linear head.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, dim: int, heads: int, layers: int, patch: int):
        super().__init__()
        channels, height, width = in_shape
        self.embed = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        self.position = nn.Parameter(torch.zeros(1, (height // patch) * (width // patch), dim))
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm1": nn.LayerNorm(dim),
                    "attention": SelfAttention(dim, heads),
                    "norm2": nn.LayerNorm(dim),
                    "mlp": nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)),
                }
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of images ``(N, channels, height, width)``."""
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.position
        for block in self.blocks:
            tokens = tokens + block["attention"](block["norm1"](tokens))
            tokens = tokens + block["mlp"](block["norm2"](tokens))
        return self.head(self.norm(tokens).mean(dim=1))


def build_vit(
    *, num_classes: int, in_shape: Sequence[int], dim: int = 16, heads: int = 2, layers: int = 1, patch: int = 4
) -> nn.Module:
    """A :class:`TinyViT` for ``(channels, height, width)`` inputs whose sides ``patch`` divides."""
    if len(in_shape) != 3 or in_shape[1] % patch or in_shape[2] % patch:
        raise ValueError(
            f"build_vit in_shape: expected (channels, H, W) with H and W divisible by {patch}, got {tuple(in_shape)}"
        )
    if dim % heads:
        raise ValueError(f"build_vit dim: expected a multiple of heads={heads}, got {dim}")
    return TinyViT(in_shape, num_classes, dim, heads, layers, patch)


def stripes(
    split: str, *, root: str | None, seed: int, n_train: int = 512, n_test: int = 256, side: int = 8, noise: float = 0.5
) -> TensorDataset:
    """Grey ``side`` x ``side`` images of horizontal (label 0) or vertical (label 1) stripes plus Gaussian
    noise of standard deviation ``noise``; the draw is fixed by ``seed`` and differs between splits.
    ``root`` is unused (nothing is read from disk).
    """
    n = n_train if split == "train" else n_test
    gen = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    labels = torch.randint(0, 2, (n,), generator=gen)
    pattern = (torch.arange(side) % 2).float() * 2 - 1
    horizontal = pattern[:, None].expand(side, side)
    images = torch.where(labels[:, None, None] == 0, horizontal, horizontal.T)
    images = images + noise * torch.randn(n, side, side, generator=gen)
    data = TensorDataset(images.unsqueeze(1), labels)
    data.num_classes, data.in_shape = 2, (1, side, side)
    return data
