"""The permutation spec itself (:mod:`lgeom.permutation.spec`): where each permutation acts, concatenated
axes built from their segments, check_spec accepting a fitting spec and naming what does not fit, and the
PermutationSpecError message.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lgeom import PermutationSpecError as TopLevelError
from lgeom.align import PermutationSpec as AlignSpec
from lgeom.permutation import PermutationSpec, PermutationSpecError, check_spec

# Two layers writing 2 and 3 units, concatenated into the 5 inputs of a head.
CONCAT_SPEC = PermutationSpec(
    axes={"a.weight": ("a", None), "b.weight": ("b", None), "head.weight": (None, "cat:x")},
    sizes={"a": 2, "b": 3},
    concats={"cat:x": (("a", 2), (None, 1), ("b", 3))},
)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _mlp_spec(**changes: tuple) -> PermutationSpec:
    axes = {"0.weight": ("h", None), "0.bias": ("h",), "2.weight": (None, "h"), "2.bias": (None,)}
    return PermutationSpec({**axes, **changes}, sizes={"h": 4})


def test_package_and_align_export_the_same_names() -> None:
    assert AlignSpec is PermutationSpec and TopLevelError is PermutationSpecError


def test_concatenated_axes_follow_their_segments() -> None:
    assert CONCAT_SPEC.axis_size("a") == 2 and CONCAT_SPEC.axis_size("cat:x") == 6
    assert CONCAT_SPEC.perm_occurrences() == {
        "a": [("a.weight", 0, 0), ("head.weight", 1, 0)],
        "b": [("b.weight", 0, 0), ("head.weight", 1, 3)],
    }
    assert CONCAT_SPEC.perm_to_axes() == {
        "a": [("a.weight", 0), ("head.weight", 1)],
        "b": [("b.weight", 0), ("head.weight", 1)],
    }
    full = CONCAT_SPEC.full_perms({"a": torch.tensor([1, 0]), "b": torch.tensor([2, 0, 1])})
    assert torch.equal(full["cat:x"], torch.tensor([1, 0, 2, 5, 3, 4]))  # the unpermuted unit stays at 2
    assert torch.equal(full["a"], torch.tensor([1, 0]))


def test_check_spec_accepts_a_fitting_spec_and_views() -> None:
    check_spec(_mlp(), _mlp_spec())
    # The head's 4 inputs viewed as 2 blocks of 2 positions, the blocks permuted.
    blocks = {"0.weight": (None, None), "0.bias": (None,), "2.weight": (None, "h", None), "2.bias": (None,)}
    check_spec(_mlp(), PermutationSpec(blocks, views={"2.weight": (2, 2, 2)}, sizes={"h": 2}))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            PermutationSpec({"0.weight": ("h", None)}, sizes={"h": 4}),
            "permutation spec of Sequential: expected every tensor to be covered, got none for '0.bias'",
        ),
        (_mlp_spec(**{"1.weight": (None,)}), "permutation spec '1.weight': expected a tensor of Sequential, got none"),
        (_mlp_spec(**{"2.weight": ("h",)}), "permutation spec '2.weight': expected 2 axes, got 1"),
        (
            PermutationSpec(_mlp_spec().axes, sizes={"h": 5}),
            "permutation spec '0.weight' axis 0: expected 5 units for 'h', got 4",
        ),
        (
            PermutationSpec(_mlp_spec().axes, views={"2.weight": (3, 3)}, sizes={"h": 4}),
            r"permutation spec '2.weight': expected a view of 8 elements, got \(3, 3\)",
        ),
    ],
    ids=["missing", "unknown", "rank", "size", "view"],
)
def test_check_spec_names_what_does_not_fit(spec: PermutationSpec, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        check_spec(_mlp(), spec)


def test_spec_error_names_model_place_and_operation() -> None:
    err = PermutationSpecError("Net", "blocks.0.attn", "MultiheadAttention", "attention mixes units across heads")
    assert isinstance(err, ValueError)
    assert (err.model, err.where, err.op, err.reason) == (
        "Net",
        "blocks.0.attn",
        "MultiheadAttention",
        "attention mixes units across heads",
    )
    assert str(err) == (
        "permutation spec of Net: expected operations that keep hidden units apart, got "
        "MultiheadAttention at 'blocks.0.attn' (attention mixes units across heads)"
    )
