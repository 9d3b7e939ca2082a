"""Loss and accuracy at one parameter point (:mod:`lgeom.evaluate`)."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from lgeom.curves import Line
from lgeom.data import build_dataset, make_loader
from lgeom.evaluate import evaluate, evaluate_point
from lgeom.models import build_model
from lgeom.multipoint import evaluate_path
from lgeom.params import get_params
from tests.lgeom.cases import CASES, get_case, sized_batches


def test_uneven_batches_are_weighted_by_size() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=3, in_shape=(4,), width=5).double()
    batches = sized_batches((4,), [7, 7, 1], seed=1)
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    res = evaluate(model, batches)
    with torch.no_grad():
        logits = model(x)
    assert res.n == 15
    assert res.loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-13)
    assert res.acc == pytest.approx(100.0 * float((logits.argmax(1) == y).double().mean()))
    # float32 inputs are evaluated in the parameters' dtype (float64 checks stay exact)
    res32 = evaluate(model, [(xb.float(), yb) for xb, yb in batches])
    assert res32.loss == pytest.approx(res.loss, rel=1e-6)


def test_evaluate_accepts_a_dataset() -> None:
    ds = build_dataset("moons", "test", n_train=64, n_test=600, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=2, in_shape=(2,), width=8)
    res = evaluate(model, ds)
    ref = evaluate(model, make_loader(ds, 7))
    assert res.n == 600 and res.loss == pytest.approx(ref.loss, rel=1e-6) and res.acc == pytest.approx(ref.acc)
    table = evaluate_path(model, Line(get_params(model), get_params(model)), [0.0, 1.0], train=ds, test=ds)
    assert table["test_loss"][0] == pytest.approx(ref.loss, rel=1e-6) and table["train_acc"][1] == pytest.approx(
        ref.acc
    )
    point = evaluate_point(model, get_params(model), {"test": ds})["test"]
    assert point.loss == pytest.approx(ref.loss, rel=1e-6)
    with pytest.raises(ValueError, match="data: expected a non-empty dataset"):
        evaluate(model, ds.subset(torch.zeros(0, dtype=torch.long)))


@pytest.mark.parametrize("name", CASES)
def test_point_loss_is_the_reference_loss(name: str) -> None:
    c = get_case(name)
    res = evaluate_point(c.model, c.params, {"data": c.data}, bn_batches=c.bn_batches)["data"]
    assert res.loss == pytest.approx(c.loss(), rel=1e-12)
    assert res.n == sum(len(y) for _, y in c.data)


def _recording(layer: torch.nn.Module) -> list[int]:
    """Batch sizes ``layer`` sees (a forward pre-hook)."""
    seen: list[int] = []
    layer.register_forward_pre_hook(lambda _, args: seen.append(int(args[0].shape[0])))
    return seen


@pytest.mark.parametrize("at_point", [False, True])
def test_a_big_cpu_batch_is_evaluated_in_cache_sized_slices(monkeypatch: pytest.MonkeyPatch, at_point: bool) -> None:
    # 4 x the largest layer output (3 x 8 x 8 float64) = 6,144 bytes a sample: a budget of 40 samples cuts a
    # batch of 150 into 4 slices of 38/38/37/37 and leaves one of 20 whole; the sums are unchanged.
    evaluation = importlib.import_module("lgeom.evaluate")
    monkeypatch.setattr(evaluation, "CPU_SLICE_BYTES", 40 * 6144 + 100)
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, in_shape=(2, 8, 8), channels=3).double()
    batches = sized_batches((2, 8, 8), [150, 20], seed=3)
    params = get_params(model) if at_point else None
    assert evaluation.cpu_slices(model, batches[0][0], params) == 4
    assert evaluation.cpu_slices(model, batches[1][0], params) == 1
    seen = _recording(model.conv1)
    sliced = evaluate(model, batches, params=params)
    assert seen[-5:] == [38, 38, 37, 37, 20]
    monkeypatch.setattr(evaluation, "CPU_SLICE_BYTES", 0)
    whole = evaluate(model, batches, params=params)
    assert seen[-2:] == [150, 20]
    assert sliced.n == whole.n == 170
    assert sliced.loss == pytest.approx(whole.loss, rel=1e-13) and sliced.acc == whole.acc


def test_slices_are_never_below_the_minimum_nor_taken_where_the_batch_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    evaluation = importlib.import_module("lgeom.evaluate")
    monkeypatch.setattr(evaluation, "CPU_SLICE_BYTES", 1)  # every batch over budget
    mlp = build_model("mlp", num_classes=2, in_shape=(2,), width=8)
    assert evaluation.cpu_slices(mlp, torch.randn(100, 2)) == 3  # 33 + 33 + 34: at least MIN_SLICE = 32
    assert evaluation.cpu_slices(mlp, torch.randn(63, 2)) == 1  # too few samples for two slices
    monkeypatch.setattr(evaluation, "CPU_SLICE_BYTES", 16 * 2**20)
    assert evaluation.cpu_slices(mlp, torch.randn(4096, 2)) == 1  # an MLP's batch fits the cache whole
    cnn = build_model("cnn", num_classes=10, in_shape=(1, 28, 28), channels=16)
    assert evaluation.cpu_slices(cnn, torch.randn(1000, 1, 28, 28)) > 1  # the MNIST CNN's does not


@pytest.mark.parametrize(
    ("n", "per_sample", "budget", "expected"),
    [
        (1000, 100, 100_000, 1),  # fits whole
        (1000, 100, 10_000, 10),  # 100 samples fit a slice
        (1001, 100, 10_000, 11),  # one more sample: one more slice
        (1000, 100, 1_000, 31),  # 10 would fit, but a slice keeps at least 32 samples (1000 // 32)
        (63, 1_000, 1, 1),  # too few samples for two slices of 32
        (64, 1_000, 1, 2),
        (1000, 100, 0, 1),  # no budget: never sliced
    ],
)
def test_slice_count_takes_as_few_slices_as_fit_and_none_below_the_minimum(
    n: int, per_sample: float, budget: float, expected: int
) -> None:
    evaluation = importlib.import_module("lgeom.evaluate")
    assert evaluation.MIN_SLICE == 32
    assert evaluation.slice_count(n, per_sample, budget) == expected


def test_a_model_that_fails_on_one_sample_is_evaluated_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    evaluation = importlib.import_module("lgeom.evaluate")
    monkeypatch.setattr(evaluation, "CPU_SLICE_BYTES", 1)

    class NeedsPairs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] < 2:
                raise RuntimeError("needs at least two samples")
            return self.lin(x)

    model = NeedsPairs()
    assert evaluation.cpu_slices(model, torch.randn(100, 2)) == 1
    assert evaluate(model, [(torch.randn(100, 2), torch.randint(0, 2, (100,)))]).n == 100
