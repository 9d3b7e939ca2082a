"""Plain-data torch files: a round trip, what counts as plain, crafted and broken files refused without
running anything (a payload that would create a marker file never does), unique temporary names.
"""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from lgeom.safe_io import (
    UnsafeFileError,
    load_plain,
    plain_problem,
    save_plain,
    unique_temp_path,
    write_atomically,
)


class _Payload:
    """Unpickling this runs ``touch <marker>``: what a malicious file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _Custom:
    """An ordinary class: not plain data."""


def test_round_trip_of_plain_data(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    obj = {
        "params": {"w": torch.randn(3, 2, generator=gen)},
        "steps": [1, 2.5, "x", None, True],
        "shape": torch.Size([3, 2]),
        "pairs": (0, 1),
        7: collections.OrderedDict(b=torch.arange(3)),
    }
    path = save_plain(obj, tmp_path / "nested" / "f.pt")
    assert path == tmp_path / "nested" / "f.pt"
    back = load_plain(path, "test file")
    assert torch.equal(back["params"]["w"], obj["params"]["w"]) and back["steps"] == obj["steps"]
    assert (
        back["shape"] == torch.Size([3, 2]) and back["pairs"] == (0, 1) and torch.equal(back[7]["b"], torch.arange(3))
    )
    assert os.listdir(path.parent) == ["f.pt"], "no temporary file is left behind"


def test_plain_problem_names_where_the_object_is() -> None:
    assert plain_problem({"a": [torch.zeros(1), {"b": 1}]}) is None
    assert plain_problem({"a": [0, _Custom()]}) == "['a'][1] is a tests.lgeom.test_safe_io._Custom"
    assert plain_problem({1.5: 0}) == "the object has a key of type float"
    assert plain_problem({1, 2}) == "the object is a builtins.set"


def test_save_refuses_what_load_would_refuse_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"f.pt: expected plain data to save .*got: \['x'\] is a .*_Custom"):
        save_plain({"x": _Custom()}, tmp_path / "f.pt")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_a_crafted_pickle_is_refused_and_its_payload_never_runs(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "PAYLOAD_RAN"
    bad = tmp_path / "evil.pt"
    obj = {"params": _Payload(marker)}
    if legacy:
        bad.write_bytes(pickle.dumps(obj, protocol=2))
    else:
        torch.save(obj, bad)
    with pytest.raises(
        UnsafeFileError,
        match=rf"checkpoint: expected a torch file of plain data .*got {bad}, which refers to "
        r"the Python object posix.system \(code or a class, not data\); it was not loaded",
    ) as err:
        load_plain(bad, "checkpoint")
    assert err.value.path == bad and isinstance(err.value, ValueError)
    assert not marker.exists(), "the payload ran"


def test_an_object_of_a_class_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "obj.pt"
    torch.save({"x": _Custom()}, bad)
    with pytest.raises(
        UnsafeFileError,
        match=r"curve: expected a curve, got .*obj.pt, which refers to the Python object "
        r"tests.lgeom.test_safe_io._Custom",
    ):
        load_plain(bad, "curve", "a curve")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "is empty"),
        (b"hello, not torch", r"is not a torch file \(neither a zip archive nor a pickle\)"),
        (b"PK\x03\x04broken zip", "is not a readable torch file"),
    ],
)
def test_files_that_are_not_torch_files_are_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    bad = tmp_path / "x.pt"
    bad.write_bytes(content)
    with pytest.raises(UnsafeFileError, match=f"which {reason}"):
        load_plain(bad, "x")


def test_a_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=f"ckpt: expected a torch file of plain data .* at {tmp_path / 'no.pt'}, got nothing"
    ):
        load_plain(tmp_path / "no.pt", "ckpt")


def test_temporary_names_are_unique_beside_the_file(tmp_path: Path) -> None:
    target = tmp_path / "final.pt"
    names = {unique_temp_path(target) for _ in range(200)}
    assert len(names) == 200
    for p in names:
        assert p.parent == tmp_path and p.name.startswith(f"final.pt.tmp-{os.getpid()}-")


def test_an_atomic_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "table.csv"
    assert write_atomically(target, lambda tmp: tmp.write_text("a,b\n")) == target
    assert target.read_text() == "a,b\n"
    seen: list[Path] = []

    def failing(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, failing)
    assert target.read_text() == "a,b\n" and sorted(p.name for p in target.parent.iterdir()) == ["table.csv"]
    # keep_suffix: the temporary name ends like the file (for writers that choose the format by the suffix)
    write_atomically(tmp_path / "plane.npz", lambda tmp: seen.append(tmp) or tmp.write_bytes(b"x"), keep_suffix=True)
    assert seen[-1].suffix == ".npz" and ".tmp-" in seen[-1].name and seen[-1].parent == tmp_path
