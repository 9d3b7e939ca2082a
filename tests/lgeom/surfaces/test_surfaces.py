"""The ``lgeom.surfaces`` package: its names resolve lazily to the submodules' objects; unknown names fail."""

from __future__ import annotations

import importlib

import pytest

import lgeom.surfaces as surfaces


def test_every_listed_name_is_its_submodules_object() -> None:
    assert surfaces.__all__ == sorted(surfaces._EXPORTS) and dir(surfaces) == surfaces.__all__
    for name, module in surfaces._EXPORTS.items():
        assert getattr(surfaces, name) is getattr(importlib.import_module(f"lgeom.surfaces.{module}"), name)
    from lgeom.surfaces import plane, slice_1d  # noqa: F401 - the from-import form works too


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'lgeom.surfaces' has no attribute 'planes'"):
        surfaces.planes  # noqa: B018
