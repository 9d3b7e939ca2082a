"""The PCA plane of a training trajectory (:mod:`lgeom.surfaces.pca`), against an SVD and direct evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgeom.data import build_dataset
from lgeom.evaluate import evaluate
from lgeom.models import build_model
from lgeom.params import flatten, get_params, unflatten
from lgeom.surfaces import pca_plane
from lgeom.surfaces.pca import pca_directions
from lgeom.train import TrainSpec, train
from tests.lgeom.cases import tiny_data, tiny_mlp


def test_pca_plane_of_a_planar_trajectory_is_exact() -> None:
    model, data = tiny_mlp(2), tiny_data(40)
    final = flatten(get_params(model))
    gen = torch.Generator().manual_seed(5)
    u, v = (
        torch.randn(final.numel(), generator=gen, dtype=torch.float64),
        torch.randn(final.numel(), generator=gen, dtype=torch.float64),
    )
    coefs = [(2.0, 1.5), (1.5, -0.5), (1.0, 0.7), (0.4, -0.2), (0.1, 0.1), (0.0, 0.0)]
    snaps = [final + 0.05 * (a * u + b * v) for a, b in coefs]
    res = pca_plane(model, snaps, data, n_points=5, steps=range(0, 60, 10))
    assert res.loss.shape == (5, 5) and res.steps.tolist() == list(range(0, 60, 10))
    np.testing.assert_allclose(res.residuals, 0.0, atol=1e-10)
    assert float(res.explained_variance_ratio.sum()) == pytest.approx(1.0, abs=1e-10)
    # Dense reference: PCA of the centred differences by SVD.
    d = torch.stack(snaps) - final
    s = torch.linalg.svdvals(d - d.mean(0))
    np.testing.assert_allclose(res.explained_variance_ratio, (s[:2] ** 2 / (s**2).sum()).numpy(), rtol=1e-8)
    np.testing.assert_allclose(res.coords[-1], 0.0, atol=1e-12)
    # Coordinates reconstruct the snapshots; the projections are the snapshots, so the losses agree.
    recon = final + torch.as_tensor(res.coords) @ res.components
    torch.testing.assert_close(recon, torch.stack(snaps), rtol=0, atol=1e-10)
    for i in (0, 3):
        assert res.snapshot_loss[i] == pytest.approx(
            evaluate(model, data, params=unflatten(snaps[i], get_params(model))).loss, rel=1e-10
        )
    np.testing.assert_allclose(res.projected_loss, res.snapshot_loss, rtol=1e-9)
    assert res.xs[0] < res.coords[:, 0].min() and res.xs[-1] > res.coords[:, 0].max()


def test_pca_plane_of_a_real_trajectory() -> None:
    ds = build_dataset("moons", "train", n_train=96, n_test=8, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=2, in_shape=(2,), depth=1, width=8)
    result = train(
        model, ds, spec=TrainSpec(epochs=3, batch_size=16, lr=0.1, snapshot_every=3, device="cpu"), progress=False
    )
    data = [(ds.inputs[:48], ds.targets[:48]), (ds.inputs[48:], ds.targets[48:])]
    res = pca_plane(model, result.snapshots, data, final=result.final_params, steps=result.snapshot_steps, n_points=4)
    assert len(res.coords) == len(result.snapshots) >= 3
    assert np.all(res.residuals >= 0) and np.all(res.relative_residuals <= 1 + 1e-9)
    assert 0 < res.explained_variance_ratio[1] <= res.explained_variance_ratio[0] < 1
    assert res.snapshot_loss[-1] == pytest.approx(evaluate(model, data, params=result.final_params).loss, rel=1e-5)
    assert res.snapshot_loss[0] > res.snapshot_loss[-1]  # training lowered the loss


def test_pca_input_errors() -> None:
    model, data = tiny_mlp(0), tiny_data(20)
    w = flatten(get_params(model))
    with pytest.raises(ValueError, match="snapshots: expected at least 3 trajectory snapshots"):
        pca_plane(model, [w, w + 1], data)
    with pytest.raises(ValueError, match="snapshots: expected flat vectors of the model's"):
        pca_plane(model, [torch.zeros(3)] * 4, data)
    with pytest.raises(ValueError, match="snapshots: expected a trajectory spanning at least two directions"):
        pca_directions([w, w + 1, w + 2, w + 3])
