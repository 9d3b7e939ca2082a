"""The trace's values: union-find over permutation groups (sizes, the FIXED class), unit positions,
concatenated segments.
"""

from __future__ import annotations

import torch

from lgeom.permutation.units import (
    FIXED,
    NOT_TENSOR,
    Attr,
    Concat,
    Groups,
    NotTensor,
    Units,
)


def test_groups_tie_equal_sizes_and_name_a_class_after_its_first_group() -> None:
    g = Groups()
    a, b, c, d = g.new(4, "fc1"), g.new(4, "fc2"), g.new(4, "fc3"), g.new(3, "odd")
    assert (a, b, c, d) == (1, 2, 3, 4) and g.name[a] == "fc1" and g.size[d] == 3
    assert all(g.find(x) == x for x in (a, b, c, d))
    assert g.tie(c, b) and g.tie(b, a)
    assert g.find(c) == g.find(b) == a  # the oldest group is the root
    assert g.tie(a, c)  # already one class
    assert not g.tie(a, d) and g.find(d) == d  # sizes differ: not tied


def test_the_fixed_class_takes_groups_of_any_size() -> None:
    g = Groups()
    a, b = g.new(4, "fc1"), g.new(7, "fc2")
    assert g.tie(b, FIXED) and g.tie(a, FIXED)
    assert g.find(a) == g.find(b) == FIXED and g.name[FIXED] == "<fixed>"


def test_find_halves_long_paths() -> None:
    g = Groups()
    ids = [g.new(2, f"l{i}") for i in range(6)]
    for i in range(5, 0, -1):  # a chain 6 -> 5 -> ... -> 1
        g.parent[ids[i]] = ids[i - 1]
    assert g.find(ids[-1]) == ids[0]
    assert g.parent[ids[-1]] != ids[-2], "the path was shortened"


def test_units_position_and_concat_size() -> None:
    assert Units(group=1, axis=-3, rank=4).position() == 1 and Units(group=1).position() is None
    assert Units() == Units(group=None, axis=-1, rank=None, merged=None)
    cat = Concat(((1, 3), (None, 2), (2, 4)), "cat")
    assert cat.size == 9 and Units(group=cat).group.size == 9
    assert isinstance(NOT_TENSOR, NotTensor)
    attr = Attr("scale", torch.ones(2))
    assert attr.name == "scale" and torch.equal(attr.tensor, torch.ones(2))
