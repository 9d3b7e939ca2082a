"""The shared tracking server: PostgreSQL backend store + MLflow's basic-auth app + SeaweedFS S3, on loopback.

``tracking.local_stack.start_stack(state_dir, shared=True)`` (``lgeom up --shared``) uses the pieces here:

* **PostgreSQL** (Debian's ``postgresql``; ``initdb`` / ``postgres`` from ``/usr/lib/postgresql/<v>/bin``)
  with its own data folder ``<state_dir>/postgres/data``, its unix socket in ``<state_dir>/postgres/run``
  and TCP only on ``127.0.0.1:<port>``. As root the server runs as the unprivileged ``postgres`` user
  (``subprocess.Popen(user=..., group=...)``: no wrapper process, the pid is the postmaster). Host logins
  need the role's password (``scram-sha-256``); the unix socket (a 0700 folder of the server's user) is
  trusted for the bootstrap superuser only. Two databases: ``mlflow`` (tracking) and ``mlflow_auth``
  (users and permissions of the basic-auth app), both owned by role ``mlflow``.
* **Secrets** (``<state_dir>/shared.env``, mode 0600, never printed): the Postgres role password, the MLflow
  admin's name and password (``MLFLOW_AUTH_ADMIN_USERNAME`` / ``MLFLOW_AUTH_ADMIN_PASSWORD`` from the
  environment when set at the first start, else generated) and the Flask session key. The MLflow server
  gets the database password through libpq's ``PGPASSWORD`` in its environment, so it is in no command
  line (``/proc/<pid>/cmdline`` is world-readable), no URI and no config file: the backend store URI is
  ``postgresql://mlflow@127.0.0.1:<port>/mlflow`` and the auth config ``<state_dir>/basic_auth.ini``
  holds no secret.
* **Users**: :func:`add_user` / :func:`grant_permission` call the basic-auth REST API
  (``POST /api/2.0/mlflow/users/create``, ``POST /api/3.0/mlflow/users/permissions/grant``) as the admin.
  Clients authenticate with ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (never in the URI).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracking.processes import process_alive
from tracking.redact import redact, register_secret

SECRETS_FILE = "shared.env"
AUTH_CONFIG_FILE = "basic_auth.ini"
PG_ROLE = "mlflow"
TRACKING_DB = "mlflow"
AUTH_DB = "mlflow_auth"
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")
DEFAULT_PERMISSION = "READ"
AUTH_CACHE_TTL_S = 60
_SECRET_KEYS = (
    "LGEOM_PG_PASSWORD",
    "MLFLOW_AUTH_ADMIN_USERNAME",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)


class SharedServerError(RuntimeError):
    """PostgreSQL or the basic-auth server could not be set up, started, reached or used."""


# --- PostgreSQL binaries and user ---------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """The folder with ``initdb`` and ``postgres``: ``$LGEOM_PG_BIN`` when set, else the newest
    ``/usr/lib/postgresql/<version>/bin``, else the folder of ``initdb`` on PATH; ``None`` when absent.
    """
    env = os.environ.get("LGEOM_PG_BIN")
    candidates = [Path(env)] if env else []
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    candidates += [Path(p) for p in reversed(versions)]
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    return None


def _require_bin_dir() -> Path:
    folder = postgres_bin_dir()
    if folder is None:
        raise SharedServerError(
            "PostgreSQL: expected initdb and postgres in /usr/lib/postgresql/<version>/bin, $LGEOM_PG_BIN or PATH, "
            "got none (install it with: apt-get install -y postgresql)"
        )
    return folder


def server_user() -> tuple[int, int, str] | None:
    """``(uid, gid, name)`` to run PostgreSQL as when this process is root (it refuses to run as root):
    ``$LGEOM_PG_USER`` or ``postgres``. ``None`` when not root (it runs as the current user).
    """
    if os.geteuid() != 0:
        return None
    name = os.environ.get("LGEOM_PG_USER", "postgres")
    try:
        entry = pwd.getpwnam(name)
    except KeyError as err:
        raise SharedServerError(
            f"PostgreSQL as root: expected an unprivileged user {name!r} to run the server as, got no such user "
            f"(apt-get install postgresql creates 'postgres'; or set LGEOM_PG_USER)"
        ) from err
    return entry.pw_uid, entry.pw_gid, name


def _check_searchable(path: Path, uid: int, gid: int, name: str) -> None:
    """Every folder above ``path`` must let ``uid`` through (x bit), or PostgreSQL cannot reach its data."""
    for parent in [path, *path.parents]:
        try:
            st = parent.stat()
        except OSError:
            continue
        mode = st.st_mode
        ok = (
            (st.st_uid == uid and mode & stat.S_IXUSR)
            or (st.st_gid == gid and mode & stat.S_IXGRP)
            or mode & stat.S_IXOTH
        )
        if not ok:
            raise SharedServerError(
                f"PostgreSQL runs as user {name!r}: expected every folder above its data to be searchable by it, "
                f"got {parent} (mode {stat.S_IMODE(mode):04o}); put the state dir elsewhere or 'chmod o+x {parent}'"
            )


def preflight(state_dir: Path) -> None:
    """Fail before anything starts when PostgreSQL is missing or (as root) its user cannot reach
    ``state_dir``.
    """
    _require_bin_dir()
    user = server_user()
    if user is not None:
        _check_searchable(state_dir, user[0], user[1], user[2])


# --- secrets ------------------------------------------------------------------------------------------


def load_or_create_secrets(state_dir: Path, *, create: bool = True) -> dict[str, str]:
    """The shared server's secrets from ``<state_dir>/shared.env`` (0600), created on first use: the admin
    name and password from ``MLFLOW_AUTH_ADMIN_USERNAME`` / ``MLFLOW_AUTH_ADMIN_PASSWORD`` when set, other
    values random. Every value is registered with :func:`tracking.redact.register_secret`.

    Raises:
        SharedServerError: the file is missing (``create=False``) or lacks a value.
    """
    path = state_dir / SECRETS_FILE
    if path.exists():
        values = dict(
            line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")
        )
        missing = [k for k in _SECRET_KEYS if not values.get(k)]
        if missing:
            raise SharedServerError(
                f"{path}: expected lines {', '.join(k + '=...' for k in _SECRET_KEYS)}, "
                f"got none for {', '.join(missing)}"
            )
    else:
        if not create:
            raise SharedServerError(
                f"shared server secrets: expected {path} (written by 'lgeom up --shared'), got none"
            )
        admin_pw = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") or secrets.token_urlsafe(24)
        if len(admin_pw) < 12:
            raise SharedServerError(f"MLFLOW_AUTH_ADMIN_PASSWORD: expected at least 12 characters, got {len(admin_pw)}")
        values = {
            "LGEOM_PG_PASSWORD": secrets.token_urlsafe(24),
            "MLFLOW_AUTH_ADMIN_USERNAME": os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin",
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin_pw,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
            or secrets.token_urlsafe(32),
        }
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# secrets of the shared lgeom tracking server (generated; keep private)\n")
            fh.writelines(f"{k}={values[k]}\n" for k in _SECRET_KEYS)
    for key in ("LGEOM_PG_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        register_secret(values[key])
    return {k: values[k] for k in _SECRET_KEYS}


def admin_credentials(state_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """``(admin username, admin password)`` of the shared server in ``state_dir``."""
    values = load_or_create_secrets(Path(state_dir).resolve(), create=False)
    return values["MLFLOW_AUTH_ADMIN_USERNAME"], values["MLFLOW_AUTH_ADMIN_PASSWORD"]


# --- PostgreSQL -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresPaths:
    """Where PostgreSQL keeps its data, socket and log under the state dir."""

    root: Path

    @property
    def data(self) -> Path:
        """The cluster's data folder (``initdb -D``)."""
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        """The folder of the unix socket (``-k``)."""
        return self.root / "run"


def _as_server_user(user: tuple[int, int, str] | None) -> dict[str, Any]:
    if user is None:
        return {}
    return {"user": user[0], "group": user[1], "extra_groups": []}


def _pg_env(user: tuple[int, int, str] | None, base: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("PG")}
    env["LC_ALL"] = env["LANG"] = "C.UTF-8"
    if user is not None:
        env["HOME"] = pwd.getpwuid(user[0]).pw_dir or "/"
        env["USER"] = env["LOGNAME"] = user[2]
    return env


def init_cluster(paths: PostgresPaths, base_env: Mapping[str, str]) -> bool:
    """``initdb`` the data folder unless it holds a cluster; returns whether it was created.

    Host (TCP) logins need a password (``scram-sha-256``); unix-socket logins are trusted, the socket
    folder being private to the server's user (and root).
    """
    user = server_user()
    paths.root.mkdir(parents=True, exist_ok=True)
    for folder in (paths.root, paths.socket_dir):
        folder.mkdir(exist_ok=True)
        os.chmod(folder, 0o700)
        if user is not None:
            os.chown(folder, user[0], user[1])
    if user is not None:
        _check_searchable(paths.root, user[0], user[1], user[2])
    if (paths.data / "PG_VERSION").exists():
        return False
    bin_dir = _require_bin_dir()
    cmd = [
        str(bin_dir / "initdb"),
        "-D",
        str(paths.data),
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--locale=C.UTF-8",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--no-instructions",
    ]
    res = subprocess.run(
        cmd,
        env=_pg_env(user, base_env),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=paths.root,
        **_as_server_user(user),
    )
    if res.returncode != 0:
        raise SharedServerError(
            f"initdb {paths.data}: expected exit status 0, got {res.returncode}: {redact(res.stderr.strip()[-1500:])}"
        )
    # loopback only, whatever the defaults say
    with open(paths.data / "postgresql.conf", "a") as fh:
        fh.write("\n# lgeom: loopback only\nlisten_addresses = '127.0.0.1'\npassword_encryption = 'scram-sha-256'\n")
    return True


def start_postgres(paths: PostgresPaths, port: int, log: Path, base_env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start the postmaster on ``127.0.0.1:port`` (socket in ``paths.socket_dir``) in its own process group."""
    user = server_user()
    bin_dir = _require_bin_dir()
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(bin_dir / "postgres"),
        "-D",
        str(paths.data),
        "-k",
        str(paths.socket_dir),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with open(log, "ab") as fh:
        return subprocess.Popen(
            cmd,
            env=_pg_env(user, base_env),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=paths.root,
            start_new_session=True,
            **_as_server_user(user),
        )


def _connect_superuser(paths: PostgresPaths, port: int, dbname: str = "postgres") -> Any:
    import psycopg2

    return psycopg2.connect(host=str(paths.socket_dir), port=port, user="postgres", dbname=dbname, connect_timeout=3)


def wait_for_postgres(
    paths: PostgresPaths, port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Poll until the server accepts a connection on its socket."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SharedServerError(
                f"PostgreSQL exited with status {proc.returncode} while starting; log {log}:\n{_tail(log)}"
            )
        try:
            _connect_superuser(paths, port).close()
            return
        except Exception as err:  # noqa: BLE001 - any failure means "not ready yet"
            last = type(err).__name__
            time.sleep(0.25)
    raise SharedServerError(
        f"PostgreSQL on 127.0.0.1:{port}: expected a connection within {timeout:.0f} s, got {last}; "
        f"log {log}:\n{_tail(log)}"
    )


def ensure_databases(paths: PostgresPaths, port: int, password: str) -> None:
    """Create (or update the password of) role ``mlflow`` and its databases ``mlflow`` and ``mlflow_auth``.
    The password goes to Postgres as a SCRAM verifier computed here, so not even the server's statement
    log could see it in clear.
    """
    from psycopg2 import sql

    conn = _connect_superuser(paths, port)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            verifier = _scram_verifier(password)
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PG_ROLE,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(PG_ROLE), sql.Literal(verifier))
            )
            for db in (TRACKING_DB, AUTH_DB):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if not cur.fetchone():
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(PG_ROLE))
                    )
    finally:
        conn.close()


def _scram_verifier(password: str, iterations: int = 4096) -> str:
    """The ``SCRAM-SHA-256$...`` verifier PostgreSQL stores for ``password`` (RFC 5802 / 7677)."""
    import base64
    import hashlib
    import hmac

    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    salt_b64, stored_b64, server_b64 = (base64.b64encode(b).decode() for b in (salt, stored_key, server_key))
    return f"SCRAM-SHA-256${iterations}:{salt_b64}${stored_b64}:{server_b64}"


def stop_postgres(pid: int, start_ticks: int | None, *, timeout: float = 15.0) -> bool:
    """Fast shutdown (SIGINT to the postmaster: clients are disconnected, data flushed); returns whether it
    exited within ``timeout`` (the caller then ends the process group).
    """
    if not process_alive(pid, start_ticks):
        return True
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not process_alive(pid, start_ticks):
            return True
        time.sleep(0.1)
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return redact("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
    except OSError:
        return "(no log)"


# --- MLflow basic-auth ----------------------------------------------------------------------------------


def backend_store_uri(port: int, db: str = TRACKING_DB) -> str:
    """The database URI for MLflow, without password (libpq takes it from ``PGPASSWORD``), with the
    ``psycopg2`` driver named (SQLAlchemy would otherwise pick ``psycopg`` 3).
    """
    return f"postgresql+psycopg2://{PG_ROLE}@127.0.0.1:{port}/{db}"


def write_auth_config(state_dir: Path, pg_port: int, default_permission: str = DEFAULT_PERMISSION) -> Path:
    """``<state_dir>/basic_auth.ini`` for ``MLFLOW_AUTH_CONFIG_PATH`` (no secrets in it: the admin's
    password comes from the server's environment, the database password from ``PGPASSWORD``).
    """
    path = state_dir / AUTH_CONFIG_FILE
    path.write_text(
        "# MLflow basic-auth config of the shared lgeom server (written by 'lgeom up --shared'; no secrets)\n"
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = {backend_store_uri(pg_port, AUTH_DB)}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        "# Cache successful password checks for a minute: each check is a PBKDF2 hash (about a second of CPU on a\n"
        "# busy 2-core machine), which otherwise caps the server at a few requests/s. With one worker, password\n"
        "# changes made through the API take effect at once.\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
    )
    return path


def server_env(state_dir: Path, pg_port: int, values: Mapping[str, str]) -> dict[str, str]:
    """The MLflow server's extra environment for the basic-auth app and the Postgres store."""
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(state_dir / AUTH_CONFIG_FILE),
        "MLFLOW_AUTH_ADMIN_USERNAME": values["MLFLOW_AUTH_ADMIN_USERNAME"],
        "MLFLOW_AUTH_ADMIN_PASSWORD": values["MLFLOW_AUTH_ADMIN_PASSWORD"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": values["MLFLOW_FLASK_SERVER_SECRET_KEY"],
        "PGPASSWORD": values["LGEOM_PG_PASSWORD"],
        "PGCONNECT_TIMEOUT": "5",
    }


def _check_permission(permission: str) -> str:
    perm = permission.upper()
    if perm not in PERMISSIONS:
        raise SharedServerError(f"permission: expected one of {', '.join(PERMISSIONS)}, got {permission!r}")
    return perm


def _api(
    tracking_uri: str, method: str, path: str, auth: tuple[str, str], payload: Mapping[str, Any] | None = None
) -> Any:
    import requests

    url = f"{tracking_uri.rstrip('/')}{path}"
    try:
        r = requests.request(
            method,
            url,
            json=payload if method != "GET" else None,
            params=payload if method == "GET" else None,
            auth=auth,
            timeout=(3, 30),
        )
    except requests.RequestException as err:
        raise SharedServerError(
            f"{method} {path}: expected an answer from {tracking_uri}, got {type(err).__name__}"
        ) from err
    if r.status_code != 200:
        raise SharedServerError(f"{method} {path}: expected HTTP 200, got {r.status_code}: {redact(r.text[:300])}")
    return r.json() if r.content else {}


def user_exists(tracking_uri: str, admin: tuple[str, str], username: str) -> bool:
    """Whether the basic-auth app knows ``username``."""
    import requests

    r = requests.get(
        f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/users/get",
        params={"username": username},
        auth=admin,
        timeout=(3, 30),
    )
    if r.status_code == 200:
        return True
    if r.status_code == 404:
        return False
    raise SharedServerError(
        f"GET /api/2.0/mlflow/users/get: expected HTTP 200 or 404, got {r.status_code}: {redact(r.text[:300])}"
    )


def add_user(tracking_uri: str, admin: tuple[str, str], username: str, password: str) -> bool:
    """Create ``username`` (password at least 12 characters) unless it exists; returns whether it was made."""
    if not username or not username.strip():
        raise SharedServerError(f"user name: expected a non-empty name, got {username!r}")
    if len(password) < 12:
        raise SharedServerError(f"password of {username!r}: expected at least 12 characters, got {len(password)}")
    register_secret(password)
    if user_exists(tracking_uri, admin, username):
        return False
    _api(tracking_uri, "POST", "/api/2.0/mlflow/users/create", admin, {"username": username, "password": password})
    return True


def experiment_id(tracking_uri: str, admin: tuple[str, str], experiment: str, *, create: bool = True) -> str:
    """The id of ``experiment`` (an id or a name; a missing name is created as the admin when ``create``)."""
    import requests

    base = tracking_uri.rstrip("/")
    if experiment.isdigit():
        return experiment
    r = requests.get(
        f"{base}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": experiment},
        auth=admin,
        timeout=(3, 30),
    )
    if r.status_code == 200:
        return str(r.json()["experiment"]["experiment_id"])
    if r.status_code != 404 or not create:
        raise SharedServerError(
            f"experiment {experiment!r}: expected it to exist, got HTTP {r.status_code}: {redact(r.text[:300])}"
        )
    return str(_api(base, "POST", "/api/2.0/mlflow/experiments/create", admin, {"name": experiment})["experiment_id"])


def grant_permission(tracking_uri: str, admin: tuple[str, str], username: str, experiment: str, permission: str) -> str:
    """Give ``username`` ``permission`` (READ, USE, EDIT, MANAGE, NO_PERMISSIONS) on ``experiment`` (name or
    id; a missing name is created); returns the experiment id.
    """
    perm = _check_permission(permission)
    exp_id = experiment_id(tracking_uri, admin, experiment)
    _api(
        tracking_uri,
        "POST",
        "/api/3.0/mlflow/users/permissions/grant",
        admin,
        {"username": username, "resource_type": "experiment", "resource_id": exp_id, "permission": perm},
    )
    return exp_id
