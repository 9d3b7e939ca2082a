"""A user's model through every probe: a tiny vision transformer (LayerNorm, ``nn.MultiheadAttention`` and a
hand-written attention, positional embedding, residuals; :class:`tests.lgeom.cases.TinyViT`) trained on a
subset of sklearn's digits, then connected (Bezier and PolyChain curves, path metrics, barriers), the plane
through A, C, B, the point probes (Hessian top-k, trace, density, sharpness, curvature, slices) and
alignment, which has to refuse the attention heads with a clear error.

The BN policy applies only where BatchNorm exists: the ViT is never run in train mode by an evaluation (no
BatchNorm recompute pass) and needs no ``bn_batches``, while the same ViT with a BatchNorm after its patch
embedding gets its statistics recomputed. The estimators themselves are checked against the dense float64
reference on the ViT case of ``tests/lgeom/cases.py`` (``vit`` in ``CASES``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from lgeom.align import apply_permutation, permutation_spec, weight_matching
from lgeom.curves import Bezier, CurveFitSpec, Line, build_curve, fit_curve
from lgeom.data import build_dataset, fixed_batches
from lgeom.evaluate import evaluate_point
from lgeom.hessian import HessianOperator
from lgeom.multipoint import evaluate_path
from lgeom.params import functional_forward, get_params
from lgeom.path import loss_barrier, path_metrics
from lgeom.permutation import PermutationSpecError
from lgeom.probes import ProbeSettings, probe_point
from lgeom.sharpness import ModelLandscape, mc_curvature
from lgeom.surfaces import plane, slice_1d, slice_2d
from lgeom.train import TrainSpec, train
from tests.lgeom.cases import build_vit

# Digits are 1x8x8: 4x4 patches give 4 tokens of width 8; one block with nn.MultiheadAttention, one hand-written.
VIT = {"patch": 4, "dim": 8, "heads": 2, "hidden": 16, "pool": "mean", "patch_embedding": "linear"}
SHAPE, CLASSES = (1, 8, 8), 10


def digits_vit(**options: object) -> nn.Module:
    """The ViT of these tests on digits (other options than :data:`VIT` override it)."""
    return build_vit(num_classes=CLASSES, in_shape=SHAPE, **{**VIT, **options})


@functools.cache
def digits() -> tuple[Subset, list, list]:
    """The first 256 training digits (to train and fit on), and fixed batches of 128 test and 128 training
    samples to evaluate on.
    """
    train_set, test_set = build_dataset("digits", "train"), build_dataset("digits", "test")
    subset = Subset(train_set, range(256))
    return subset, fixed_batches(test_set, 128, n_batches=1, seed=0), fixed_batches(subset, 128, n_batches=1, seed=0)


@functools.cache
def endpoints() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Two ViTs (seeds 0 and 1) trained for 5 epochs with Adam on :func:`digits`'s subset: A and B."""
    subset, _, _ = digits()
    ends = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        spec = TrainSpec(epochs=5, batch_size=32, optimizer="adam", lr=0.01, seed=seed, device="cpu")
        ends.append(train(digits_vit(), subset, None, spec, progress=False).final_params)
    return ends[0], ends[1]


class ModeRecorder:
    """Records whether ``model`` was in train mode at each of its forward calls (vmapped ones included)."""

    def __init__(self, model: nn.Module) -> None:
        self.modes: list[bool] = []
        self.handle = model.register_forward_pre_hook(lambda m, _: self.modes.append(m.training))

    @property
    def train_mode_calls(self) -> int:
        """Forward calls made in train mode (a BatchNorm recompute pass, or training)."""
        return sum(self.modes)


@pytest.fixture
def recorder() -> Iterator[tuple[nn.Module, ModeRecorder]]:
    model = digits_vit()
    rec = ModeRecorder(model)
    yield model, rec
    rec.handle.remove()


def test_curves_between_vit_endpoints_lower_the_barrier_of_the_line() -> None:
    subset, test, _ = digits()
    a, b = endpoints()
    model = digits_vit()
    ts = np.linspace(0.0, 1.0, 11)
    line = evaluate_path(model, Line(a, b), ts, test=test)
    line_barrier = loss_barrier(line["test_loss"])
    assert line_barrier > 0.2  # two independently trained ViTs: the straight path crosses a ridge
    for t, point in ((0, a), (-1, b)):
        assert line["test_loss"][t] == pytest.approx(
            evaluate_point(model, point, {"test": test})["test"].loss, rel=1e-5
        )
    for kind in ("bezier", "polychain"):
        curve = build_curve(kind, a, b)
        spec = CurveFitSpec(epochs=3, batch_size=64, optimizer="adam", lr=0.01, seed=0)
        fit = fit_curve(model, curve, subset, spec, progress=False)
        assert fit.steps == 12 and all(math.isfinite(v) for v in fit.history["loss"])
        assert all(torch.equal(curve.point(0.0)[n], a[n]) and torch.equal(curve.point(1.0)[n], b[n]) for n in a)
        table = evaluate_path(model, curve, ts, test=test)
        metrics = path_metrics(table)
        assert all(math.isfinite(v) for v in metrics.values()), metrics
        assert loss_barrier(table["test_loss"]) < 0.8 * line_barrier, kind


def test_plane_through_a_c_b_of_the_vit_hits_a_and_b_and_holds_the_curve() -> None:
    _, test, _ = digits()
    a, b = endpoints()
    model = digits_vit()
    c = {n: 0.5 * (a[n] + b[n]) + 0.05 * torch.randn(a[n].shape, generator=torch.Generator().manual_seed(3)) for n in a}
    curve = Bezier(a, b, bends=[c])
    res = plane(model, a, c, b, test=test, grid=(3, 3), margin=0.0, min_aspect=0.0, curve=curve, curve_points=5)
    # Without a margin (and without widening to an aspect) the grid's corners along y = 0 are A and B.
    grid = res.grids["test_loss"]
    assert grid.shape == (3, 3) and np.isfinite(grid).all()
    assert grid[0, 0] == pytest.approx(evaluate_point(model, a, {"test": test})["test"].loss, rel=1e-4)
    assert grid[0, -1] == pytest.approx(evaluate_point(model, b, {"test": test})["test"].loss, rel=1e-4)
    # A one-bend Bezier curve lies in the plane of its control points.
    assert res.curve_offplane.max() < 1e-4 * res.coords["b"][0]


def test_point_probes_of_the_vit_run_in_eval_mode_without_bn_batches(recorder) -> None:
    _, _, probe_data = digits()
    a, _ = endpoints()
    model, rec = recorder
    settings = ProbeSettings(
        hessian_k=2,
        trace_probes=8,
        density_runs=2,
        density_steps=8,
        density_grid=50,
        sharpness_samples=4,
        sharpness_steps=2,
        curvature_samples=4,
        slice_points=5,
        slice2d_points=3,
    )
    res = probe_point(model, a, probe_data, settings, progress=False)
    summary = res.summary()
    assert all(math.isfinite(v) for v in summary.values()), summary
    top = res.eigen.values
    assert top[0] >= top[1] > 0 and res.trace.mean > 0
    assert res.slice_1d.loss.shape == (5,) and res.slice_2d.loss.shape == (3, 3)
    assert res.slice_1d.center_loss == pytest.approx(res.loss, rel=1e-5)
    assert rec.modes and rec.train_mode_calls == 0  # no BatchNorm recompute pass, no training-mode forward


def test_curvature_of_the_vit_is_its_hessian_quadratic_form() -> None:
    # Sharpness's loss differences and the Hessian operator's products, in float64 on the trained ViT.
    _, _, probe_data = digits()
    a, _ = endpoints()
    model = digits_vit().double()
    point = {n: v.double() for n, v in a.items()}
    op = HessianOperator(model, probe_data, params=point)
    assert op.bn_source is None
    gen = torch.Generator().manual_seed(4)
    directions = [
        op.objective.layout.unflatten(torch.randn(op.size, generator=gen, dtype=torch.float64)) for _ in range(3)
    ]
    curv = mc_curvature(ModelLandscape(model, probe_data, params=point), eps=1e-3, directions=directions)
    for d, sample in zip(directions, curv.curvatures):
        v = op.objective.layout.flatten(d)
        v = v / v.norm()
        assert sample == pytest.approx(float(v @ op.matvec(v)), rel=1e-4, abs=1e-6)


def test_slices_of_the_vit_follow_the_filter_rule_and_match_direct_evaluation() -> None:
    _, test, _ = digits()
    a, _ = endpoints()
    model = digits_vit()
    one = slice_1d(model, test, params=a, n_points=3, seed=5)
    d = one.directions[0]
    assert all(torch.count_nonzero(d[n]) == 0 for n in a if a[n].dim() <= 1)  # LayerNorm, biases
    assert torch.linalg.vector_norm(d["pos_embed"]) == pytest.approx(float(torch.linalg.vector_norm(a["pos_embed"])))
    x, y = test[0]
    with torch.no_grad():
        logits = functional_forward(model.eval(), {n: a[n] + d[n] for n in a}, x)
    assert one.loss[-1] == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-5)
    two = slice_2d(model, test, params=a, n_points=3, seed=5)
    d1, d2 = two.directions
    assert abs(float(sum((d1[n] * d2[n]).sum() for n in a))) < 1e-3
    assert two.loss.shape == (3, 3) and two.center_loss == pytest.approx(one.center_loss, rel=1e-5)


def test_bn_policy_applies_to_the_vit_only_with_batchnorm() -> None:
    _, test, probe_data = digits()
    torch.manual_seed(0)
    plain = digits_vit(patch_embedding="conv")
    torch.manual_seed(0)
    with_bn = digits_vit(patch_embedding="conv", patch_norm=True)
    for model, needs_bn in ((plain, False), (with_bn, True)):
        rec = ModeRecorder(model)
        params = get_params(model)
        if needs_bn:
            with pytest.raises(ValueError, match="bn_batches: expected training batches to recompute BatchNorm"):
                slice_1d(model, test, params=params, n_points=3)
            res = slice_1d(model, test, params=params, n_points=3, bn_batches=probe_data)
            op = HessianOperator(model, test, params=params, bn_batches=probe_data)
        else:
            res = slice_1d(model, test, params=params, n_points=3)
            op = HessianOperator(model, test, params=params)
        rec.handle.remove()
        assert np.isfinite(res.loss).all()
        assert op.bn_source == ("recomputed" if needs_bn else None)
        assert (rec.train_mode_calls > 0) == needs_bn, (needs_bn, rec.train_mode_calls)


@pytest.mark.parametrize(
    ("options", "where", "op"),
    [
        ({"attention": ("hand", "torch")}, "blocks.0.attn:reshape", "call_method reshape"),
        ({"attention": ("torch", "hand")}, "blocks.0.attn", "MultiheadAttention"),
    ],
    ids=["hand-written-heads", "multihead-attention"],
)
def test_aligning_the_vit_raises_naming_the_attention(options: dict, where: str, op: str) -> None:
    torch.manual_seed(0)
    model = digits_vit(**options)
    with pytest.raises(PermutationSpecError) as err:
        permutation_spec(model)
    assert (err.value.model, err.value.where, err.value.op) == ("TinyViT", where, op)
    assert f"got {op} at {where!r}" in str(err.value)
    params = get_params(model)
    with pytest.raises(PermutationSpecError, match="permutation spec of TinyViT"):
        weight_matching(model, params, params)


def test_a_class_token_fixes_the_stream_so_only_mlp_units_are_permuted() -> None:
    # Concatenating the class token pins the residual stream (with mean pooling instead, attention raises as
    # above); attention then reads unpermuted tokens and the MLP hidden units are the only ones alignment may
    # permute: the graph allows no more.
    torch.manual_seed(0)
    model = digits_vit(pool="cls", patch_embedding="conv", attention=("torch", "torch")).double().eval()
    spec = permutation_spec(model)
    assert spec.sizes == {"blocks.0.mlp.0": 16, "blocks.1.mlp.0": 16}
    gen = torch.Generator().manual_seed(6)
    perms = {p: torch.randperm(n, generator=gen) for p, n in spec.sizes.items()}
    params = get_params(model)
    permuted = apply_permutation(spec, perms, params)
    x = torch.randn(5, *SHAPE, generator=gen, dtype=torch.float64)
    assert not torch.equal(permuted["blocks.0.mlp.0.weight"], params["blocks.0.mlp.0.weight"])
    torch.testing.assert_close(
        functional_forward(model, permuted, x), functional_forward(model, params, x), rtol=0, atol=1e-12
    )
