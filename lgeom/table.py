"""A small column table (name -> 1-D NumPy array) so lgeom can return tables without pandas."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lgeom._checks import expected


class Table:
    """Named columns of equal length. ``table["t"]`` is a NumPy array; ``pandas.DataFrame(table.columns)``
    converts it.
    """

    def __init__(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> None:
        self.columns: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in columns.items()}
        lengths = {k: len(v) for k, v in self.columns.items()}
        if len(set(lengths.values())) > 1:
            raise expected("table columns", "columns of equal length", lengths)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Table:
        """Build from dict rows; the columns are the union of keys in first-seen order (missing -> NaN)."""
        rows = list(rows)
        names: list[str] = []
        for r in rows:
            names.extend(k for k in r if k not in names)
        return cls({k: [r.get(k, np.nan) for r in rows] for k in names})

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __repr__(self) -> str:
        return f"Table({len(self)} rows: {', '.join(self.columns)})"

    @property
    def names(self) -> list[str]:
        """Column names in order."""
        return list(self.columns)

    def rows(self) -> list[dict[str, Any]]:
        """The rows as dicts of Python scalars."""
        return [
            {k: v[i].item() if hasattr(v[i], "item") else v[i] for k, v in self.columns.items()}
            for i in range(len(self))
        ]

    def to_dict(self) -> dict[str, list[Any]]:
        """Columns as lists (JSON-serialisable)."""
        return {k: v.tolist() for k, v in self.columns.items()}

    def to_csv(self, path: str | Path | None = None) -> str:
        """Write CSV with a header row to ``path`` (if given) and return the text."""
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(self.names)
        for row in self.rows():
            writer.writerow([repr(v) if isinstance(v, float) else v for v in row.values()])
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def read_csv(cls, path: str | Path) -> Table:
        """Read a table written by :meth:`to_csv` (numeric columns become floats)."""
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = [{k: _parse(v) for k, v in r.items()} for r in reader]
        return cls.from_rows(rows)


def _parse(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value
