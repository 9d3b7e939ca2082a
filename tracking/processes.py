"""Telling whether a process is still the one that was started: pid plus its start time, so a reused pid
is not mistaken for the original (used by the local server stack and by orphaned-run detection).
"""

from __future__ import annotations

import os
from pathlib import Path


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (identifies a process across pid reuse).

    Returns:
        the ticks, or ``None`` when there is no such process, it is a zombie, or there is no procfs.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields_after_comm = stat.rsplit(")", 1)[1].split()
    if fields_after_comm[0] == "Z":
        return None  # a zombie has exited already
    return int(fields_after_comm[19])


def process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` runs and, when ``start_ticks`` is given, is the process that started at that time
    (:func:`process_start_ticks`); without procfs, whether signal 0 can reach it.
    """
    ticks = process_start_ticks(pid)
    if ticks is None:
        if not Path("/proc").exists():  # no procfs: fall back to signal 0
            try:
                os.kill(pid, 0)
                return True
            except OSError:
                return False
        return False
    return start_ticks is None or ticks == start_ticks
