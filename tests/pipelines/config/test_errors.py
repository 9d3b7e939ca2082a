"""One error lists every problem, with its source and how many there are."""

from __future__ import annotations

import pickle

from pipelines.config import ConfigError


def test_the_error_lists_every_problem_with_its_source() -> None:
    err = ConfigError(["train.lr: expected a number", "name: unknown key"], "preset quick")
    assert err.problems == ["train.lr: expected a number", "name: unknown key"]
    assert str(err) == "preset quick: 2 problem(s):\n  - train.lr: expected a number\n  - name: unknown key"
    assert isinstance(err, ValueError) and str(ConfigError([])).startswith("config: 0 problem(s)")


def test_the_error_survives_pickling_with_its_problems() -> None:
    err = pickle.loads(pickle.dumps(ConfigError(["model.arch: bad", "data.name: bad"], "preset p")))
    assert err.problems == ["model.arch: bad", "data.name: bad"]
    assert str(err) == "preset p: 2 problem(s):\n  - model.arch: bad\n  - data.name: bad"
