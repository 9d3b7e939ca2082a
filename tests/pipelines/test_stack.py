"""``lgeom up`` / ``lgeom down`` without starting servers (``tests/tracking/test_local_stack.py`` starts
them): what ``up`` prints, the options of each step, ``down`` with no stack, a stale one (its processes
gone) and an unreadable state file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main as cli_main
from pipelines.stack import describe
from tracking.local_stack import StackInfo


def _info(state_dir: Path, pids: dict[str, int]) -> StackInfo:
    return StackInfo(
        tracking_uri="http://127.0.0.1:5123",
        s3_endpoint="http://127.0.0.1:8333",
        bucket="lgeom",
        pids=pids,
        ports={"mlflow": 5123, "s3": 8333},
        state_dir=str(state_dir),
    )


def test_describe_says_where_the_stack_runs_and_how_to_use_it(tmp_path: Path) -> None:
    text = describe(_info(tmp_path, {"mlflow": 1}))
    assert text.splitlines()[0] == "local stack running (SeaweedFS S3 + MLflow server, loopback only)"
    assert "export MLFLOW_TRACKING_URI=http://127.0.0.1:5123" in text and "s3://lgeom/artifacts" in text
    assert f"state: {tmp_path}/stack.json" in text
    assert describe(_info(tmp_path, {}), already=True).startswith("local stack already running")


def test_down_without_a_stack_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["down", "--state-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"no local stack recorded in {tmp_path}\n"


def test_down_of_a_stale_stack_clears_its_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=60)
    info = _info(tmp_path, {"mlflow": gone.pid})
    (tmp_path / "stack.json").write_text(json.dumps({k: v for k, v in vars(info).items()}))
    assert cli_main(["down", "--state-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "local stack stopped\n" and not (tmp_path / "stack.json").exists()


def test_an_unreadable_state_fails_with_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "stack.json").write_text("{not json")
    assert cli_main(["down", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"lgeom down: failed: {tmp_path / 'stack.json'}: expected a stack state written by 'lgeom up'"
    )


def test_up_takes_bucket_timeout_and_new_ports_and_down_only_the_state_dir(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["up", "--help"])
    up_help = capsys.readouterr().out
    assert all(o in up_help for o in ("--state-dir", "--bucket", "--timeout", "--new-ports"))
    with pytest.raises(SystemExit):
        cli_main(["down", "--help"])
    down_help = capsys.readouterr().out
    assert "--state-dir" in down_help and "--bucket" not in down_help
