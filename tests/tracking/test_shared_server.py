"""The shared server's pieces that need no server: secrets file, permission names, the SCRAM verifier,
the auth config (no secrets in it) and the check that PostgreSQL's user can reach its data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest

from tracking import shared_server


def test_secrets_file_is_private_and_stable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    first = shared_server.load_or_create_secrets(tmp_path)
    path = tmp_path / shared_server.SECRETS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first["MLFLOW_AUTH_ADMIN_USERNAME"] == "admin" and len(first["MLFLOW_AUTH_ADMIN_PASSWORD"]) >= 12
    assert shared_server.load_or_create_secrets(tmp_path, create=False) == first
    assert shared_server.admin_credentials(tmp_path) == ("admin", first["MLFLOW_AUTH_ADMIN_PASSWORD"])
    with pytest.raises(shared_server.SharedServerError, match="expected .*shared.env"):
        shared_server.load_or_create_secrets(tmp_path / "none", create=False)


def test_admin_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "boss")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "short")
    with pytest.raises(shared_server.SharedServerError, match="expected at least 12 characters, got 5"):
        shared_server.load_or_create_secrets(tmp_path)
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "a-long-enough-password")
    assert shared_server.load_or_create_secrets(tmp_path)["MLFLOW_AUTH_ADMIN_USERNAME"] == "boss"
    assert shared_server.admin_credentials(tmp_path) == ("boss", "a-long-enough-password")


def test_auth_config_has_no_secret(tmp_path: Path) -> None:
    values = shared_server.load_or_create_secrets(tmp_path)
    text = shared_server.write_auth_config(tmp_path, 5555).read_text()
    assert "postgresql+psycopg2://mlflow@127.0.0.1:5555/mlflow_auth" in text
    assert all(v not in text for k, v in values.items() if k != "MLFLOW_AUTH_ADMIN_USERNAME")
    env = shared_server.server_env(tmp_path, 5555, values)
    assert env["PGPASSWORD"] == values["LGEOM_PG_PASSWORD"] and env["MLFLOW_AUTH_CONFIG_PATH"].endswith(
        "basic_auth.ini"
    )


def test_permission_names() -> None:
    assert shared_server._check_permission("edit") == "EDIT"
    with pytest.raises(
        shared_server.SharedServerError, match="expected one of READ, USE, EDIT, MANAGE, NO_PERMISSIONS, got 'WRITE'"
    ):
        shared_server._check_permission("WRITE")


def test_scram_verifier_matches_rfc_7677() -> None:
    verifier = shared_server._scram_verifier("pencil", iterations=4096)
    head, keys = verifier.split("$", 1)[1].split("$")
    iterations, salt = head.split(":")
    stored, server = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", base64.b64decode(salt), int(iterations))
    assert stored == hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    assert server == hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert "pencil" not in verifier


@pytest.mark.skipif(os.geteuid() != 0, reason="the check applies when root runs PostgreSQL as another user")
def test_unreachable_state_dir_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    (locked / "state").mkdir(parents=True)
    os.chmod(locked, 0o700)
    with pytest.raises(shared_server.SharedServerError, match=rf"searchable by it, got {locked} \(mode 0700\)"):
        shared_server._check_searchable(locked / "state", 65534, 65534, "nobody")
