"""Whether a process still runs: this process does, a finished child does not (reaped or a zombie), and a
reused pid is told apart by its start ticks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracking.processes import process_alive, process_start_ticks

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs procfs")


def test_this_process_is_alive_with_its_own_start_ticks() -> None:
    ticks = process_start_ticks(os.getpid())
    assert isinstance(ticks, int) and ticks > 0
    assert process_start_ticks(os.getpid()) == ticks  # stable
    assert process_alive(os.getpid()) and process_alive(os.getpid(), ticks)


def test_a_reused_pid_is_not_the_original_process() -> None:
    ticks = process_start_ticks(os.getpid())
    assert ticks is not None
    assert not process_alive(os.getpid(), ticks + 1) and not process_alive(os.getpid(), ticks - 1)


def test_a_finished_child_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = process_start_ticks(child.pid)
    child.wait(timeout=60)  # reaped: the pid is gone
    assert not process_alive(child.pid) and process_start_ticks(child.pid) is None
    assert not process_alive(child.pid, ticks)


def test_an_exited_child_not_yet_reaped_is_a_zombie_and_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 60
        while process_start_ticks(child.pid) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert Path(f"/proc/{child.pid}").exists(), "not reaped yet: /proc still lists the zombie"
        assert process_start_ticks(child.pid) is None and not process_alive(child.pid)
    finally:
        child.wait(timeout=60)


def test_a_pid_that_does_not_exist() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert process_start_ticks(pid_max + 1) is None and not process_alive(pid_max + 1)
