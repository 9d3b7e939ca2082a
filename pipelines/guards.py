"""Checks a study makes before it starts anything, and the lock that keeps two studies apart.

* :func:`check_writable_dir`: an output or report folder that cannot be written is reported up front,
  before any MLflow run is created or Ray starts (not after the study trained).
* :func:`check_local_resources`: per-trial CPUs / GPUs larger than this machine are refused before the
  local Ray starts (on a cluster the request is kept; nodes may join later).
* :class:`StudyLock`: one study of a name per output folder at a time. The lock is an ``flock`` on
  ``<output_dir>/<study>/.study.lock``: the kernel releases it when its process ends, however it ends, so
  the lock of a killed study is taken over by the next one without any clean-up. The file records who
  holds it (pid, host, start time) so that a second study refuses with a message naming the running one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tracking.processes import process_alive, process_start_ticks
from tracking.runs import TAG_HOST, TAG_PID, TAG_PROC_START, TAG_STAGE, search_all_runs

LOCK_NAME = ".study.lock"


class StudyLockedError(RuntimeError):
    """Another study of the same name and output folder is running (the message names it)."""


def check_writable_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Make sure ``path`` is a folder this process can create files in (creating nothing that stays).

    The folder need not exist: its nearest existing ancestor must then be a writable folder. Writability
    is tested by creating and removing a temporary file, which also holds for root and read-only mounts.

    Returns:
        ``path`` made absolute.

    Raises:
        ValueError: naming ``what``, the path and why it cannot be written.
    """
    target = Path(path).expanduser().absolute()
    probe = target
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():
            raise ValueError(f"{what}: expected a writable folder, got {target} ({probe} is a dangling link)")
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{what}: expected a writable folder, got {target} ({probe} is a file, not a folder)")
    try:
        fd, name = tempfile.mkstemp(prefix=".lgeom-write-check-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else str(err)
        where = "" if probe == target else f" (its nearest existing folder {probe})"
        raise ValueError(f"{what}: expected a writable folder, got {target}{where}: {reason}") from None
    return target


def local_gpu_count() -> int:
    """GPUs this machine has (CUDA devices torch sees)."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable CUDA means no GPU
        return 0


def check_local_resources(cpu: float, gpu: float, *, cpus: int | None = None, gpus: int | None = None) -> None:
    """Refuse per-trial requests larger than this machine, for the local Ray the study starts itself.

    Without a GPU a GPU request is not an error (trials run on CPUs, see
    :func:`pipelines.study.trial_resources`); more GPUs than the machine has is.

    Raises:
        ValueError: ``study.cpu`` above the CPU count or ``study.gpu`` above a non-zero GPU count.
    """
    have_cpu = cpus if cpus is not None else (os.cpu_count() or 1)
    have_gpu = gpus if gpus is not None else local_gpu_count()
    if cpu > have_cpu:
        raise ValueError(
            f"study.cpu: expected at most {have_cpu:g} CPUs per trial (what this machine has for the local Ray), "
            f"got {cpu:g}"
        )
    if have_gpu > 0 and gpu > have_gpu:
        raise ValueError(
            f"study.gpu: expected at most {have_gpu:g} GPUs per trial (what this machine has for the local Ray), "
            f"got {gpu:g}"
        )


def _proc_start(pid: int) -> int | None:

    return process_start_ticks(pid)


def describe_holder(info: dict[str, Any]) -> str:
    """``pid 123 on host h, started 2026-01-01 12:00:00 UTC`` from a lock file's record."""
    started = info.get("started_at")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(started)))
        if isinstance(started, (int, float))
        else "at an unknown time"
    )
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {when}"


class StudyLock:
    """Exclusive lock of one study's output folder, held for the life of the study (a context manager).

    Args:
        folder: the study's output folder (``<output_dir>/<study>``); created if needed.
        study: the study name (recorded in the lock file).
        wait: seconds to wait for a running study to end before refusing (0: refuse at once).
    """

    def __init__(self, folder: str | os.PathLike[str], study: str, *, wait: float = 0.0) -> None:
        self.folder = Path(folder)
        self.study = study
        self.wait = wait
        self.path = self.folder / LOCK_NAME
        self.previous: dict[str, Any] | None = None
        self._fd: int | None = None

    def _read(self, fd: int) -> dict[str, Any]:
        try:
            data = os.pread(fd, 4096, 0)
            return dict(json.loads(data.decode())) if data.strip() else {}
        except (OSError, ValueError, TypeError):
            return {}

    def acquire(self) -> StudyLock:
        """Take the lock; remembers a dead holder's record in ``previous`` (a killed study).

        Raises:
            StudyLockedError: another live process holds it (after ``wait`` seconds).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                if time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                holder = {}
                for _ in range(20):  # the holder writes its record right after locking
                    holder = self._read(fd)
                    if holder:
                        break
                    time.sleep(0.05)
                os.close(fd)
                raise StudyLockedError(
                    f"study {self.study}: expected no other study running in {self.folder}, got one "
                    f"({describe_holder(holder) if holder else 'its details are not recorded yet'}); "
                    f"wait for it to end or stop it (lock file {self.path})"
                ) from None
        old = self._read(fd)
        self.previous = old or None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "proc_start": _proc_start(os.getpid()),
            "started_at": time.time(),
            "study": self.study,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (the file stays; its record is cleared)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> StudyLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def check_no_running_study(store: Any, experiment_id: str, study: str, *, own_run: Any = None) -> None:
    """Refuse when a study run (stage ``study``) of the experiment is RUNNING in a live process on this
    host: the same study started from another output folder against the same store. (Runs of other
    hosts cannot be checked from here; a dead process's runs are closed as orphans by the study.)

    Called before the study's parent run exists, and again with ``own_run`` (the parent ``mlflow`` run
    just created): two studies that passed the first check at the same moment are then told apart by
    start time (then run id), and only the later one refuses.

    Raises:
        StudyLockedError: naming that process (pid, host, start time) and its run.
    """
    host = socket.gethostname()
    for run in search_all_runs(
        store, [experiment_id], f"attributes.status = 'RUNNING' and tags.`{TAG_STAGE}` = 'study'"
    ):
        tags = run.data.tags
        pid = tags.get(TAG_PID, "")
        if tags.get(TAG_HOST) != host or not pid.isdigit() or int(pid) == os.getpid():
            continue
        if own_run is not None and (run.info.start_time, run.info.run_id) > (
            own_run.info.start_time,
            own_run.info.run_id,
        ):
            continue  # started after ours: that one refuses
        ticks = int(tags.get(TAG_PROC_START, "0") or 0) or None
        if process_alive(int(pid), ticks):
            holder = describe_holder({"pid": pid, "host": host, "started_at": run.info.start_time / 1000})
            raise StudyLockedError(
                f"study {study}: expected no other study of this name running against {store.describe()}, got one "
                f"({holder}, parent run {run.info.run_id}); wait for it to end or stop it"
            )
