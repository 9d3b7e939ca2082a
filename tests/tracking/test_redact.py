"""Keeping credentials out: secrets from the environment and registered ones, user:password in URIs,
secret-named keys of mappings.
"""

from __future__ import annotations

import os
import secrets

import pytest

from tracking.redact import (
    clean_mapping,
    find_secret,
    is_secret_name,
    redact,
    register_secret,
    secret_values,
)


def test_secret_filtering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_API_TOKEN", "tok-123456")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "abcdefgh")
    register_secret("generated-stack-secret")
    assert redact("a tok-123456 b abcdefgh c generated-stack-secret") == "a *** b *** c ***"
    assert redact("https://bob:pw@example.org/x") == "https://***@example.org/x"
    assert find_secret("…abcdefgh…") == "AWS_SECRET_ACCESS_KEY" and find_secret("clean") is None
    cleaned = clean_mapping({"db_password": "x", "lgeom.auth_token": "y", "lr": "0.1", "url": "s3://k:abcdefgh@h"})
    assert cleaned == {"lr": "0.1", "url": "s3://***@h"}
    assert os.environ["MY_API_TOKEN"] == "tok-123456"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("https://bob:pw@example.org/x", "https://***@example.org/x"),
        ("s3://AKIA:se%2Fcr+et@bucket/key", "s3://***@bucket/key"),
        ("postgresql+psycopg2://user:p%40ss@db:5432/mlflow", "postgresql+psycopg2://***@db:5432/mlflow"),
        ("http://token@host and ftp://a:b@c", "http://***@host and ftp://***@c"),
        ("http://host:5000/path?x=1", "http://host:5000/path?x=1"),
        ("mail bob@example.org", "mail bob@example.org"),
    ],
)
def test_user_info_in_uris_is_masked(text: str, masked: str) -> None:
    assert redact(text, environ={}) == masked


def test_secret_names() -> None:
    for name in (
        "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_TRACKING_PASSWORD",
        "github_token",
        "db.passwd",
        "MY_API_KEY",
        "ssh_private_key",
        "gcp_credentials",
        "passphrase",
        "AWS_ACCESS_KEY_ID",
    ):
        assert is_secret_name(name), name
    for name in ("lr", "MLFLOW_TRACKING_URI", "AWS_DEFAULT_REGION", "keyword", "model.depth"):
        assert not is_secret_name(name), name


def test_values_from_an_explicit_environment_longest_first() -> None:
    env = {"SHORT_TOKEN": "abcd", "LONG_TOKEN": "abcd-efgh", "TINY_SECRET": "abc", "PATH": "abcd-efgh-ijkl"}
    values = secret_values(env)
    assert list(values).index("abcd-efgh") < list(values).index("abcd")
    assert "abc" not in values and "abcd-efgh-ijkl" not in values
    assert values["abcd-efgh"] == "LONG_TOKEN"
    assert redact("x abcd-efgh y abcd", env) == "x *** y ***"  # the longer secret is masked whole


def test_registered_secrets_are_masked_and_named_but_short_ones_are_ignored() -> None:
    value = "registered-" + secrets.token_hex(8)
    register_secret(value)
    register_secret("abc")  # too short to tell from ordinary words
    register_secret("")
    assert (
        redact(f"pw={value}", environ={}) == "pw=***" and find_secret(f"..{value}..", environ={}) == "registered secret"
    )
    assert redact("abc", environ={}) == "abc"
