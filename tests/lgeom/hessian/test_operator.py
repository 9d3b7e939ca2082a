"""The Hessian operator and its product engines against dense references (:mod:`lgeom.hessian.operator`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lgeom.batchnorm import recompute_bn_stats
from lgeom.hessian import HessianOperator, hvp, spectral_density, top_eigenvalues, trace
from lgeom.models import build_model
from lgeom.params import get_params
from lgeom.reference import dense_eigenvalues, dense_hessian
from tests.lgeom.cases import CASES, get_case, one_batch, tiny_data, tiny_mlp

D = torch.float64


@pytest.mark.parametrize("engine", ["forward", "cached", "stream"])
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
    torch.testing.assert_close(
        torch.cat([t.reshape(-1) for t in as_dict.values()]), h @ torch.ones(h.shape[0], dtype=torch.float64)
    )


def test_ragged_last_batch_does_not_bias_the_hessian(case: dict) -> None:
    model, data = case["model"], case["data"]
    assert [len(y) for _, y in data] == [16, 16, 8]
    v = torch.randn(3, case["h"].shape[0], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(hvp(model, data, v), hvp(model, one_batch(data), v), rtol=1e-12, atol=1e-14)
    t_ragged = trace(model, data, n_probes=8, seed=1)
    t_whole = trace(model, one_batch(data), n_probes=8, seed=1)
    assert t_ragged.mean == pytest.approx(t_whole.mean, rel=1e-12)


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


def test_auto_engine_caches_when_the_graphs_fit() -> None:
    # lgeom's plain MLP gets the "rop" engine (tests/lgeom/hessian/test_rop.py); any other model a graph engine.
    c = get_case("vit")
    assert HessianOperator(c.model, c.data, params=c.params, engine="auto").engine == "cached"
    small = HessianOperator(c.model, c.data, params=c.params, engine="auto", memory_budget=1)
    assert small.engine == "stream"
    v = torch.ones(small.size, dtype=torch.float64)
    torch.testing.assert_close(small.matvec(v), c.hessian() @ v, rtol=1e-10, atol=1e-12)


def test_cached_engine_releases_and_rebuilds(case: dict) -> None:
    op = HessianOperator(case["model"], case["data"], engine="cached")
    v = torch.ones(op.size, dtype=torch.float64)
    first = op.matvec(v)
    op.release()
    torch.testing.assert_close(op.matvec(v), first, rtol=0, atol=0)


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
    torch.testing.assert_close(
        op.matmat(v), v @ dense_hessian(model, data, params=point, buffers=on_data), rtol=1e-9, atol=1e-12
    )
    stored = v @ dense_hessian(model, data, params=point)
    assert not torch.allclose(op.matmat(v), stored, rtol=1e-3)
    torch.testing.assert_close(
        hvp(model, data, v, params=point, bn_batches=other), hvp(model, data, v, params=point, buffers=on_other)
    )
    res = top_eigenvalues(model, data, k=2, params=point, tol=1e-6)
    np.testing.assert_array_equal(
        res.values, top_eigenvalues(model, data, k=2, params=point, buffers=on_data, tol=1e-6).values
    )
    assert trace(model, data, n_probes=4, params=point, bn_batches=other).mean == pytest.approx(
        trace(model, data, n_probes=4, params=point, buffers=on_other).mean, rel=1e-10
    )
    dens = spectral_density(model, data, n_runs=2, n_steps=4, params=point)
    assert dens.mean() == pytest.approx(
        spectral_density(model, data, n_runs=2, n_steps=4, params=point, buffers=on_data).mean(), rel=1e-10
    )
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
    np.testing.assert_allclose(
        top_eigenvalues(model, ds, k=2, tol=1e-8).values,
        top_eigenvalues(model, batches, k=2, tol=1e-8).values,
        rtol=1e-8,
    )
    assert trace(model, ds, n_probes=3, seed=1).mean == pytest.approx(
        trace(model, batches, n_probes=3, seed=1).mean, rel=1e-10
    )
    assert spectral_density(model, ds, n_runs=1, n_steps=3).mean() == pytest.approx(
        spectral_density(model, batches, n_runs=1, n_steps=3).mean(), rel=1e-8
    )


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
        hvp(
            model,
            [(torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.long))],
            torch.ones(n, dtype=torch.float64),
        )
    with pytest.raises(ValueError, match="tol: expected a finite number > 0, got 0"):
        top_eigenvalues(model, data, k=2, tol=0)
    with pytest.raises(ValueError, match="method: expected one of 'block_lanczos', 'lanczos', 'power', got 'arnoldi'"):
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


@pytest.mark.parametrize("engine", ["forward", "cached", "stream"])
@pytest.mark.parametrize("name", CASES)
def test_hvp_matches_the_dense_reference_on_every_case(name: str, engine: str) -> None:
    c = get_case(name)
    op = c.operator(engine)
    assert op.bn_source == (None if c.bn_batches is None else "recomputed")
    v = torch.randn(3, c.size, generator=torch.Generator().manual_seed(11), dtype=D)
    # float64 throughout: only rounding separates the two (eval BatchNorm as its affine map vs as itself).
    torch.testing.assert_close(op.matmat(v), v @ c.hessian(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", CASES)
def test_operator_loss_is_the_reference_loss(name: str) -> None:
    c = get_case(name)
    assert c.operator("forward").objective.loss() == pytest.approx(c.loss(), rel=1e-12)


@pytest.mark.parametrize("engine", ["cached", "stream"])
@pytest.mark.parametrize("name", CASES)
def test_merged_chunks_give_the_per_batch_sums(name: str, engine: str) -> None:
    # Every case's data is ragged (16, 16, 8 or 6, 4); BN cases run in eval mode with recomputed statistics,
    # so a sample's loss does not depend on the batch it is in and merging is exact up to rounding.
    c = get_case(name)
    merged = c.operator(engine)
    per_batch = HessianOperator(c.model, c.data, params=c.params, bn_batches=c.bn_batches, engine=engine, merge_bytes=1)
    sizes = [len(y) for _, y in c.data]
    assert merged.chunk_sizes == [sum(sizes)] and per_batch.chunk_sizes == sizes
    v = torch.randn(4, c.size, generator=torch.Generator().manual_seed(12), dtype=D)
    torch.testing.assert_close(merged.matmat(v), per_batch.matmat(v), rtol=1e-12, atol=1e-14)
    forward = c.operator("forward").matmat(v)  # the graph-free engine: no cached graph involved
    torch.testing.assert_close(merged.matmat(v), forward, rtol=1e-10, atol=1e-12)


def test_chunks_stop_at_the_byte_budget_and_at_a_change_of_input_shape() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(3, 3),
    ).double()
    gen = torch.Generator().manual_seed(4)
    data = [
        (torch.randn(n, 2, s, s, generator=gen, dtype=D), torch.randint(0, 3, (n,), generator=gen))
        for n, s in [(5, 4), (5, 4), (3, 4), (4, 6), (2, 6)]
    ]
    op = HessianOperator(model, data, engine="cached")
    assert op.chunk_sizes == [13, 6]  # 4x4 images merged, then the 6x6 ones
    v = torch.randn(3, op.size, generator=gen, dtype=D)
    torch.testing.assert_close(op.matmat(v), v @ dense_hessian(model, data), rtol=1e-10, atol=1e-12)
    # A budget of about two batches' graphs: chunks of at most 10 samples.
    per_sample = HessianOperator(model, data, engine="cached", merge_bytes=1)._graph_bytes_per_sample()
    capped = HessianOperator(model, data, engine="stream", merge_bytes=int(10.5 * per_sample))
    assert capped.chunk_sizes == [10, 3, 6]
    torch.testing.assert_close(capped.matmat(v), op.matmat(v), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("engine", ["cached", "stream"])
def test_batches_above_the_split_budget_are_cut_into_equal_slices(engine: str) -> None:
    # A batch of 100 and one of 70 images; the split budget holds about 40 samples' graphs: as few slices as
    # fit, of sizes differing by at most one (100 -> 34 + 33 + 33, 70 -> 35 + 35), and no merging here.
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 16, 3),
    ).double()
    gen = torch.Generator().manual_seed(5)
    data = [
        (torch.randn(n, 2, 4, 4, generator=gen, dtype=D), torch.randint(0, 3, (n,), generator=gen)) for n in (100, 70)
    ]
    whole = HessianOperator(model, data, engine=engine, merge_bytes=1, split_bytes=2**40)
    per_sample = whole._graph_bytes_per_sample()
    split = HessianOperator(model, data, engine=engine, merge_bytes=1, split_bytes=int(40.5 * per_sample))
    assert whole.chunk_sizes == [100, 70]
    assert split.chunk_sizes == [34, 33, 33, 35, 35]
    v = torch.randn(3, split.size, generator=gen, dtype=D)
    torch.testing.assert_close(split.matmat(v), whole.matmat(v), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(split.matmat(v), v @ dense_hessian(model, data), rtol=1e-10, atol=1e-12)
    # Never below 32 samples a slice, however small the budget; merged again up to merge_bytes.
    tiny = HessianOperator(model, data, engine=engine, merge_bytes=1, split_bytes=1)
    assert tiny.chunk_sizes == [34, 33, 33, 35, 35]
    remerged = HessianOperator(model, data, engine=engine, merge_bytes=int(69.5 * per_sample), split_bytes=1)
    assert remerged.chunk_sizes == [67, 68, 35]


def test_the_cpu_default_keeps_a_chunk_about_cache_sized() -> None:
    # 16 MiB of graph on the CPU: an MLP's batches are merged whole, the MNIST CNN's 256-image batches cut into
    # slices of at least 32 samples whose graphs fit the budget.
    gen = torch.Generator().manual_seed(6)
    mlp = build_model("mlp", num_classes=2, in_shape=(2,), depth=2, width=16)
    small = [(torch.randn(200, 2, generator=gen), torch.randint(0, 2, (200,), generator=gen)) for _ in range(3)]
    assert HessianOperator(mlp, small, engine="cached").chunk_sizes == [600]
    cnn = build_model("cnn", num_classes=10, in_shape=(1, 28, 28), channels=16)
    images = [(torch.randn(256, 1, 28, 28, generator=gen), torch.randint(0, 10, (256,), generator=gen))]
    op = HessianOperator(cnn, images, engine="cached")
    per_sample = op._graph_bytes_per_sample()
    assert len(op.chunk_sizes) > 1 and sum(op.chunk_sizes) == 256
    assert all(n >= 32 and n * per_sample <= 16 * 2**20 for n in op.chunk_sizes)


def test_bad_split_bytes_is_refused(case: dict) -> None:
    with pytest.raises(ValueError, match="split_bytes: expected an integer > 0, got -1"):
        HessianOperator(case["model"], case["data"], split_bytes=-1)


@pytest.mark.parametrize("engine", ["cached", "stream"])
def test_batched_vectors_equal_one_at_a_time(case: dict, engine: str) -> None:
    looped = HessianOperator(case["model"], case["data"], engine=engine)
    batched = HessianOperator(case["model"], case["data"], engine=engine, batch_vectors=True)
    v = torch.randn(5, looped.size, generator=torch.Generator().manual_seed(13), dtype=D)
    torch.testing.assert_close(batched.matmat(v), looped.matmat(v), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(batched.matmat(v), v @ case["h"], rtol=1e-10, atol=1e-12)
    assert batched.n_products == 10


def test_stream_engine_keeps_no_graph_between_passes(case: dict) -> None:
    op = HessianOperator(case["model"], case["data"], engine="stream")
    v = torch.randn(2, op.size, generator=torch.Generator().manual_seed(14), dtype=D)
    first = op.matmat(v)
    assert op._graphs is None
    torch.testing.assert_close(op.matmat(v), first, rtol=0, atol=0)


def test_bad_merge_bytes_is_refused(case: dict) -> None:
    with pytest.raises(ValueError, match="merge_bytes: expected an integer > 0, got 0"):
        HessianOperator(case["model"], case["data"], merge_bytes=0)
