"""The console script: with the service installed it runs the CLI; without it, one clear line and exit 2
(an import of a service module that is absent is simulated by a ``None`` entry in ``sys.modules``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.launcher import EXIT_BAD_INPUT, main, missing_service_modules


def test_everything_is_installed_here_and_the_cli_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert missing_service_modules() == []
    assert main([]) == EXIT_BAD_INPUT  # the CLI's own answer to no step: its help
    assert capsys.readouterr().out.startswith("usage: lgeom")


def test_a_missing_extra_is_one_line_naming_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    monkeypatch.setitem(sys.modules, "boto3", None)
    assert missing_service_modules() == ["optuna", "boto3"]
    assert main(["train"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err == (
        "lgeom: error: the lgeom command needs the service extra, expected optuna, boto3 to be installed, got "
        "none of them; install it with: pip install 'lgeom[study]'\n"
    )


def test_run_as_a_module_without_a_step_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.launcher"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == EXIT_BAD_INPUT and proc.stdout.startswith("usage: lgeom")
