"""Seeding: the same seed gives the same draws from Python, NumPy and PyTorch and the generator it
returns; another seed gives others; bad seeds are refused.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from lgeom.seed import make_generator, set_seed


@pytest.fixture(autouse=True)
def _restore_determinism() -> Iterator[None]:
    """``set_seed`` switches deterministic algorithms on for the process; put back what was there."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]


def _draws(gen: torch.Generator) -> tuple[float, float, list[float], list[float]]:
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist(), torch.rand(3, generator=gen).tolist())


def test_same_seed_gives_the_same_draws_everywhere() -> None:
    first = _draws(set_seed(7))
    second = _draws(set_seed(7))
    assert first == second
    other = _draws(set_seed(8))
    assert all(a != b for a, b in zip(first, other, strict=True))


def test_the_returned_generator_is_seeded_like_a_fresh_one() -> None:
    gen = set_seed(3, deterministic=False)
    assert torch.equal(torch.randn(4, generator=gen), torch.randn(4, generator=make_generator(3)))
    assert isinstance(gen, torch.Generator) and gen.device == torch.device("cpu")


def test_deterministic_mode_is_switched_on() -> None:
    torch.use_deterministic_algorithms(False)
    set_seed(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()
    set_seed(0)
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark


def test_large_seeds_fit_numpy() -> None:
    set_seed(2**40 + 5, deterministic=False)
    a = np.random.rand()
    np.random.seed(5)
    assert np.random.rand() == a


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True, None])
def test_bad_seeds_are_refused(seed: object) -> None:
    with pytest.raises(ValueError, match=r"seed: expected an integer >= 0, got "):
        set_seed(seed)  # type: ignore[arg-type]
