"""Loss and accuracy at one parameter point (:mod:`lgeom.evaluate`)."""

from __future__ import annotations

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
