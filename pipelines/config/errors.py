"""The one error of configuration: every problem found, reported together."""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(ValueError):
    """Every problem found in a configuration, reported together."""

    def __init__(self, problems: Sequence[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")

    def __reduce__(self) -> tuple[type, tuple[list[str], str]]:
        # Rebuilt from its problems (a Ray worker's error is pickled to the driver), not from its message.
        return type(self), (self.problems, self.source)
