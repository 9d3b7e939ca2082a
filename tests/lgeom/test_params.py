"""Parameter points: flat vectors, functional evaluation without mutation, filter-normalised directions."""

from __future__ import annotations

import pytest
import torch

from lgeom.models import build_model
from lgeom.params import (
    ParamLayout,
    combine,
    filter_normalized_direction,
    flatten,
    functional_forward,
    get_buffers,
    get_params,
    load_params,
    norm,
    unflatten,
)


@pytest.fixture
def cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("cnn", num_classes=3, in_shape=(1, 8, 8), channels=4, batchnorm=True)


def test_flatten_roundtrip_shares_storage(cnn: torch.nn.Module) -> None:
    params = get_params(cnn)
    layout = ParamLayout.of(params)
    vec = layout.flatten(params)
    assert vec.shape == (sum(p.numel() for p in cnn.parameters()),) == (layout.size,)
    back = layout.unflatten(vec)
    assert list(back) == list(params)
    assert all(torch.equal(back[k], params[k]) for k in params)
    vec[0] = 123.0
    assert back[layout.names[0]].reshape(-1)[0] == 123.0
    with pytest.raises(ValueError, match=f"vector: expected a 1-D tensor of {layout.size} elements"):
        unflatten(torch.zeros(3), params)
    assert torch.equal(flatten(params), layout.flatten(params))


def test_functional_forward_does_not_mutate(cnn: torch.nn.Module) -> None:
    x = torch.randn(5, 1, 8, 8)
    cnn.eval()
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    ref = cnn(x)
    other = {k: torch.randn_like(v) for k, v in get_params(cnn).items()}
    out = functional_forward(cnn, other, x)
    assert not torch.allclose(out, ref)
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    same = functional_forward(cnn, get_params(cnn), x)
    torch.testing.assert_close(same, ref)
    loaded = load_params(
        build_model("cnn", num_classes=3, in_shape=(1, 8, 8), channels=4, batchnorm=True).eval(),
        other,
        get_buffers(cnn),
    )
    torch.testing.assert_close(loaded(x), out)


def test_filter_normalised_direction_matches_filter_norms(cnn: torch.nn.Module) -> None:
    params = get_params(cnn)
    gen = torch.Generator().manual_seed(1)
    d = filter_normalized_direction(params, generator=gen)
    for name, w in params.items():
        if w.dim() <= 1:
            assert torch.count_nonzero(d[name]) == 0, name
            continue
        dn = d[name].reshape(w.shape[0], -1).norm(dim=1)
        wn = w.reshape(w.shape[0], -1).norm(dim=1)
        torch.testing.assert_close(dn, wn)
    kept = filter_normalized_direction(params, generator=torch.Generator().manual_seed(1), ignore_1d=False)
    assert torch.equal(kept["bn1.weight"], params["bn1.weight"])
    again = filter_normalized_direction(params, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(again[k], d[k]) for k in d)


def test_combine_and_norm() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0])}
    b = {"w": torch.tensor([3.0, 0.0]), "b": torch.tensor([-1.0])}
    mid = combine([0.25, 0.75], [a, b])
    assert torch.equal(mid["w"], torch.tensor([2.5, 0.5])) and torch.equal(mid["b"], torch.tensor([0.0]))
    assert norm(a).item() == pytest.approx(14**0.5)
    with pytest.raises(ValueError, match="weights: expected 2 weights, one per point, got 1"):
        combine([1.0], [a, b])


def test_load_params_names_the_mismatch(cnn: torch.nn.Module) -> None:
    params = get_params(cnn)
    params["head.weight"] = torch.zeros(2, 2)
    with pytest.raises(
        ValueError, match=r"parameter 'head.weight': expected shape \(3, 64\) \(from model\), got \(2, 2\)"
    ):
        load_params(cnn, params)
