"""Tiny float64 cases with dense references that do not use the code under test.

After curvlinops' ``test/cases.py``: every estimator test runs over :data:`CASES` (a small MLP, a small
BatchNorm CNN, a narrow PreResNet-8 and a tiny vision transformer with LayerNorm and attention, defined here
as a user would define one), each with a fixed seed, inputs and labels. The reference loss is plain
``torch.func.functional_call`` + ``F.cross_entropy`` in eval mode (:func:`lgeom.reference.dense_loss`), and the
dense Hessian is :func:`lgeom.reference.dense_hessian` of it over the flat parameter vector. For BatchNorm models
the reference buffers are the statistics the BN policy gives a point that is not a trained endpoint,
computed here with torch's own BatchNorm (train mode, momentum 1, one batch holding every BN sample), never
with lgeom's recompute.

The vision transformer (:class:`TinyViT`, :func:`build_vit`) is also what the cross-module tests of a user
model use (``tests/scenarios/test_vit_probes.py``).

Also the older helpers of the curvature/flatness probe tests (``tiny_mlp``, ``tiny_data``, ``image_data``,
``one_batch``) and of the alignment tests (``randomize_bn_state``).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import lgeom.models.resnet as resnet
from lgeom.hessian import HessianOperator
from lgeom.models import build_model
from lgeom.reference import dense_eigenvalues, dense_hessian, dense_loss

Batches = list[tuple[torch.Tensor, torch.Tensor]]
D = torch.float64


def tiny_mlp(seed: int = 0, *, width: int = 8, classes: int = 3, features: int = 4) -> torch.nn.Module:
    """A float64 one-hidden-layer tanh MLP (P = 67 with the defaults)."""
    torch.manual_seed(seed)
    return build_model(
        "mlp", num_classes=classes, in_shape=(features,), depth=1, width=width, activation="tanh"
    ).double()


def tiny_data(n: int = 40, *, features: int = 4, classes: int = 3, batch: int = 16, seed: int = 1) -> Batches:
    """``n`` float64 Gaussian samples with random labels in batches of ``batch`` (the last one ragged)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def image_data(
    n: int = 12,
    *,
    shape: tuple[int, ...] = (3, 8, 8),
    classes: int = 3,
    batch: int = 8,
    seed: int = 2,
    dtype: torch.dtype = torch.float32,
) -> Batches:
    """Random images with random labels (the last batch ragged)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=gen)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def random_batches(shape: tuple[int, ...], n_batches: int, size: int, seed: int, classes: int = 3) -> Batches:
    """``n_batches`` batches of ``size`` float64 Gaussian inputs of ``shape`` with random labels."""
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, *shape, dtype=D, generator=gen), torch.randint(0, classes, (size,), generator=gen))
        for _ in range(n_batches)
    ]


def sized_batches(shape: tuple[int, ...], sizes: list[int], seed: int) -> Batches:
    """Batches of the given ``sizes`` of float64 Gaussian inputs of ``shape`` with random labels in 0..2."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, *shape, dtype=D, generator=gen), torch.randint(0, 3, (n,), generator=gen)) for n in sizes]


def acb_points(arch: str, shape: tuple[int, ...], **kw: object) -> tuple[torch.nn.Module, dict, dict, dict]:
    """A float64 model and three points of it: A (its initialisation, seed 0), B (another initialisation) and
    C (their midpoint moved by 0.3 Gaussian noise), as ``(model, a, c, b)``.
    """
    torch.manual_seed(0)
    model = build_model(arch, num_classes=3, in_shape=shape, **kw).double()
    a = {n: p.detach().clone() for n, p in model.named_parameters()}
    other = build_model(arch, num_classes=3, in_shape=shape, **kw).double()
    b = {n: p.detach().clone() for n, p in other.named_parameters()}
    c = {n: 0.5 * (a[n] + b[n]) + 0.3 * torch.randn_like(a[n]) for n in a}
    return model, a, c, b


def randomize_bn_state(model: torch.nn.Module) -> torch.nn.Module:
    """Draw ``model``'s BatchNorm running means from N(0, 1) and running variances from U(0.5, 2), then its
    1-D parameters (biases, norm affines) from N(0, 1), in place with torch's global generator; return it in
    eval mode, so that the running statistics (not batch statistics) enter its function.
    """
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.normal_()
            elif name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_()
    return model.eval()


# --- a user model: a tiny vision transformer ---------------------------------------------------------------


class SelfAttention(nn.Module):
    """Hand-written multi-head self-attention: one ``qkv`` projection, scaled dot products per head, softmax,
    an output projection ``proj``. Written so that ``torch.fx`` can trace it (no shape unpacking).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, tokens, dim)`` -> same shape."""
        qkv = self.qkv(x).reshape(x.shape[0], x.shape[1], 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))`` (GELU MLP).

    ``attention="torch"`` uses ``nn.MultiheadAttention``, ``"hand"`` :class:`SelfAttention`.
    """

    def __init__(self, dim: int, heads: int, hidden: int, attention: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = (
            nn.MultiheadAttention(dim, heads, batch_first=True) if attention == "torch" else SelfAttention(dim, heads)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, tokens, dim)`` -> same shape."""
        h = self.norm1(x)
        if isinstance(self.attn, nn.MultiheadAttention):
            h = self.attn(h, h, h, need_weights=False)[0]
        else:
            h = self.attn(h)
        x = x + h
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A vision transformer small enough for a dense Hessian: non-overlapping ``patch x patch`` patches
    embedded by a strided convolution (``patch_embedding="conv"``) or a linear layer on unfolded patches
    (``"linear"``), a learned positional embedding, a class token (``pool="cls"``) or mean pooling
    (``"mean"``), one pre-norm :class:`EncoderBlock` per entry of ``attention``, a final LayerNorm and a
    linear head. No BatchNorm, unless ``patch_norm`` puts a BatchNorm2d after the convolutional patch
    embedding (the variant the BN policy must apply to).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_shape: tuple[int, ...],
        patch: int = 2,
        dim: int = 4,
        heads: int = 2,
        hidden: int = 8,
        attention: tuple[str, ...] = ("torch", "hand"),
        pool: str = "cls",
        patch_embedding: str = "conv",
        patch_norm: bool = False,
    ) -> None:
        super().__init__()
        channels, height, width = in_shape
        tokens = (height // patch) * (width // patch)
        self.patch, self.pool = patch, pool
        if patch_embedding == "conv":
            conv = nn.Conv2d(channels, dim, patch, stride=patch)
            self.patch_embed: nn.Module = nn.Sequential(conv, nn.BatchNorm2d(dim)) if patch_norm else conv
        else:
            self.patch_embed = nn.Linear(channels * patch * patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, tokens + (pool == "cls"), dim))
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, hidden, a) for a in attention))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` of images ``(batch, channels, height, width)``."""
        if not isinstance(self.patch_embed, nn.Linear):
            h = self.patch_embed(x).flatten(2).transpose(1, 2)
        else:
            h = self.patch_embed(F.unfold(x, self.patch, stride=self.patch).transpose(1, 2))
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), h], dim=1)
        h = self.norm(self.blocks(h + self.pos_embed))
        return self.head(h[:, 0] if self.pool == "cls" else h.mean(dim=1))


def build_vit(*, num_classes: int, in_shape: tuple[int, ...], **options: object) -> TinyViT:
    """A :class:`TinyViT`, built the way a plug-in model is: ``builder(*, num_classes, in_shape, **options)``."""
    return TinyViT(num_classes=num_classes, in_shape=in_shape, **options)  # type: ignore[arg-type]


def one_batch(batches: Batches) -> Batches:
    """The same samples as a single batch."""
    return [(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))]


@dataclass(frozen=True)
class Case:
    """A model, a parameter point, data and the BN batches of one test case.

    Attributes:
        name: the case id.
        model: float64 architecture.
        params: the point the estimators are evaluated at (for BN models a point off the trained one, so the
            BN policy recomputes its statistics).
        data: the loss's ``(inputs, targets)`` batches, the last one ragged.
        bn_batches: one batch of training inputs for the BN recompute (``None`` without BatchNorm).
        buffers: the buffers the BN policy gives ``params`` (the model's own without BatchNorm).
    """

    name: str
    model: torch.nn.Module
    params: dict[str, torch.Tensor]
    data: Batches
    bn_batches: Batches | None
    buffers: dict[str, torch.Tensor]

    @property
    def size(self) -> int:
        """Number of parameters ``P``."""
        return sum(v.numel() for v in self.params.values())

    def loss(self) -> float:
        """The reference loss at ``params`` (nats)."""
        fn, theta = dense_loss(self.model, self.data, params=self.params, buffers=self.buffers)
        self.model.eval()
        with torch.no_grad():
            return float(fn(theta))

    def hessian(self) -> torch.Tensor:
        """The dense reference Hessian at ``params`` (``P x P``, cached per case)."""
        return _hessian(self.name)

    def eigenvalues(self) -> np.ndarray:
        """All eigenvalues of :meth:`hessian`, descending."""
        return dense_eigenvalues(self.hessian())

    def hutchinson_sd(self, n_probes: int) -> float:
        """Standard deviation of the mean of ``n_probes`` Rademacher forms ``z^T H z`` (Hutchinson's trace
        estimator) for the reference Hessian: ``sqrt(2 (||H||_F^2 - sum_i H_ii^2) / n_probes)``.
        """
        h = self.hessian()
        return math.sqrt(2.0 * float((h**2).sum() - (torch.diagonal(h) ** 2).sum()) / n_probes)

    def operator(self, engine: str = "auto") -> HessianOperator:
        """Lgeom's Hessian operator (the code under test) at ``params`` under the BN policy: statistics
        recomputed on ``bn_batches``.
        """
        return HessianOperator(self.model, self.data, params=self.params, bn_batches=self.bn_batches, engine=engine)


def batch_statistics(
    model: torch.nn.Module, params: dict[str, torch.Tensor], inputs: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The buffers of ``model`` at ``params`` after one train-mode forward of ``inputs`` with momentum 1.

    That is the batch mean and unbiased batch variance of every BatchNorm layer's input: what the BN
    policy's recompute gives on a single batch, computed by torch's BatchNorm on a copy of the model.
    """
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(params[name])
    for m in ref.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = 1.0
    ref.train()
    with torch.no_grad():
        ref(inputs)
    return {n: b.detach().clone() for n, b in ref.named_buffers()}


def _images(n: int, shape: tuple[int, ...], seed: int, batch: int) -> Batches:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen, dtype=D)
    y = torch.randint(0, 3, (n,), generator=gen)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def _bn_case(name: str, model: torch.nn.Module, shape: tuple[int, ...], seed: int) -> Case:
    gen = torch.Generator().manual_seed(seed)
    # Off the model's own point: the stored statistics do not belong to it.
    params = {n: p.detach() + 0.05 * torch.randn(p.shape, generator=gen, dtype=D) for n, p in model.named_parameters()}
    data = _images(10, shape, seed + 1, batch=6)  # batches of 6 and 4
    bn = _images(8, shape, seed + 2, batch=8)
    return Case(name, model, params, data, bn, batch_statistics(model, params, bn[0][0]))


def mlp_case() -> Case:
    """A one-hidden-layer tanh MLP, 4 -> 8 -> 3 (P = 67), at its initialisation (seed 0); 40 samples in
    batches of 16, 16 and 8.
    """
    model = tiny_mlp(0)
    params = {n: p.detach() for n, p in model.named_parameters()}
    return Case("mlp", model, params, tiny_data(40), None, {n: b.detach() for n, b in model.named_buffers()})


def bn_cnn_case() -> Case:
    """A two-conv CNN with BatchNorm, 2 channels, on 3x4x4 inputs (P = 125, seed 0), at a point 0.05 off its
    initialisation; 10 samples in batches of 6 and 4, BN statistics from 8 other samples.
    """
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, in_shape=(3, 4, 4), channels=2, batchnorm=True).double()
    return _bn_case("bn_cnn", model, (3, 4, 4), seed=10)


# The PreResNet builder has no width option and its dense Hessian at the real widths (16, 32, 64 planes,
# P ~ 78k) would take 48 GB: the case builds it with 2 planes per stage (P = 315).
NARROW_PLANES = (2, 2, 2)


def preresnet8_case() -> Case:
    """PreResNet-8 built narrow (2 planes in each of its three stages, P = 315: the full-width dense Hessian
    is too big) on 3x8x8 inputs (seed 0), at a point 0.05 off its initialisation; 10 samples in batches of
    6 and 4, BN statistics from 8 other samples.
    """
    torch.manual_seed(0)
    with mock.patch.object(resnet, "STAGE_PLANES", NARROW_PLANES):
        model = build_model("preresnet", num_classes=3, in_shape=(3, 8, 8), depth=8).double()
    return _bn_case("preresnet8", model, (3, 8, 8), seed=20)


def vit_case() -> Case:
    """:class:`TinyViT` on 3x4x4 inputs (2x2 patches: 4 tokens and a class token of width 4, two heads, one
    block with ``nn.MultiheadAttention`` and one with :class:`SelfAttention`; P = 443, seed 0), at a point 0.1
    off its initialisation (so LayerNorm scales, biases and the class token are not at their initial 1s and
    0s); 10 samples in batches of 6 and 4. No BatchNorm: no BN batches, the model's own (no) buffers.
    """
    torch.manual_seed(0)
    model = build_vit(num_classes=3, in_shape=(3, 4, 4)).double()
    gen = torch.Generator().manual_seed(30)
    params = {n: p.detach() + 0.1 * torch.randn(p.shape, generator=gen, dtype=D) for n, p in model.named_parameters()}
    return Case("vit", model, params, _images(10, (3, 4, 4), 31, batch=6), None, dict(model.named_buffers()))


BUILDERS: dict[str, Callable[[], Case]] = {
    "mlp": mlp_case,
    "bn_cnn": bn_cnn_case,
    "preresnet8": preresnet8_case,
    "vit": vit_case,
}
CASES = tuple(BUILDERS)


@functools.cache
def get_case(name: str) -> Case:
    """The case called ``name`` (built once per process)."""
    return BUILDERS[name]()


@functools.cache
def _hessian(name: str) -> torch.Tensor:
    case = get_case(name)
    return dense_hessian(case.model, case.data, params=case.params, buffers=case.buffers)
