"""The ``lgeom`` command's conventions: ``--version`` from the package metadata, help that shows defaults and
lists the presets, descriptions without reStructuredText markup.
"""

from __future__ import annotations

import importlib.metadata
import re

import pytest

from pipelines.cli import STEPS, build_parser, main, plain_text
from pipelines.config import available_presets


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"lgeom {importlib.metadata.version('lgeom')}"


def test_help_shows_defaults_and_presets_without_markup() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "step").choices
    assert "quick-tiny" in parser.format_help()
    study = sub["study"].format_help()
    assert re.search(r"--gpu GPU .*\(default:\s+-1\.0\)", study, re.S)
    assert all(p in " ".join(study.split()) for p in available_presets())
    for step in STEPS:
        if step in sub:
            text = sub[step].format_help()
            assert "``" not in text and not re.search(r":(func|mod|class|meth|data):`", text), step


def test_plain_text_strips_roles_and_literals() -> None:
    assert plain_text("see :func:`~tracking.live.progress_metrics` and ``train/a/loss``") == (
        "see tracking.live.progress_metrics and train/a/loss"
    )
