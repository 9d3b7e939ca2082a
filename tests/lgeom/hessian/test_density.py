"""Spectral density by stochastic Lanczos quadrature against the eigenvalues (:mod:`lgeom.hessian.density`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgeom.hessian import slq_density, spectral_density, trace
from lgeom.hessian.trace import hutchinson_trace
from lgeom.reference import DenseOperator, symmetric_with_spectrum
from tests.lgeom.cases import CASES, get_case


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


@pytest.mark.parametrize("name", CASES)
def test_density_moments_match_the_eigenvalues_on_every_case(name: str) -> None:
    c = get_case(name)
    ev = c.eigenvalues()
    op = c.operator()
    dens = slq_density(op, n_runs=8, n_steps=min(c.size, 30), seed=0)
    assert dens.integral() == pytest.approx(1.0, abs=1e-9)
    # Its mean is the Hutchinson estimate of tr(H) / P on the same 8 Rademacher vectors: within 4 standard
    # deviations of that estimator (from the dense Hessian) of the mean eigenvalue.
    assert abs(dens.mean() - ev.mean()) <= 4 * c.hutchinson_sd(8) / c.size
    assert dens.mean() == pytest.approx(hutchinson_trace(op, 8, seed=0).mean / c.size, rel=1e-6, abs=1e-12)
    # Ritz values lie inside the spectrum's hull.
    nodes = dens.nodes[np.isfinite(dens.nodes)]
    scale = max(abs(ev[0]), abs(ev[-1]))
    assert nodes.min() >= ev[-1] - 1e-8 * scale and nodes.max() <= ev[0] + 1e-8 * scale
