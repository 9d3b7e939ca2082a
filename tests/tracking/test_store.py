"""Resolving the store (embedded default, server and bad URIs) and retrying transient errors only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracking.store import RetryPolicy, is_transient, resolve_store, with_retries


def test_embedded_default_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    store = resolve_store()
    assert store.mode == "embedded" and store.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert store.artifact_root == (tmp_path.resolve() / "mlruns").as_uri()
    rel = resolve_store("sqlite:///sub/x.db")
    assert rel.tracking_uri == f"sqlite:///{tmp_path.resolve()}/sub/x.db"


def test_server_and_bad_uris(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000/")
    assert resolve_store().tracking_uri == "http://127.0.0.1:5000" and resolve_store().mode == "server"
    assert resolve_store("postgresql://u@h/db").mode == "database"
    with pytest.raises(ValueError, match=r"tracking URI: expected http\(s\)://host:port, .* got 'ftp://\*\*\*@host'"):
        resolve_store("ftp://user:pw@host")


def test_retries_transient_errors_only() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("connection refused")
        return "ok"

    fast = RetryPolicy(attempts=4, initial_delay=0.01, max_delay=0.02)
    assert with_retries(flaky, what="flaky", policy=fast) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(ValueError, match="bad"):
        with_retries(lambda: calls.append(1) or (_ for _ in ()).throw(ValueError("bad")), what="bad", policy=fast)
    assert len(calls) == 1
    with pytest.raises(ConnectionRefusedError) as info:
        with_retries(lambda: (_ for _ in ()).throw(ConnectionRefusedError("down")), what="uploading x", policy=fast)
    assert "uploading x: gave up after 4 attempt(s)" in info.value.__notes__[0]
    assert is_transient(TimeoutError()) and not is_transient(KeyError("x"))
