"""Filter-normalised 1-D/2-D slices (:mod:`lgeom.surfaces.slices`), against direct evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgeom.batchnorm import recompute_bn_stats
from lgeom.data import build_dataset
from lgeom.evaluate import evaluate
from lgeom.models import build_model
from lgeom.params import dot, flatten, get_params
from lgeom.surfaces import pca_plane, slice_1d, slice_2d
from tests.lgeom.cases import image_data, tiny_data, tiny_mlp


def shifted(params: dict, *terms: tuple[float, dict]) -> dict:
    return {n: p + sum(c * d[n] for c, d in terms) for n, p in params.items()}


def test_slice_1d_matches_direct_evaluation() -> None:
    model, data = tiny_mlp(0), tiny_data(40)
    params = get_params(model)
    res = slice_1d(model, data, seed=3)
    assert res.ndim == 1 and len(res.alphas) == 51 and res.alphas[0] == -1.0 and res.alphas[-1] == 1.0
    assert res.center_loss == pytest.approx(evaluate(model, data).loss, rel=1e-12)
    d = res.directions[0]
    for i in (0, 7, 40):
        direct = evaluate(model, data, params=shifted(params, (float(res.alphas[i]), d)))
        assert res.loss[i] == pytest.approx(direct.loss, rel=1e-10)
        assert res.acc[i] == pytest.approx(direct.acc)
    # Filter-normalised: every output filter of a weight has its weight filter's norm; biases are left out.
    for name, p in params.items():
        if p.dim() > 1:
            torch.testing.assert_close(d[name].norm(dim=1), p.norm(dim=1))
        else:
            assert float(d[name].abs().max()) == 0.0
    given = slice_1d(model, data, direction=d, n_points=5, span=(-2.0, 2.0))
    assert given.loss[0] == pytest.approx(evaluate(model, data, params=shifted(params, (-2.0, d))).loss, rel=1e-10)


def test_slice_2d_grid_with_orthogonal_directions() -> None:
    model, data = tiny_mlp(1), tiny_data(40)
    params = get_params(model)
    res = slice_2d(model, data, n_points=7, seed=2)
    assert res.loss.shape == (7, 7) and res.acc.shape == (7, 7) and res.ndim == 2
    d1, d2 = res.directions
    assert abs(float(dot(d1, d2))) <= 1e-10 * float(dot(d1, d1))
    for i, j in ((0, 6), (3, 3), (5, 1)):
        direct = evaluate(model, data, params=shifted(params, (float(res.alphas[i]), d1), (float(res.betas[j]), d2)))
        assert res.loss[i, j] == pytest.approx(direct.loss, rel=1e-10)
    assert res.center_loss == pytest.approx(evaluate(model, data).loss, rel=1e-12)


def test_slices_of_a_bn_model_recompute_statistics_and_repeat() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, in_shape=(3, 8, 8), channels=3, batchnorm=True).double()
    data = image_data(12, dtype=torch.float64)
    bn = image_data(16, batch=8, dtype=torch.float64, seed=5)  # equal sizes: see the ragged case below
    with pytest.raises(ValueError, match="bn_batches: expected training batches"):
        slice_1d(model, data, n_points=3)
    res = slice_1d(model, data, n_points=5, bn_batches=bn, seed=1)
    params = get_params(model)
    p = shifted(params, (float(res.alphas[1]), res.directions[0]))
    direct = evaluate(model, data, params=p, buffers=recompute_bn_stats(model, p, bn))
    assert res.loss[1] == pytest.approx(direct.loss, rel=1e-9)
    again = slice_1d(model, data, n_points=5, bn_batches=bn, seed=1)
    np.testing.assert_array_equal(res.loss, again.loss)


def test_slice_points_weight_ragged_bn_batches_by_size() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, in_shape=(3, 8, 8), channels=3, batchnorm=True).double()
    data = image_data(12, dtype=torch.float64)  # batches of 8 and 4
    res = slice_1d(model, data, n_points=3, bn_batches=data, seed=1)
    p = shifted(get_params(model), (float(res.alphas[0]), res.directions[0]))
    direct = evaluate(model, data, params=p, buffers=recompute_bn_stats(model, p, data))
    assert res.loss[0] == pytest.approx(direct.loss, rel=1e-9)


def test_slices_and_pca_plane_accept_datasets() -> None:
    ds = build_dataset("moons", "train", n_train=96, n_test=8, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=2, in_shape=(2,), depth=1, width=8)
    batches = [(ds.inputs, ds.targets)]
    np.testing.assert_allclose(
        slice_1d(model, ds, n_points=3).loss, slice_1d(model, batches, n_points=3).loss, rtol=1e-6
    )
    np.testing.assert_allclose(
        slice_2d(model, ds, n_points=2).loss, slice_2d(model, batches, n_points=2).loss, rtol=1e-6
    )
    w = flatten(get_params(model))
    gen = torch.Generator().manual_seed(1)
    snaps = [w + 0.1 * torch.randn(w.shape, generator=gen) for _ in range(3)] + [w]
    np.testing.assert_allclose(
        pca_plane(model, snaps, ds, n_points=2).loss, pca_plane(model, snaps, batches, n_points=2).loss, rtol=1e-6
    )


def test_slice_input_errors() -> None:
    model, data = tiny_mlp(0), tiny_data(20)
    with pytest.raises(ValueError, match="n_points: expected an integer > 0, got 0"):
        slice_1d(model, data, n_points=0)
    with pytest.raises(ValueError, match="span: expected \\(low, high\\) with low < high"):
        slice_1d(model, data, span=(1.0, -1.0))
    with pytest.raises(ValueError, match="direction: expected a parameter dict shaped like the model"):
        slice_1d(model, data, direction={"head.weight": torch.zeros(2)})


def test_a_slice_shows_its_progress_as_lines_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    model, data = tiny_mlp(0), tiny_data(40)
    quiet = slice_1d(model, data, seed=3)
    shown = slice_1d(model, data, seed=3, progress=True)  # stderr is captured here, no terminal: lines
    np.testing.assert_array_equal(shown.loss, quiet.loss)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "slice_1d: started (51 steps)" and lines[-1].startswith("slice_1d: 100% (51/51, ")
    assert len(lines) > 2  # steps of the evaluation in between, not only the start and the end
