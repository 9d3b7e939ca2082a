"""Hessian-vector products and spectral estimators against the dense Hessian of tiny float64 cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lgeom.evaluate import recompute_bn_stats
from lgeom.hessian import (
    HessianOperator,
    hvp,
    lanczos_eigenvalues,
    power_eigenvalues,
    slq_density,
    spectral_density,
    top_eigenvalues,
    trace,
)
from lgeom.models import build_model
from lgeom.params import get_params
from lgeom.reference import DenseOperator, dense_eigenvalues, dense_hessian, symmetric_with_spectrum
from tests.lgeom.probe_cases import one_batch, tiny_data, tiny_mlp


@pytest.fixture(scope="module")
def case() -> dict:
    model, data = tiny_mlp(0), tiny_data(40)  # batches of 16, 16, 8
    h = dense_hessian(model, data)
    return {"model": model, "data": data, "h": h, "ev": dense_eigenvalues(h)}


@pytest.mark.parametrize("engine", ["forward", "cached"])
def test_hvp_equals_dense_hessian_times_v(case: dict, engine: str) -> None:
    op = HessianOperator(case["model"], case["data"], engine=engine)
    v = torch.randn(5, op.size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(op.matmat(v), v @ case["h"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.matvec(v[0]), case["h"] @ v[0], rtol=1e-10, atol=1e-12)
    assert op.n_products == 6


def test_hvp_function_accepts_flat_rows_and_dicts(case: dict) -> None:
    model, data, h = case["model"], case["data"], case["h"]
    v = torch.randn(2, h.shape[0], generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(hvp(model, data, v), v @ h, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hvp(model, data, v[1]), h @ v[1], rtol=1e-10, atol=1e-12)
    params = get_params(model)
    as_dict = hvp(model, data, {n: torch.ones_like(p) for n, p in params.items()})
    assert set(as_dict) == set(params)
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in as_dict.values()]), h @ torch.ones(h.shape[0], dtype=torch.float64))


def test_ragged_last_batch_does_not_bias_the_hessian(case: dict) -> None:
    model, data = case["model"], case["data"]
    assert [len(y) for _, y in data] == [16, 16, 8]
    v = torch.randn(3, case["h"].shape[0], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(hvp(model, data, v), hvp(model, one_batch(data), v), rtol=1e-12, atol=1e-14)
    t_ragged = trace(model, data, n_probes=8, seed=1)
    t_whole = trace(model, one_batch(data), n_probes=8, seed=1)
    assert t_ragged.mean == pytest.approx(t_whole.mean, rel=1e-12)


def test_lanczos_top5_within_1e_4_relative(case: dict) -> None:
    res = top_eigenvalues(case["model"], case["data"], k=5, method="lanczos", tol=1e-3, return_vectors=True)
    np.testing.assert_allclose(res.values, case["ev"][:5], rtol=1e-4)
    assert res.converged.all() and res.method == "lanczos"
    assert res.n_hvp < case["h"].shape[0]  # cheaper than forming the Hessian
    # Ritz vectors are unit eigenvectors of the dense Hessian.
    vec = res.vectors.to(torch.float64)
    torch.testing.assert_close(vec @ vec.T, torch.eye(5, dtype=torch.float64), atol=1e-8, rtol=0)
    resid = (vec @ case["h"] - torch.as_tensor(res.values)[:, None] * vec).norm(dim=1).numpy()
    np.testing.assert_allclose(resid, res.residuals, rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("tol", [1e-2, 1e-3, 1e-5])
def test_lanczos_stops_at_tol_with_errors_inside_the_residuals(case: dict, tol: float) -> None:
    res = top_eigenvalues(case["model"], case["data"], k=5, tol=tol)
    err = np.abs(res.values - case["ev"][:5])
    assert res.converged.all() and np.all(res.residuals <= tol * np.abs(res.values))
    assert np.all(err <= res.residuals * (1 + 1e-6) + 1e-14)
    assert np.all(err <= res.error_bounds * (1 + 1e-6) + 1e-14)  # the gap estimate holds for these isolated values
    assert np.all(err <= tol * np.abs(case["ev"][:5]))


def test_power_iteration_top5_within_1e_2(case: dict) -> None:
    res = top_eigenvalues(case["model"], case["data"], k=5, method="power", tol=1e-3, max_iter=300, engine="cached")
    np.testing.assert_allclose(res.values, case["ev"][:5], rtol=1e-2)
    assert res.method == "power" and res.n_hvp > 0


def test_largest_algebraic_eigenvalues_when_negative_ones_dominate() -> None:
    spectrum = [-10.0, -9.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5] + [0.1] * 22
    op = DenseOperator(symmetric_with_spectrum(spectrum, seed=1))
    for solver, kw in ((lanczos_eigenvalues, {}), (power_eigenvalues, {"tol": 1e-6, "max_iter": 2000})):
        res = solver(op, 3, **kw)
        np.testing.assert_allclose(res.values, [5.0, 4.0, 3.0], rtol=1e-4, err_msg=solver.__name__)
    # All negative: the largest algebraic are the ones nearest zero.
    op = DenseOperator(symmetric_with_spectrum([-1.0, -2.0, -3.0, -4.0, -8.0, -9.0], seed=2))
    for solver in (lanczos_eigenvalues, power_eigenvalues):
        res = solver(op, 2, tol=1e-8, max_iter=3000)
        np.testing.assert_allclose(res.values, [-1.0, -2.0], rtol=1e-4, err_msg=solver.__name__)


def test_model_hessian_with_negative_curvature_gives_algebraic_top_k(case: dict) -> None:
    ev = case["ev"]
    assert ev[-1] < 0
    k = int(np.argmax(ev < abs(ev[-1]))) + 1  # the first top-k list that largest-magnitude order would get wrong
    assert 2 <= k <= 20
    lanczos = top_eigenvalues(case["model"], case["data"], k=k, tol=1e-6)
    np.testing.assert_allclose(lanczos.values, ev[:k], rtol=1e-4)
    power = top_eigenvalues(case["model"], case["data"], k=k, method="power", tol=1e-4, max_iter=1000, engine="cached")
    np.testing.assert_allclose(power.values, ev[:k], rtol=1e-2)


def test_exhausting_the_krylov_space_gives_the_exact_spectrum() -> None:
    op = DenseOperator(symmetric_with_spectrum([4.0, 4.0, 2.0, 1.0, 1.0, -3.0], seed=3))
    res = lanczos_eigenvalues(op, 6, tol=1e-12, max_iter=6)
    np.testing.assert_allclose(res.values, [4.0, 4.0, 2.0, 1.0, 1.0, -3.0], atol=1e-10)


def test_hutchinson_trace_within_three_standard_errors(case: dict) -> None:
    exact = float(torch.trace(case["h"]))
    est = trace(case["model"], case["data"], n_probes=64, seed=0)
    assert est.n_probes == 64 and est.stderr > 0
    assert abs(est.mean - exact) <= 3 * est.stderr
    plus = trace(case["model"], case["data"], n_probes=30, seed=0, method="hutch++")
    assert abs(plus.mean - exact) <= 3 * plus.stderr
    # With a sketch as large as the space, Hutch++ is exact.
    full = trace(case["model"], case["data"], n_probes=3 * case["h"].shape[0], seed=0, method="hutch++")
    assert full.mean == pytest.approx(exact, rel=1e-10)


def test_density_integrates_to_one_and_its_mean_is_trace_over_n() -> None:
    gen = torch.Generator().manual_seed(7)
    spectrum = (1.0 + 0.5 * torch.rand(300, generator=gen, dtype=torch.float64)).tolist()
    op = DenseOperator(symmetric_with_spectrum(spectrum, seed=4))
    dens = slq_density(op, n_runs=40, n_steps=20, seed=0)
    assert dens.integral() == pytest.approx(1.0, abs=1e-9)
    assert dens.mean() == pytest.approx(sum(spectrum) / len(spectrum), rel=0.05)
    assert dens.grid[0] < min(spectrum) and dens.grid[-1] > max(spectrum)
    assert np.all(dens.density >= 0) and dens.n_hvp == 40 * 20


def test_model_density_mean_is_the_hutchinson_estimate_of_its_start_vectors(case: dict) -> None:
    model, data = case["model"], case["data"]
    n = case["h"].shape[0]
    dens = spectral_density(model, data, n_runs=6, n_steps=n, sigma=0.01, seed=5)
    est = trace(model, data, n_probes=6, seed=5)  # the same Rademacher vectors
    assert dens.integral() == pytest.approx(1.0, abs=1e-9)
    assert dens.mean() == pytest.approx(est.mean / n, rel=1e-6)
    # With the Krylov space exhausted the nodes are eigenvalues of the Hessian.
    nodes = dens.nodes[np.isfinite(dens.nodes)]
    assert np.abs(nodes[:, None] - case["ev"][None, :]).min(axis=1).max() < 1e-6


def test_bn_model_uses_eval_mode_with_the_given_buffers() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, in_shape=(3, 4, 4), channels=2, batchnorm=True).double()
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(12, 3, 4, 4, generator=gen, dtype=torch.float64)
    data = [(x[:8], torch.randint(0, 3, (8,), generator=gen)), (x[8:], torch.randint(0, 3, (4,), generator=gen))]
    params = get_params(model)
    buffers = recompute_bn_stats(model, params, data)
    model.train()
    h = dense_hessian(model, data, buffers=buffers)
    res = top_eigenvalues(model, data, k=3, buffers=buffers, tol=1e-6)
    np.testing.assert_allclose(res.values, dense_eigenvalues(h)[:3], rtol=1e-4)
    assert model.training  # mode restored
    again = top_eigenvalues(model, data, k=3, buffers=buffers, tol=1e-6)
    np.testing.assert_array_equal(res.values, again.values)


def test_auto_engine_caches_when_the_graphs_fit(case: dict) -> None:
    assert HessianOperator(case["model"], case["data"], engine="auto").engine == "cached"
    small = HessianOperator(case["model"], case["data"], engine="auto", memory_budget=1)
    assert small.engine == "forward"
    v = torch.ones(small.size, dtype=torch.float64)
    torch.testing.assert_close(small.matvec(v), case["h"] @ v, rtol=1e-10, atol=1e-12)


def test_batchnorm_as_affine_is_exact() -> None:
    from lgeom.gradients import EvalBatchNormAsAffine

    torch.manual_seed(1)
    bn = torch.nn.BatchNorm2d(3).double().eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    reference = bn(x)
    with EvalBatchNormAsAffine():
        affine = bn(x)
        bn.train()
        batch_stats = bn(x)  # training mode is left alone
    torch.testing.assert_close(affine, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(batch_stats, torch.nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, True), rtol=1e-12, atol=1e-12)


def test_cached_engine_releases_and_rebuilds(case: dict) -> None:
    op = HessianOperator(case["model"], case["data"], engine="cached")
    v = torch.ones(op.size, dtype=torch.float64)
    first = op.matvec(v)
    op.release()
    torch.testing.assert_close(op.matvec(v), first, rtol=0, atol=0)


def test_bad_input_raises_clear_value_errors(case: dict) -> None:
    model, data = case["model"], case["data"]
    n = case["h"].shape[0]
    with pytest.raises(ValueError, match=rf"k: expected at most the number of parameters \({n}\), got {n + 1}"):
        top_eigenvalues(model, data, k=n + 1)
    with pytest.raises(ValueError, match="k: expected an integer > 0, got 0"):
        top_eigenvalues(model, data, k=0)
    with pytest.raises(ValueError, match="data: expected a non-empty dataset"):
        top_eigenvalues(model, [], k=2)
    with pytest.raises(ValueError, match="data: expected a non-empty dataset"):
        hvp(model, [(torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.long))], torch.ones(n, dtype=torch.float64))
    with pytest.raises(ValueError, match="tol: expected a finite number > 0, got 0"):
        top_eigenvalues(model, data, k=2, tol=0)
    with pytest.raises(ValueError, match="method: expected one of 'lanczos', 'power', got 'arnoldi'"):
        top_eigenvalues(model, data, k=2, method="arnoldi")
    with pytest.raises(ValueError, match="engine: expected one of"):
        HessianOperator(model, data, engine="reverse")
    with pytest.raises(ValueError, match="n_probes: expected an integer > 0, got 0"):
        trace(model, data, n_probes=0, seed=0)
    with pytest.raises(ValueError, match="n_probes: expected at least 3 for hutch\\+\\+, got 2"):
        trace(model, data, n_probes=2, seed=0, method="hutch++")
    with pytest.raises(ValueError, match=rf"vectors: expected an \(m, {n}\) tensor, got \(2, 3\)"):
        HessianOperator(model, data).matmat(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="max_iter: expected at least k = 5 Lanczos steps, got 3"):
        top_eigenvalues(model, data, k=5, max_iter=3)
    with pytest.raises(ValueError, match="sigma: expected a finite number > 0"):
        spectral_density(model, data, n_runs=1, n_steps=3, sigma=-1.0)
    assert math.isnan(trace(model, data, n_probes=1, seed=0).stderr)


def test_power_iteration_defaults_reach_tol_with_negative_eigenvalues(case: dict) -> None:
    ev = case["ev"]
    k = int(np.argmax(ev < abs(ev[-1]))) + 1  # the values past here need the shifted operator
    assert k == 6
    res = top_eigenvalues(case["model"], case["data"], k=k, method="power")  # default tol, max_iter, engine
    assert res.converged.all()
    np.testing.assert_allclose(res.values, ev[:k], rtol=1e-2)


def test_lanczos_misses_a_repeated_top_eigenvalue_unless_confirming() -> None:
    spectrum = [4.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5] + [0.1] * 20 + [-1.0]
    op = DenseOperator(symmetric_with_spectrum(spectrum, seed=3))
    plain = lanczos_eigenvalues(op, 3, tol=1e-8)
    np.testing.assert_allclose(plain.values, [4.0, 3.0, 2.0], rtol=1e-6)  # the documented single-vector limit
    assert plain.converged.all()
    checked = lanczos_eigenvalues(op, 3, tol=1e-8, confirm=True, return_vectors=True)
    np.testing.assert_allclose(checked.values, [4.0, 4.0, 3.0], rtol=1e-6)
    assert checked.converged.all() and checked.n_hvp > plain.n_hvp
    vec = checked.vectors.to(torch.float64)
    torch.testing.assert_close(vec @ vec.T, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(vec @ op.matrix, torch.as_tensor(checked.values)[:, None] * vec, atol=1e-6, rtol=0)
    # A triple top value needs two insertions.
    triple = DenseOperator(symmetric_with_spectrum([5.0, 5.0, 5.0, 1.0, 0.5, 0.2, -0.3] + [0.0] * 10, seed=4))
    np.testing.assert_allclose(lanczos_eigenvalues(triple, 4, tol=1e-8, confirm=True).values, [5.0, 5.0, 5.0, 1.0], rtol=1e-6)


def test_confirmation_keeps_distinct_values_and_reports_its_cost(case: dict) -> None:
    op = HessianOperator(case["model"], case["data"], engine="cached")
    plain = lanczos_eigenvalues(op, 5)
    checked = lanczos_eigenvalues(op, 5, confirm=True)
    np.testing.assert_allclose(checked.values, case["ev"][:5], rtol=1e-4)
    np.testing.assert_array_equal(checked.values, plain.values)
    assert plain.n_hvp < checked.n_hvp <= 3 * plain.n_hvp and checked.converged.all()


def test_density_weights_on_a_spread_indefinite_spectrum() -> None:
    gen = torch.Generator().manual_seed(7)
    bulk = -1.0 + 4.0 * torch.rand(950, generator=gen, dtype=torch.float64)  # indefinite bulk in [-1, 3]
    spectrum = torch.cat([bulk, torch.linspace(5.0, 40.0, 50, dtype=torch.float64)]).tolist()  # and outliers
    op = DenseOperator(symmetric_with_spectrum(spectrum, seed=4))
    true_mean = sum(spectrum) / len(spectrum)
    dens = slq_density(op, n_runs=200, n_steps=20, seed=0)
    assert dens.integral() == pytest.approx(1.0, abs=1e-9)
    assert dens.mean() == pytest.approx(true_mean, rel=0.05)  # seed-to-seed spread about 0.7 %
    # The test can tell quadrature weights apart: uniform weights over the nodes are off by several times.
    nodes = dens.nodes[np.isfinite(dens.nodes)]
    assert abs(nodes.mean() - true_mean) > 1.0 * abs(true_mean)
    assert np.nanmin(dens.nodes) < 0 < true_mean


def test_model_density_mean_matches_the_exact_trace_over_n(case: dict) -> None:
    # 4096 runs: one z^T H z / n of this Hessian has a relative spread of 0.69 (its trace is small beside its
    # Frobenius norm), so 4096 runs give ~1.1 % and 5 % is over four standard errors. The dense Hessian serves
    # as the operator (the model operator's density equals its Hutchinson estimate, tested above).
    h = case["h"]
    n = h.shape[0]
    dens = slq_density(DenseOperator(h), n_runs=4096, n_steps=5, seed=0)
    assert dens.mean() == pytest.approx(float(torch.trace(h)) / n, rel=0.05)


def test_bn_model_at_given_params_never_uses_the_stored_statistics() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, in_shape=(3, 4, 4), channels=2, batchnorm=True).double()
    for m in model.modules():  # stored statistics that belong to no point of interest
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(0.5)
            m.running_var.fill_(3.0)
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(12, 3, 4, 4, generator=gen, dtype=torch.float64)
    data = [(x[:8], torch.randint(0, 3, (8,), generator=gen)), (x[8:], torch.randint(0, 3, (4,), generator=gen))]
    other = [(torch.randn(10, 3, 4, 4, generator=gen, dtype=torch.float64), torch.zeros(10, dtype=torch.long))]
    point = {n: p + 0.1 for n, p in get_params(model).items()}
    on_data = recompute_bn_stats(model, point, data)
    on_other = recompute_bn_stats(model, point, other)
    v = torch.randn(2, sum(p.numel() for p in point.values()), generator=gen, dtype=torch.float64)

    op = HessianOperator(model, data, params=point)
    assert op.bn_source == "recomputed"
    torch.testing.assert_close(op.matmat(v), v @ dense_hessian(model, data, params=point, buffers=on_data), rtol=1e-9, atol=1e-12)
    stored = v @ dense_hessian(model, data, params=point)
    assert not torch.allclose(op.matmat(v), stored, rtol=1e-3)
    torch.testing.assert_close(hvp(model, data, v, params=point, bn_batches=other), hvp(model, data, v, params=point, buffers=on_other))
    res = top_eigenvalues(model, data, k=2, params=point, tol=1e-6)
    np.testing.assert_array_equal(res.values, top_eigenvalues(model, data, k=2, params=point, buffers=on_data, tol=1e-6).values)
    assert trace(model, data, n_probes=4, params=point, bn_batches=other).mean == pytest.approx(
        trace(model, data, n_probes=4, params=point, buffers=on_other).mean, rel=1e-10)
    dens = spectral_density(model, data, n_runs=2, n_steps=4, params=point)
    assert dens.mean() == pytest.approx(spectral_density(model, data, n_runs=2, n_steps=4, params=point, buffers=on_data).mean(), rel=1e-10)
    # Given buffers are used as they are; without params the model's own point keeps its own statistics.
    assert HessianOperator(model, data, params=point, buffers=on_other).bn_source == "given"
    assert HessianOperator(model, data).bn_source == "model"
    assert HessianOperator(tiny_mlp(0), tiny_data(8), params=get_params(tiny_mlp(0))).bn_source is None


def test_hessian_functions_accept_a_dataset() -> None:
    from lgeom.data import build_dataset, make_loader

    ds = build_dataset("moons", "test", n_train=64, n_test=700, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=2, in_shape=(2,), depth=1, width=6).double()
    batches = [(x.double(), y) for x, y in make_loader(ds, 100)]
    v = torch.ones(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    torch.testing.assert_close(hvp(model, ds, v), hvp(model, batches, v))
    np.testing.assert_allclose(top_eigenvalues(model, ds, k=2, tol=1e-8).values, top_eigenvalues(model, batches, k=2, tol=1e-8).values,
                               rtol=1e-8)
    assert trace(model, ds, n_probes=3, seed=1).mean == pytest.approx(trace(model, batches, n_probes=3, seed=1).mean, rel=1e-10)
    assert spectral_density(model, ds, n_runs=1, n_steps=3).mean() == pytest.approx(
        spectral_density(model, batches, n_runs=1, n_steps=3).mean(), rel=1e-8)
