"""Tiny float64 cases with dense references that do not use the code under test.

After curvlinops' ``test/cases.py``: every estimator test runs over :data:`CASES` (a small MLP, a small
BatchNorm CNN and a narrow PreResNet-8), each with a fixed seed, inputs and labels. The reference loss is
plain ``torch.func.functional_call`` + ``F.cross_entropy`` in eval mode (:func:`lgeom.reference.dense_loss`),
and the dense Hessian is ``torch.func.hessian`` of it over the flat parameter vector. For BatchNorm models
the reference buffers are the statistics the BN policy gives a point that is not a trained endpoint,
computed here with torch's own BatchNorm (train mode, momentum 1, one batch holding every BN sample), never
with lgeom's recompute.

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


BUILDERS: dict[str, Callable[[], Case]] = {"mlp": mlp_case, "bn_cnn": bn_cnn_case, "preresnet8": preresnet8_case}
CASES = tuple(BUILDERS)


@functools.cache
def get_case(name: str) -> Case:
    """The case called ``name`` (built once per process)."""
    return BUILDERS[name]()


@functools.cache
def _hessian(name: str) -> torch.Tensor:
    case = get_case(name)
    return dense_hessian(case.model, case.data, params=case.params, buffers=case.buffers)
