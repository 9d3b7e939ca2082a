"""The ``"rop"`` engine (:mod:`lgeom.hessian.rop`): lgeom's MLP's Hessian-vector products written out by hand,
against the dense float64 Hessian of ``torch.func`` (:func:`lgeom.reference.dense_hessian`), and when ``auto``
takes it or leaves it to the graph engines.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lgeom.hessian import HessianOperator, spectral_density, top_eigenvalues, trace
from lgeom.models import build_model
from lgeom.models.mlp import MLP
from lgeom.params import get_params
from lgeom.reference import dense_eigenvalues, dense_hessian
from tests.lgeom.cases import get_case, random_batches

D = torch.float64


def mlp(activation: str, depth: int, *, in_shape: tuple[int, ...] = (2, 3), classes: int = 3) -> nn.Module:
    torch.manual_seed(depth)
    return build_model("mlp", num_classes=classes, in_shape=in_shape, depth=depth, width=5, activation=activation).to(D)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_products_equal_the_dense_hessian(activation: str, depth: int) -> None:
    # 2x3 inputs (flattened by the model), three batches with a ragged last one, a point off the initialisation.
    model = mlp(activation, depth)
    data = random_batches((2, 3), 2, 7, seed=1) + random_batches((2, 3), 1, 4, seed=2)
    gen = torch.Generator().manual_seed(3)
    point = {n: p + 0.3 * torch.randn(p.shape, generator=gen, dtype=D) for n, p in get_params(model).items()}
    h = dense_hessian(model, data, params=point)
    op = HessianOperator(model, data, params=point, engine="auto")
    assert op.engine == "rop"
    v = torch.randn(4, op.size, generator=gen, dtype=D)
    torch.testing.assert_close(op.matmat(v), v @ h, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(op.matvec(v[0]), h @ v[0], rtol=1e-10, atol=1e-13)
    assert op.n_products == 5


def test_relu_at_a_kink_takes_autograds_derivative() -> None:
    # Zero biases and an input of zeros put pre-activations at exactly 0, where ReLU has no derivative: the
    # engine takes autograd's convention (slope 0), so it agrees with the cached engine there too.
    model = mlp("relu", 2)
    for layer in model.hidden:
        nn.init.zeros_(layer.bias)
    data = [(torch.zeros(3, 2, 3, dtype=D), torch.tensor([0, 1, 2])), *random_batches((2, 3), 1, 5, seed=4)]
    v = torch.randn(3, sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(5), dtype=D)
    rop = HessianOperator(model, data, engine="rop").matmat(v)
    cached = HessianOperator(model, data, engine="cached").matmat(v)
    torch.testing.assert_close(rop, cached, rtol=1e-10, atol=1e-13)


def test_estimators_on_the_engine_match_the_dense_spectrum() -> None:
    c = get_case("mlp")  # the shared tanh MLP case: auto now runs it on "rop"
    ev = c.eigenvalues()
    res = top_eigenvalues(c.model, c.data, k=4, tol=1e-8, engine="rop")
    np.testing.assert_allclose(res.values, ev[:4], rtol=1e-7)
    # The same probe vectors through both engines: the estimates agree to rounding.
    rop_trace = trace(c.model, c.data, n_probes=8, seed=0, engine="rop")
    assert rop_trace.mean == pytest.approx(trace(c.model, c.data, n_probes=8, seed=0, engine="cached").mean, rel=1e-10)
    rop_density = spectral_density(c.model, c.data, n_runs=2, n_steps=20, seed=0, engine="rop")
    cached_density = spectral_density(c.model, c.data, n_runs=2, n_steps=20, seed=0, engine="cached")
    np.testing.assert_allclose(rop_density.grid, cached_density.grid, rtol=1e-8)
    np.testing.assert_allclose(rop_density.density, cached_density.density, rtol=1e-6, atol=1e-8)


def test_activations_are_kept_only_within_the_memory_budget() -> None:
    model = mlp("tanh", 2)
    data = random_batches((2, 3), 3, 6, seed=6)
    kept = HessianOperator(model, data, engine="rop")
    recomputed = HessianOperator(model, data, engine="rop", memory_budget=1, merge_bytes=1)
    assert kept.engine == recomputed.engine == "rop"
    assert recomputed.chunk_sizes == [6, 6, 6] and kept.chunk_sizes == [18]
    v = torch.randn(2, kept.size, generator=torch.Generator().manual_seed(7), dtype=D)
    first = kept.matmat(v)
    assert kept._rop is not None and recomputed._rop is None
    torch.testing.assert_close(recomputed.matmat(v), first, rtol=1e-12, atol=1e-14)
    assert recomputed._rop is None  # nothing kept between passes
    kept.release()
    assert kept._rop is None
    torch.testing.assert_close(kept.matmat(v), first, rtol=0, atol=0)


class Scaled(MLP):
    """A user's subclass that changes ``forward``: the written-out products would be wrong for it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * super().forward(x)


def frozen_bias() -> nn.Module:
    model = mlp("tanh", 1)
    model.head.bias.requires_grad_(False)
    return model


class Doubled(nn.Linear):
    """A user's layer with the parameters of ``nn.Linear`` and another ``forward``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * super().forward(x)


def swapped_layer() -> nn.Module:
    model = mlp("tanh", 1)
    layer = Doubled(6, 5).to(D)
    layer.load_state_dict(model.hidden[0].state_dict())
    model.hidden[0] = layer
    return model


def hooked() -> nn.Module:
    model = mlp("tanh", 1)
    model.hidden[0].register_forward_hook(lambda module, args, out: out * 3.0)
    return model


@pytest.mark.parametrize(
    ("build", "why"),
    [
        (lambda: build_model("resmlp", num_classes=3, in_shape=(2, 3), blocks=1, width=5).to(D), "ResMLP"),
        (lambda: Scaled(6, 3, 1, 5, "tanh").to(D), "Scaled"),
        (lambda: build_model("mlp", num_classes=3, in_shape=(2, 3), depth=1, width=5, activation="gelu").to(D), None),
        (frozen_bias, "all trainable"),
        (hooked, "hooks"),
        (swapped_layer, "plain nn.Linear"),
    ],
)
def test_auto_leaves_other_models_to_the_graph_engines(build, why: str | None) -> None:
    model = build()
    if why is None:  # GELU's tanh approximation: not the exact GELU the engine writes out
        model.act = nn.GELU(approximate="tanh")
        why = "gelu"
    data = random_batches((2, 3), 2, 5, seed=8)
    op = HessianOperator(model, data, engine="auto")
    assert op.engine == "cached"
    params = get_params(model)
    h = dense_hessian(model, data, params=params)
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(9), dtype=D)
    torch.testing.assert_close(op.matvec(v), h @ v, rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match=r"engine: expected an engine other than 'rop'.*" + why):
        HessianOperator(model, data, engine="rop")


@pytest.mark.parametrize(
    ("targets", "why"),
    [
        (torch.full((5, 3), 1 / 3, dtype=D), "1-D integer class indices"),
        (torch.tensor([0, 1, 2, 3, 0]), r"targets in \[0, 3\)"),
    ],
)
def test_targets_the_engine_does_not_write_out_are_refused(targets: torch.Tensor, why: str) -> None:
    model = mlp("relu", 1)
    data = [(torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(10), dtype=D), targets)]
    with pytest.raises(ValueError, match=why):
        HessianOperator(model, data, engine="rop")
    if targets.dtype.is_floating_point:  # soft labels: auto falls back to a graph engine, which takes them
        op = HessianOperator(model, data, engine="auto")
        assert op.engine == "cached"
        v = torch.ones(op.size, dtype=D)
        torch.testing.assert_close(op.matvec(v), dense_hessian(model, data) @ v, rtol=1e-10, atol=1e-13)


def test_eigenvalues_on_images_of_a_float32_mlp_match_the_cached_engine() -> None:
    # The dtype and shapes of the studies: float32, image inputs flattened, several batches.
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=4, in_shape=(1, 6, 6), depth=2, width=16)
    gen = torch.Generator().manual_seed(11)
    data = [(torch.randn(32, 1, 6, 6, generator=gen), torch.randint(0, 4, (32,), generator=gen)) for _ in range(3)]
    rop = top_eigenvalues(model, data, k=3, tol=1e-4, engine="rop")
    cached = top_eigenvalues(model, data, k=3, tol=1e-4, engine="cached")
    assert rop.converged.all() and cached.converged.all()
    np.testing.assert_allclose(rop.values, cached.values, rtol=1e-4)
    h = dense_hessian(model.double(), [(x.double(), y) for x, y in data])
    np.testing.assert_allclose(rop.values, dense_eigenvalues(h)[:3], rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
def test_class_indices_of_any_integer_dtype_are_indices_not_masks(dtype: torch.dtype) -> None:
    model = mlp("relu", 1)
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(12), dtype=D)
    y = torch.tensor([0, 1, 2, 1, 0])
    v = torch.randn(2, sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(13), dtype=D)
    expected = HessianOperator(model, [(x, y)], engine="rop").matmat(v)
    torch.testing.assert_close(HessianOperator(model, [(x, y.to(dtype))], engine="rop").matmat(v), expected)
    torch.testing.assert_close(expected, v @ dense_hessian(model, [(x, y)]), rtol=1e-10, atol=1e-13)
