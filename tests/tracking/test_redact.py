"""Keeping credentials out: secrets from the environment and registered ones, user:password in URIs,
secret-named keys of mappings."""

from __future__ import annotations

import os

import pytest

from tracking.redact import clean_mapping, find_secret, redact, register_secret


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
