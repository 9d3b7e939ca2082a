"""Ray runtime helpers (pure functions): which clusters span hosts, loopback names, addresses."""

from __future__ import annotations

import pytest

from pipelines.ray_runtime import is_loopback, spans_hosts

HERE = {"192.0.2.2"}  # this machine's outward address: Ray registers even a loopback-started node under it


@pytest.mark.parametrize(
    ("address", "node_ips", "remote"),
    [
        (None, ["10.0.0.5"], False),  # the local Ray the study starts itself
        ("127.0.0.1:6379", ["192.0.2.2", "192.0.2.2"], False),  # head + worker on this machine (the tests' cluster)
        ("127.0.0.1:6379", ["127.0.0.1"], False),
        ("localhost:6379", ["127.0.0.1"], False),
        ("192.0.2.2:6379", ["192.0.2.2"], False),
        ("auto", ["192.0.2.2"], False),
        ("ray://127.0.0.1:10001", ["127.0.0.1"], False),
        ("[::1]:6379", ["::1"], False),
        ("127.0.0.1:6379", ["192.0.2.2", "10.0.0.7"], True),  # a worker on another machine
        ("auto", ["10.0.0.7"], True),
        ("ray://head.example.org:10001", ["127.0.0.1"], True),  # Ray Client to another machine
        ("10.0.0.5:6379", [], True),
    ],
)
def test_which_clusters_span_hosts(address: str | None, node_ips: list[str], remote: bool) -> None:
    assert spans_hosts(address, node_ips, HERE) is remote


def test_loopback_names() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.3.0.1") and is_loopback("::1") and is_loopback("LOCALHOST")
    assert not is_loopback("10.0.0.1") and not is_loopback("head") and not is_loopback("")
