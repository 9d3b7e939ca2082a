"""Keeping credentials out of params, tags, notes and artifacts.

A value is secret when it equals (or contains) the value of an environment variable whose name marks it
as a credential (``AWS_SECRET_ACCESS_KEY``, ``MLFLOW_TRACKING_PASSWORD``, anything with ``SECRET``,
``TOKEN``, ``PASSWORD`` ... in its name), or a value registered with :func:`register_secret` (the local
stack registers the credentials it generates). Keys that name a credential are dropped outright, and the
user-info part of URLs (``https://user:pass@host``) is masked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE_KEY|API_KEY|ACCESS_KEY", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/@\s:]+(?::[^/@\s]*)?)@")
# Shorter values would mask ordinary words and numbers; real credentials are longer.
_MIN_SECRET_LEN = 4
_REGISTERED: set[str] = set()


def is_secret_name(name: str) -> bool:
    """Whether a parameter / tag / environment variable name marks a credential."""
    return bool(_SECRET_NAME.search(name))


def register_secret(value: str) -> None:
    """Treat ``value`` as a secret in this process from now on (e.g. generated stack credentials)."""
    if value and len(value) >= _MIN_SECRET_LEN:
        _REGISTERED.add(value)


def secret_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{value: name}`` of every secret known to this process: credential-named environment variables
    and registered values (longest first, so that a secret containing another is masked whole).
    """
    env = os.environ if environ is None else environ
    found = {v: k for k, v in env.items() if is_secret_name(k) and v and len(v) >= _MIN_SECRET_LEN}
    for v in _REGISTERED:
        found.setdefault(v, "registered secret")
    return dict(sorted(found.items(), key=lambda kv: -len(kv[0])))


def find_secret(text: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The *name* of the first secret whose value occurs in ``text`` (never the value), or ``None``."""
    for value, name in secret_values(environ).items():
        if value in text:
            return name
    return None


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret value replaced by ``***`` and URL credentials masked."""
    out = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", str(text))
    for value in secret_values(environ):
        out = out.replace(value, MASK)
    return out


def clean_mapping(values: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Stringified ``values`` without credential-named keys and with secret values masked
    (for MLflow params and tags).
    """
    return {str(k): redact(str(v), environ) for k, v in values.items() if not is_secret_name(str(k))}
