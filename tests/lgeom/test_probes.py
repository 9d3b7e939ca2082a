"""probe_point / probe_path: every probe on MLP, CNN and PreResNet-8, the BN policy, determinism."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from lgeom.batchnorm import recompute_bn_stats
from lgeom.curves import Bezier, Line
from lgeom.evaluate import evaluate
from lgeom.hessian import top_eigenvalues
from lgeom.models import build_model
from lgeom.params import get_buffers, get_params
from lgeom.probes import PROBES, PointMemo, ProbeSettings, enabled_probes, probe_path, probe_point
from tests.lgeom.cases import image_data, tiny_data, tiny_mlp

SMALL = ProbeSettings(
    hessian_k=2,
    hessian_max_iter=12,
    hessian_points=3,
    trace_probes=3,
    density_runs=2,
    density_steps=5,
    density_grid=50,
    sharpness_samples=2,
    sharpness_steps=2,
    curvature_samples=2,
    slice_points=3,
    slice2d_points=2,
)

MODELS = {
    "mlp": lambda: build_model("mlp", num_classes=3, in_shape=(3, 8, 8), depth=2, width=8),
    "cnn": lambda: build_model("cnn", num_classes=3, in_shape=(3, 8, 8), channels=4, batchnorm=True),
    "preresnet8": lambda: build_model("preresnet", num_classes=3, in_shape=(3, 8, 8), depth=8),
}


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_every_probe_runs_on_each_architecture(arch: str) -> None:
    torch.manual_seed(0)
    model = MODELS[arch]()
    data = image_data(12)
    res = probe_point(model, get_params(model), data, SMALL, buffers=get_buffers(model), endpoint=True, progress=False)
    assert set(res.timings) == set(PROBES)
    assert len(res.eigen.values) == 2 and res.eigen.values[0] >= res.eigen.values[1]
    assert res.density.integral() == pytest.approx(1.0, abs=1e-6)
    assert len(res.average.increases) == 2 and res.worst.steps == 2 and len(res.curvature.curvatures) == 2
    assert res.slice_1d.loss.shape == (3,) and res.slice_2d.loss.shape == (2, 2)
    summary = res.summary()
    for key in (
        "hessian/lambda_max",
        "hessian/topk_mean",
        "hessian/trace",
        "sharpness/eps_avg",
        "sharpness/eps_worst",
        "curvature/mc_mean",
        "probe/loss",
    ):
        assert math.isfinite(summary[key]), key
    spec = res.spectrum()
    assert (
        spec["eigenvalues"] == res.eigen.values.tolist()
        and spec["trace"]["n_probes"] == 3
        and len(spec["density"]["grid"]) == 50
    )
    assert res.n_params == sum(p.numel() for p in model.parameters()) and res.n_samples == 12


def test_bn_policy_endpoint_keeps_buffers_elsewhere_recomputes() -> None:
    torch.manual_seed(1)
    model = MODELS["preresnet8"]()
    data = image_data(12)
    params, buffers = get_params(model), get_buffers(model)
    for m in model.modules():  # make the kept statistics differ from recomputed ones
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(0.3)
    buffers = get_buffers(model)
    only = ("hessian",)
    at_end = probe_point(model, params, data, SMALL, buffers=buffers, endpoint=True, probes=only, progress=False)
    assert at_end.loss == pytest.approx(evaluate(model, data, params=params, buffers=buffers).loss, rel=1e-5)
    fresh = recompute_bn_stats(model, params, data)
    elsewhere = probe_point(model, params, data, SMALL, buffers=buffers, probes=only, progress=False)
    assert elsewhere.loss == pytest.approx(evaluate(model, data, params=params, buffers=fresh).loss, rel=1e-5)
    assert abs(at_end.loss - elsewhere.loss) > 1e-3
    ref = top_eigenvalues(model, data, k=2, buffers=fresh, max_iter=12)
    np.testing.assert_allclose(elsewhere.eigen.values, ref.values, rtol=1e-5)


def test_probes_on_a_bn_model_are_identical_on_two_calls() -> None:
    torch.manual_seed(2)
    model = MODELS["cnn"]()
    data = image_data(12)
    first = probe_point(model, get_params(model), data, SMALL, progress=False)
    second = probe_point(model, get_params(model), data, SMALL, progress=False)
    assert first.summary() == second.summary()
    np.testing.assert_array_equal(first.slice_2d.loss, second.slice_2d.loss)
    np.testing.assert_array_equal(first.density.density, second.density.density)


def test_probe_path_matches_probe_point_at_each_t() -> None:
    model, data = tiny_mlp(0), tiny_data(40)
    a = get_params(model)
    b = {
        n: p + 0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype)
        for n, p in a.items()
    }
    line = Line(a, b)
    table = probe_path(model, line, [0.0, 0.5, 1.0], data, settings=SMALL, progress=False)
    assert table.names[:3] == ["t", "probe_loss", "hessian_lambda_max"]
    assert {"hessian_top1", "hessian_top2"} <= set(table.names) and "hessian_trace" not in table
    np.testing.assert_allclose(table["t"], [0.0, 0.5, 1.0])
    mid = probe_point(model, line.point(0.5), data, SMALL, probes=("hessian",), progress=False)
    assert table["hessian_lambda_max"][1] == pytest.approx(mid.eigen.values[0], rel=1e-12)
    np.testing.assert_array_equal(table["hessian_top1"], table["hessian_lambda_max"])
    default = probe_path(model, line, None, data, ("hessian", "trace"), settings=SMALL, progress=False)
    assert len(default) == SMALL.hessian_points and "hessian_trace" in default


def _two_paths(model: torch.nn.Module) -> tuple[dict, dict, Line, Bezier]:
    a = get_params(model)
    gen = torch.Generator().manual_seed(1)
    b = {n: p + 0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in a.items()}
    bend = {n: 0.5 * (a[n] + b[n]) + 0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in a.items()}
    return a, b, Line(a, b), Bezier(a, b, [bend])


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_point_memo_gives_the_values_of_a_fresh_computation(arch: str) -> None:
    """What the study does: A, B and the Bezier midpoint probed, then the top-k along two paths sharing A
    and B, with a memo: the tables equal (bit for bit) those computed without one, and only the repeated points
    (t = 0 and 1 of both paths, t = 0.5 of the Bezier curve) come from the memo. Float64 MLP and a BN CNN.
    """
    torch.manual_seed(4)
    model, data = (tiny_mlp(0), tiny_data(40)) if arch == "mlp" else (MODELS["cnn"]().double(), image_data(12))
    if arch == "cnn":
        data = [(x.double(), y) for x, y in data]
    a, b, line, bezier = _two_paths(model)
    bufs = get_buffers(model)
    ts = [0.0, 0.25, 0.5, 0.75, 1.0]

    def run(memo: PointMemo | None) -> list:
        points = [
            probe_point(model, a, data, SMALL, buffers=bufs, endpoint=True, progress=False, memo=memo),
            probe_point(model, b, data, SMALL, buffers=bufs, endpoint=True, progress=False, memo=memo),
            probe_point(model, bezier.midpoint(), data, SMALL, progress=False, memo=memo),
        ]
        tables = [
            probe_path(model, path, ts, data, settings=SMALL, endpoint_buffers=(bufs, bufs), progress=False, memo=memo)
            for path in (line, bezier)
        ]
        return points + tables

    memo = PointMemo(model)
    with_memo, fresh = run(memo), run(None)
    assert memo.hits == 5  # t = 0 and 1 of each path, the Bezier curve's t = 0.5
    for got, want in zip(with_memo[:3], fresh[:3]):
        assert got.summary(include_topk=True) == want.summary(include_topk=True)
    for got, want in zip(with_memo[3:], fresh[3:]):
        assert got.names == want.names
        for col in got.names:
            np.testing.assert_array_equal(got[col], want[col])


def test_point_memo_reuses_only_an_equal_point_with_the_same_inputs() -> None:
    model, data = tiny_mlp(0), tiny_data(40)
    a, b, _, _ = _two_paths(model)
    memo = PointMemo(model)
    first = probe_point(model, a, data, SMALL, probes=("hessian", "trace"), progress=False, memo=memo)
    again = probe_point(
        model, {n: v.clone() for n, v in a.items()}, data, SMALL, probes=("hessian",), progress=False, memo=memo
    )
    assert memo.hits == 1 and again.eigen is first.eigen and again.trace is None and again.loss == first.loss
    nudged = {n: v.clone() for n, v in a.items()}
    next(iter(nudged.values())).view(-1)[0] += 1e-12
    changed = [
        dict(params=nudged, data=data, settings=SMALL, probes=("hessian",)),  # not the same point
        dict(params=a, data=[(x.clone(), y) for x, y in data], settings=SMALL, probes=("hessian",)),  # other data
        dict(params=a, data=data, settings=dataclasses.replace(SMALL, seed=7), probes=("hessian",)),  # settings
        dict(params=a, data=data, settings=SMALL, probes=("trace",)),  # a probe the memo does not hand out
    ]
    for kw in changed:
        probe_point(model, kw["params"], kw["data"], kw["settings"], probes=kw["probes"], progress=False, memo=memo)
    probe_point(model, a, data, SMALL, probes=("hessian",), endpoint=True, buffers={}, progress=False, memo=memo)
    probe_point(tiny_mlp(0), a, data, SMALL, probes=("hessian",), progress=False, memo=memo)  # another model
    assert memo.hits == 1


def test_probe_path_uses_trained_buffers_at_the_endpoints() -> None:
    torch.manual_seed(3)
    model = MODELS["cnn"]()
    data = image_data(12)
    a = get_params(model)
    b = {n: p * 1.1 for n, p in a.items()}
    bufs = get_buffers(model)
    table = probe_path(
        model, Line(a, b), [0.0, 1.0], data, settings=SMALL, endpoint_buffers=(bufs, bufs), progress=False
    )
    assert table["probe_loss"][0] == pytest.approx(evaluate(model, data, params=a, buffers=bufs).loss, rel=1e-5)


def test_a_subset_of_probes_runs_only_those() -> None:
    model, data = tiny_mlp(0), tiny_data(16)
    res = probe_point(model, get_params(model), data, SMALL, probes=("curvature", "sharpness"), progress=False)
    assert res.eigen is None and res.trace is None and res.slice_1d is None and res.worst is None
    assert list(res.timings) == ["sharpness", "curvature"]
    assert res.loss == pytest.approx(evaluate(model, data).loss, rel=1e-12)
    assert set(res.summary()) == {
        "probe/loss",
        "sharpness/eps_avg",
        "sharpness/eps_avg_max",
        "sharpness/flatness",
        "curvature/mc_mean",
        "curvature/mc_std",
        "curvature/mc_frac_negative",
    }


def test_settings_and_input_errors() -> None:
    assert enabled_probes(dataclasses.replace(SMALL, trace_probes=0, slices=False, density=False)) == (
        "hessian",
        "sharpness",
        "worst",
        "curvature",
    )
    assert ProbeSettings.from_object({"hessian_k": 7, "unrelated": 1}).hessian_k == 7
    with pytest.raises(ValueError, match="probe settings: sharpness_eps: expected a finite number > 0, got 0"):
        ProbeSettings.from_object({"sharpness_eps": 0})
    model, data = tiny_mlp(0), tiny_data(16)
    with pytest.raises(ValueError, match="probe: expected one of hessian, trace"):
        probe_point(model, get_params(model), data, SMALL, probes=("hessian", "sharpnes"), progress=False)
    with pytest.raises(ValueError, match="probes along a path: expected scalar probes"):
        probe_path(model, Line(get_params(model), get_params(model)), [0.5], data, ("slices",), progress=False)
    with pytest.raises(ValueError, match="t: expected a value in \\[0, 1\\], got 1.5"):
        probe_path(model, Line(get_params(model), get_params(model)), [1.5], data, settings=SMALL, progress=False)
    with pytest.raises(ValueError, match="data: expected a non-empty dataset"):
        probe_point(model, get_params(model), [], SMALL, progress=False)
    with pytest.raises(ValueError, match="hessian_engine: expected one of"):
        probe_point(model, get_params(model), data, dataclasses.replace(SMALL, hessian_engine="x"), progress=False)


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_trajectory_probes_and_probe_path_on_each_architecture(arch: str) -> None:
    """PCA plane, effective dimensionality (of gradients from a short real training run) and probe_path on
    MLP, CNN with BatchNorm and PreResNet-8 (tiny 3x8x8 inputs, 12 samples).
    """
    from lgeom.data import ArrayDataset
    from lgeom.gradients import effective_dimensionality
    from lgeom.params import flatten
    from lgeom.surfaces import pca_plane
    from lgeom.train import TrainSpec, train

    torch.manual_seed(0)
    model = MODELS[arch]()
    data = image_data(12)
    x, y = torch.cat([b[0] for b in data]), torch.cat([b[1] for b in data])
    result = train(
        model,
        ArrayDataset(x, y, 3),
        spec=TrainSpec(epochs=2, batch_size=4, lr=0.05, snapshot_every=1, grad_snapshot_every=1, device="cpu"),
        progress=False,
    )
    n_params = sum(p.numel() for p in model.parameters())
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    bn = (
        image_data(16, batch=8, seed=5) if has_bn else None
    )  # equal sizes: lgeom/multipoint.py weights BN batches equally

    effdim = effective_dimensionality(result.grad_snapshots)
    assert effdim.n_params == n_params and effdim.n_samples == len(result.grad_snapshots) == 6
    assert 1 <= effdim.n_components <= 5 and effdim.ratio == pytest.approx(effdim.n_components / n_params)

    final = result.final_params
    plane = pca_plane(model, result.snapshots, data, final=final, n_points=3, bn_batches=bn)
    assert plane.loss.shape == (3, 3) and np.isfinite(plane.loss).all()
    assert 0 < plane.explained_variance_ratio[1] <= plane.explained_variance_ratio[0] <= 1
    torch.testing.assert_close(
        torch.as_tensor(plane.components) @ torch.as_tensor(plane.components).T,
        torch.eye(2, dtype=torch.as_tensor(plane.components).dtype),
        atol=1e-5,
        rtol=0,
    )
    final_bufs = recompute_bn_stats(model, final, bn) if bn is not None else None  # the BN policy at a grid point
    assert plane.snapshot_loss[-1] == pytest.approx(
        evaluate(model, data, params=flatten_to(final, result.snapshots[-1]), buffers=final_bufs).loss, rel=1e-4
    )

    a = result.final_params
    b = {n: p + 0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) for n, p in a.items()}
    bufs = result.final_buffers
    table = probe_path(
        model, Line(a, b), [0.0, 0.5, 1.0], data, settings=SMALL, endpoint_buffers=(bufs, bufs), progress=False
    )
    assert np.isfinite(table["hessian_lambda_max"]).all() and list(table["t"]) == [0.0, 0.5, 1.0]
    mid = probe_point(model, Line(a, b).point(0.5), data, SMALL, probes=("hessian",), progress=False)
    assert table["hessian_lambda_max"][1] == pytest.approx(mid.eigen.values[0], rel=1e-6)
    end = probe_point(model, a, data, SMALL, buffers=bufs, endpoint=True, probes=("hessian",), progress=False)
    assert table["probe_loss"][0] == pytest.approx(end.loss, rel=1e-6)
    assert flatten(a).numel() == n_params


def flatten_to(params: dict, flat: torch.Tensor) -> dict:
    """``flat`` (a trajectory snapshot) as a parameter dict shaped like ``params``."""
    from lgeom.params import unflatten

    return unflatten(flat.to(next(iter(params.values())).dtype), params)
