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
from tests.lgeom.cases import build_vit


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


def test_filter_normalisation_rule_on_transformer_parameters() -> None:
    # Filters lie along axis 0 for any parameter of 2+ dimensions; 1-D ones (LayerNorm, biases) stay put.
    torch.manual_seed(0)
    params = get_params(build_vit(num_classes=3, in_shape=(3, 4, 4)))  # the class token starts at zero
    d = filter_normalized_direction(params, generator=torch.Generator().manual_seed(2))
    for name in ("blocks.0.norm1.weight", "blocks.0.norm1.bias", "norm.weight", "blocks.0.attn.in_proj_bias"):
        assert params[name].dim() == 1 and torch.count_nonzero(d[name]) == 0, name
    rows = d["blocks.0.attn.in_proj_weight"].norm(dim=1)  # (3E, E): one filter per q, k and v unit
    torch.testing.assert_close(rows, params["blocks.0.attn.in_proj_weight"].norm(dim=1))
    assert d["pos_embed"].shape == (1, 5, 4)  # (1, T, E): one filter, the whole tensor
    torch.testing.assert_close(d["pos_embed"].norm(), params["pos_embed"].norm())
    assert not torch.allclose(d["pos_embed"][0].norm(dim=1), params["pos_embed"][0].norm(dim=1))
    assert torch.count_nonzero(d["cls_token"]) == 0 and torch.isfinite(d["cls_token"]).all()
    patches = d["patch_embed.weight"].flatten(1).norm(dim=1)  # conv (E, C, p, p): one filter per channel out
    torch.testing.assert_close(patches, params["patch_embed.weight"].flatten(1).norm(dim=1))
