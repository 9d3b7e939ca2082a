"""The tiny MLP case with its dense Hessian, shared by the Hessian tests as a dict."""

from __future__ import annotations

import pytest

from tests.lgeom.cases import get_case


@pytest.fixture(scope="module")
def case() -> dict:
    """``model``, ``data`` (batches of 16, 16, 8), dense Hessian ``h`` and its eigenvalues ``ev``, descending."""
    c = get_case("mlp")
    return {"model": c.model, "data": c.data, "h": c.hessian(), "ev": c.eigenvalues()}
