"""A plug-in file for the pipeline tests, written into a test's working directory (never on the package path):
an attention model (no permutation spec), a permutable MLP, a dataset, and a second module whose callable
shares a name with the first's.
"""

from __future__ import annotations

import itertools
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lgeom.plugins import dataset_plugin, model_plugin

PLUGIN = '''
"""Test plug-ins: models and a dataset of a user's own."""
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import TensorDataset


class Attention(nn.Module):
    def __init__(self, features: int, width: int, heads: int, num_classes: int):
        super().__init__()
        self.heads = heads
        self.inp = nn.Linear(features, 2 * width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        tokens = self.inp(x).reshape(x.shape[0], 2, -1)
        n, t, d = tokens.shape[0], tokens.shape[1], tokens.shape[2]
        q, k, v = self.qkv(tokens).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(n, -1))


def build_att(*, num_classes: int, in_shape: Sequence[int], width: int = 8, heads: int = 2) -> nn.Module:
    if width % heads:
        raise ValueError(f"build_att width: expected a multiple of heads={heads}, got {width}")
    return Attention(in_shape[0], width, heads, num_classes)


def build_tanh(*, num_classes: int, in_shape: Sequence[int], width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Linear(in_shape[0], width), nn.Tanh(), nn.Linear(width, num_classes))


def blobs(split, *, root, seed, n_train: int = 96, n_test: int = 64, spread: float = 0.5):
    n = n_train if split == "train" else n_test
    g = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    y = torch.randint(0, 3, (n,), generator=g)
    centers = torch.tensor([[2.0, 0.0, 0.0, 1.0], [0.0, 2.0, 1.0, 0.0], [-2.0, -2.0, 0.0, 0.0]])
    ds = TensorDataset(centers[y] + spread * torch.randn(n, 4, generator=g), y)
    ds.num_classes, ds.in_shape = 3, (4,)
    return ds
'''

#: A second module whose model builder has the name of the first's (cell names must tell them apart).
OTHER = """
from torch import nn


def build_att(*, num_classes, in_shape, width: int = 4):
    return nn.Sequential(nn.Linear(in_shape[0], width), nn.ReLU(), nn.Linear(width, num_classes))
"""

_counter = itertools.count()


def write_plugins(folder: Path, stem: str) -> tuple[str, str]:
    """Write the plug-in files ``<stem>.py`` and ``<stem>_other.py`` into ``folder``; returns their module names."""
    (folder / f"{stem}.py").write_text(textwrap.dedent(PLUGIN))
    (folder / f"{stem}_other.py").write_text(textwrap.dedent(OTHER))
    return stem, f"{stem}_other"


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """The plug-in modules (unique names) in a fresh working directory that the test runs in."""
    names = write_plugins(tmp_path, f"usernets{os.getpid()}_{next(_counter)}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    yield names
    for name in names:
        sys.modules.pop(name, None)
    model_plugin.cache_clear()
    dataset_plugin.cache_clear()
