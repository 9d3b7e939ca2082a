"""``connect_pair``: every zoo model trains, connects, aligns and is probed end to end on tiny data; bad input
(mismatched endpoints, empty data, missing BN statistics, bad specs) is refused.
"""

from __future__ import annotations

import math

import pytest
import torch

from lgeom.connect import ConnectSpec, connect_pair
from lgeom.curves import CurveFitSpec
from lgeom.data import ArrayDataset, fixed_batches
from lgeom.hessian import top_eigenvalues
from lgeom.models import build_model
from lgeom.params import get_params
from lgeom.train import TrainSpec, train

CIFAR = (3, 32, 32)
TINY = [
    ("vgg16", {"width": 2}),
    ("vgg16", {"width": 2, "batchnorm": True}),
    ("wideresnet", {"depth": 10, "widen_factor": 1}),
    ("preresnet", {"depth": 8, "block": "basic"}),
]


def _random_cifar(n: int, seed: int) -> ArrayDataset:
    gen = torch.Generator().manual_seed(seed)
    return ArrayDataset(torch.randn(n, *CIFAR, generator=gen), torch.randint(0, 10, (n,), generator=gen), 10, "noise")


@pytest.mark.parametrize(("arch", "kw"), TINY, ids=lambda v: str(v))
def test_zoo_model_trains_connects_aligns_and_probes(arch: str, kw: dict) -> None:
    train_set, test_set = _random_cifar(16, seed=0), _random_cifar(8, seed=1)
    ends = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model(arch, num_classes=10, in_shape=CIFAR, **kw)
        res = train(model, train_set, None, TrainSpec(epochs=2, batch_size=8, lr=0.05, seed=seed), progress=False)
        assert math.isfinite(res.final["train"].loss)
        ends.append(res)
    a, b = ends
    spec = ConnectSpec(
        kinds=("bezier",),
        points=3,
        align=True,
        bn_batches=1,
        bn_batch_size=8,
        plane=False,
        fit=CurveFitSpec(epochs=1, batch_size=8, seed=0),
        eval_batch_size=16,
    )
    out = connect_pair(
        model,
        a.final_params,
        b.final_params,
        a_buffers=a.final_buffers,
        b_buffers=b.final_buffers,
        train=train_set,
        test=test_set,
        spec=spec,
        progress=False,
    )
    assert set(out.paths) == {"linear", "bezier", "linear_aligned", "bezier_aligned"}
    metrics = out.metrics()
    for key in (
        "barrier/linear/test/loss",
        "barrier/bezier_aligned/test/loss",
        "triangle/bezier/dist_ac",
        "align/similarity_after",
    ):
        assert math.isfinite(metrics[key]), key
    assert out.alignment is not None and out.alignment.similarity_after >= out.alignment.similarity_before
    assert any(not torch.equal(p, torch.arange(len(p))) for p in out.alignment.perms.values())
    batches = fixed_batches(train_set, 8, n_batches=1, seed=0)
    eig = top_eigenvalues(model, batches, k=1, params=a.final_params, buffers=a.final_buffers, max_iter=8)
    assert len(eig.values) == 1 and math.isfinite(float(eig.values[0]))


@pytest.mark.parametrize("with_plane", [True, False])
def test_every_path_times_the_parts_it_ran(with_plane: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    data = ArrayDataset(torch.randn(32, 2, generator=gen), torch.randint(0, 2, (32,), generator=gen), 2, "noise")
    model = build_model("mlp", num_classes=2, in_shape=(2,), depth=1, width=8)
    torch.manual_seed(1)
    other = get_params(build_model("mlp", num_classes=2, in_shape=(2,), depth=1, width=8))
    spec = ConnectSpec(
        kinds=("bezier",), points=3, plane=with_plane, plane_grid=2, fit=CurveFitSpec(epochs=1, batch_size=16, seed=0)
    )
    out = connect_pair(model, get_params(model), other, train=data, test=data, spec=spec, progress=False)
    assert set(out.paths["linear"].timings) == {"evaluate"}  # nothing fitted, no plane through a line
    bezier = out.paths["bezier"].timings
    assert set(bezier) == ({"fit", "evaluate", "plane"} if with_plane else {"fit", "evaluate"})
    assert all(v > 0 for p in out.paths.values() for v in p.timings.values())
    assert bezier["fit"] >= out.paths["bezier"].fit.wall_time_s  # the fit's own clock runs inside ours
    total = out.seconds()
    assert total["evaluate"] == pytest.approx(out.paths["linear"].timings["evaluate"] + bezier["evaluate"])
    assert total["plane"] == bezier.get("plane", 0.0) and total["fit"] == bezier["fit"]


def test_connect_pair_rejects_bad_input() -> None:
    data = ArrayDataset(torch.randn(8, 2), torch.randint(0, 2, (8,)), 2)
    empty = ArrayDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 2)
    model = build_model("mlp", num_classes=2, in_shape=(2,), width=8)
    a = get_params(model)
    wider = get_params(build_model("mlp", num_classes=2, in_shape=(2,), width=9))
    with pytest.raises(ValueError, match=r"parameter 'hidden.0.weight': expected shape \(8, 2\)"):
        connect_pair(model, a, wider, train=data, test=data, progress=False)
    with pytest.raises(ValueError, match="test data: expected a non-empty dataset"):
        connect_pair(model, a, a, train=data, test=empty, progress=False)
    bn = build_model("cnn", num_classes=2, in_shape=(1, 4, 4), channels=2, batchnorm=True)
    with pytest.raises(ValueError, match="a_buffers/b_buffers: expected the endpoints' BatchNorm running statistics"):
        connect_pair(bn, get_params(bn), get_params(bn), train=data, test=data, progress=False)
    with pytest.raises(
        ValueError, match=r"invalid ConnectSpec: kinds: expected distinct names.*points: expected an integer >= 2"
    ):
        ConnectSpec(kinds=("bezier", "spline"), points=1)
