"""Saving and loading lgeom's ``.pt`` files (checkpoints, curves, bundle endpoints) as plain data.

Files a user hands in (``lgeom connect --a``, ``lgeom probe --curve`` ...) are data, never code: they are
read with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers, so a
crafted pickle cannot run a payload. Everything lgeom writes is therefore kept to that form -- dicts, lists
and tuples of tensors, numbers, strings, booleans and ``None`` -- and :func:`save_plain` checks it before
writing, so a file it writes can always be read back by :func:`load_plain`.

Writes are atomic under a temporary name unique to the writer (pid + random suffix), so two processes
writing the same file never trip over each other's temporary file.
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

PLAIN_FORM = "a torch file of plain data (dicts and lists of tensors, numbers and strings)"
_GLOBAL = re.compile(r"(?:Unsupported global|GLOBAL)\W+(?:GLOBAL\s+)?([A-Za-z_][\w.]*)")
_SCALARS = (bool, int, float, str, type(None))


class UnsafeFileError(ValueError):
    """A file that is not plain data (a pickle with code or objects, or not a torch file at all).

    The message names the file and what was expected; nothing in the file was executed.

    Attributes:
        path: the refused file.
    """

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def unique_temp_path(path: str | os.PathLike[str], *, keep_suffix: bool = False) -> Path:
    """A temporary name beside ``path`` that no other process or thread uses: ``<name>.tmp-<pid>-<hex>``, or
    with ``keep_suffix`` ``<stem>.tmp-<pid>-<hex><suffix>`` (for writers that pick the format by the suffix,
    or append theirs to any other).
    """
    p = Path(path)
    tag = f"tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return p.with_name(f"{p.stem}.{tag}{p.suffix}") if keep_suffix else p.with_name(f"{p.name}.{tag}")


def write_atomically(
    path: str | os.PathLike[str], write: Callable[[Path], object], *, keep_suffix: bool = False
) -> Path:
    """Write the file ``path`` atomically: ``write(tmp)`` writes a temporary file beside it (see
    :func:`unique_temp_path`, ``keep_suffix`` as there), which then replaces ``path``. Folders are created;
    the temporary file never stays, whatever ``write`` raises. Returns ``path``.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_temp_path(p, keep_suffix=keep_suffix)
    try:
        write(tmp)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def plain_problem(obj: Any, where: str = "") -> str | None:
    """Where ``obj`` holds something other than plain data (``None`` when it is all plain).

    Plain data: tensors, ``torch.Size``, bool/int/float/str/None, and lists, tuples and dicts (string or
    integer keys) of these.
    """
    if isinstance(obj, (torch.Tensor, torch.Size)) or type(obj) in _SCALARS:
        return None
    if isinstance(obj, Mapping) and type(obj).__module__ in ("builtins", "collections"):
        for k, v in obj.items():
            if type(k) not in (str, int):
                return f"{where or 'the object'} has a key of type {type(k).__name__}"
            found = plain_problem(v, f"{where}[{k!r}]")
            if found:
                return found
        return None
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            found = plain_problem(v, f"{where}[{i}]")
            if found:
                return found
        return None
    return f"{where or 'the object'} is a {type(obj).__module__}.{type(obj).__qualname__}"


def save_plain(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` with ``torch.save`` atomically (unique temporary file, then rename).

    Raises:
        TypeError: ``obj`` holds something :func:`load_plain` would refuse (names where); nothing is written.
    """
    problem = plain_problem(obj)
    if problem:
        raise TypeError(
            f"{path}: expected plain data to save (tensors, numbers, strings, lists, dicts), got: {problem}"
        )
    return write_atomically(path, lambda tmp: torch.save(obj, tmp))


def _reason(err: BaseException, head: bytes) -> str:
    if not head:
        return "is empty"
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        return "is not a torch file (neither a zip archive nor a pickle)"
    text = str(err)
    m = _GLOBAL.search(text)
    if m:
        return f"refers to the Python object {m.group(1)} (code or a class, not data)"
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        return "holds Python objects or pickle instructions other than tensors, numbers, strings, lists and dicts"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"is not a readable torch file ({first[:160]})"


def load_plain(path: str | os.PathLike[str], what: str, expected: str = PLAIN_FORM) -> Any:
    """Read a ``.pt`` file with ``torch.load(weights_only=True)`` onto the CPU.

    Args:
        path: the file.
        what: how the file is called in messages (``checkpoint --a``, ``curve`` ...).
        expected: what the file should be, for messages.

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeFileError: the file is not plain data or not a torch file at all; no code from it ran.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what}: expected {expected} at {p}, got nothing there")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every unreadable or refused file is bad input
        with open(p, "rb") as fh:
            head = fh.read(4)
        raise UnsafeFileError(
            f"{what}: expected {expected}, got {p}, which {_reason(err, head)}; it was not loaded", p
        ) from None
