"""probe_point / probe_path: every probe on MLP, CNN and PreResNet-8, the BN policy, determinism."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from lgeom.curves import Line
from lgeom.evaluate import evaluate, recompute_bn_stats
from lgeom.hessian import top_eigenvalues
from lgeom.models import build_model
from lgeom.params import get_buffers, get_params
from lgeom.probes import PROBES, ProbeSettings, enabled_probes, probe_path, probe_point
from tests.lgeom.probe_cases import image_data, tiny_data, tiny_mlp

SMALL = ProbeSettings(hessian_k=2, hessian_max_iter=12, hessian_points=3, trace_probes=3, density_runs=2, density_steps=5,
                      density_grid=50, sharpness_samples=2, sharpness_steps=2, curvature_samples=2, slice_points=3, slice2d_points=2)

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
    for key in ("hessian.lambda_max", "hessian.topk_mean", "hessian.trace", "sharpness.eps_avg", "sharpness.eps_worst",
                "curvature.mc_mean", "probe.loss"):
        assert math.isfinite(summary[key]), key
    spec = res.spectrum()
    assert spec["eigenvalues"] == res.eigen.values.tolist() and spec["trace"]["n_probes"] == 3 and len(spec["density"]["grid"]) == 50
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
    b = {n: p + 0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype) for n, p in a.items()}
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


def test_probe_path_uses_trained_buffers_at_the_endpoints() -> None:
    torch.manual_seed(3)
    model = MODELS["cnn"]()
    data = image_data(12)
    a = get_params(model)
    b = {n: p * 1.1 for n, p in a.items()}
    bufs = get_buffers(model)
    table = probe_path(model, Line(a, b), [0.0, 1.0], data, settings=SMALL, endpoint_buffers=(bufs, bufs), progress=False)
    assert table["probe_loss"][0] == pytest.approx(evaluate(model, data, params=a, buffers=bufs).loss, rel=1e-5)


def test_a_subset_of_probes_runs_only_those() -> None:
    model, data = tiny_mlp(0), tiny_data(16)
    res = probe_point(model, get_params(model), data, SMALL, probes=("curvature", "sharpness"), progress=False)
    assert res.eigen is None and res.trace is None and res.slice_1d is None and res.worst is None
    assert list(res.timings) == ["sharpness", "curvature"]
    assert res.loss == pytest.approx(evaluate(model, data).loss, rel=1e-12)
    assert set(res.summary()) == {"probe.loss", "sharpness.eps_avg", "sharpness.eps_avg_max", "sharpness.flatness",
                                  "curvature.mc_mean", "curvature.mc_std", "curvature.mc_frac_negative"}


def test_settings_and_input_errors() -> None:
    assert enabled_probes(dataclasses.replace(SMALL, trace_probes=0, slices=False, density=False)) == (
        "hessian", "sharpness", "worst", "curvature")
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
