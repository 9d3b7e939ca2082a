"""The column table: construction, rows, unequal columns refused, CSV round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lgeom.table import Table


def test_columns_rows_and_lookup() -> None:
    table = Table({"t": [0.0, 0.5, 1.0], "name": ["a", "b", "c"]})
    assert len(table) == 3 and table.names == ["t", "name"] and "t" in table and "x" not in table
    assert isinstance(table["t"], np.ndarray) and table["t"].tolist() == [0.0, 0.5, 1.0]
    assert table.rows()[1] == {"t": 0.5, "name": "b"} and type(table.rows()[1]["t"]) is float
    assert table.to_dict() == {"t": [0.0, 0.5, 1.0], "name": ["a", "b", "c"]}
    assert repr(table) == "Table(3 rows: t, name)"
    assert len(Table({})) == 0


def test_unequal_columns_are_refused() -> None:
    with pytest.raises(ValueError, match=r"table columns: expected columns of equal length, got \{'a': 2, 'b': 1\}"):
        Table({"a": [1, 2], "b": [3]})


def test_from_rows_takes_the_union_of_keys_in_first_seen_order() -> None:
    table = Table.from_rows([{"a": 1.0, "b": 2.0}, {"c": 3.0, "a": 4.0}])
    assert table.names == ["a", "b", "c"]
    assert table["a"].tolist() == [1.0, 4.0] and math.isnan(table["b"][1]) and math.isnan(table["c"][0])


def test_csv_round_trip_keeps_floats_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    table = Table({"t": np.linspace(0, 1, 4), "loss": rng.random(4), "path": ["bezier"] * 4})
    text = table.to_csv(tmp_path / "t.csv")
    assert text.splitlines()[0] == "t,loss,path" and (tmp_path / "t.csv").read_bytes().decode() == text
    back = Table.read_csv(tmp_path / "t.csv")
    assert back.names == table.names and back["path"].tolist() == ["bezier"] * 4
    np.testing.assert_array_equal(back["loss"], table["loss"])
    assert Table({"x": [1]}).to_csv() == "x\r\n1\r\n"  # the csv module's line ends
