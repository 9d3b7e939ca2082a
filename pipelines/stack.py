"""Steps ``up`` / ``down`` / ``user``: the local SeaweedFS S3 + MLflow server stack on loopback.

    lgeom up            # start (or report the running stack); prints the tracking URI
    lgeom up --shared   # the shared server: + PostgreSQL backend store + MLflow basic-auth (users)
    lgeom user add NAME --permission EDIT --experiment STUDY   # password from $LGEOM_USER_PASSWORD
    lgeom down          # stop it (data, logs and generated credentials stay in .lgeom/)

State lives in ``.lgeom/stack.json`` (pids, ports, URIs); generated S3 credentials in
``.lgeom/credentials.env`` (mode 0600, never printed). ``lgeom down; lgeom up`` comes back on the same ports
and data (``.lgeom/ports.json``), so running clients keep their tracking URI; ``lgeom up --new-ports``
picks new ones. The shared server's secrets (Postgres role password, admin password, Flask key) are in
``.lgeom/shared.env`` (0600, never printed). See ``tracking.local_stack`` and ``tracking.shared_server``.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

from tracking import shared_server
from tracking.local_stack import (
    DEFAULT_BUCKET,
    StackError,
    StackInfo,
    read_state,
    stack_alive,
    start_stack,
    stop_stack,
)

PASSWORD_ENV = "LGEOM_USER_PASSWORD"


def add_arguments(parser: Any, step: str) -> None:
    """``--state-dir`` for all; ``--bucket``, ``--timeout``, ``--new-ports``, ``--shared`` for ``up``;
    ``add NAME --permission --experiment`` for ``user``.
    """
    parser.add_argument(
        "--state-dir", default=".lgeom", help="folder for data, logs, credentials and stack.json (default .lgeom)"
    )
    if step == "user":
        parser.add_argument("action", choices=["add"], help="add: create the user (if new) and grant permissions")
        parser.add_argument("name", help="the user's name")
        parser.add_argument(
            "--permission", default=None, help="READ, USE, EDIT, MANAGE or NO_PERMISSIONS on each --experiment"
        )
        parser.add_argument(
            "--experiment",
            action="append",
            default=[],
            help="experiment name or id (repeatable; a missing name is created)",
        )
    if step == "up":
        parser.add_argument("--bucket", default=DEFAULT_BUCKET, help=f"artifact bucket (default {DEFAULT_BUCKET})")
        parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the servers (default 90)")
        parser.add_argument(
            "--new-ports",
            action="store_true",
            help="start on new free ports instead of those of the last start (recorded in ports.json)",
        )
        parser.add_argument(
            "--shared",
            action="store_true",
            help="shared server: PostgreSQL backend store + MLflow basic-auth (admin and per-user accounts)",
        )


def describe(info: StackInfo, *, already: bool = False) -> str:
    """What ``lgeom up`` prints: where the stack runs and how to point clients at it (no secrets)."""
    state = "already running" if already else "running"
    kind = (
        "SeaweedFS S3 + PostgreSQL + MLflow server with basic auth" if info.shared else "SeaweedFS S3 + MLflow server"
    )
    auth = (
        [
            f"  backend store:            {info.postgres_uri} (password in {info.state_dir}/shared.env)",
            (
                "clients authenticate with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD; the admin's are in "
                f"{info.state_dir}/shared.env; add users with: {PASSWORD_ENV}=... "
                "lgeom user add NAME --permission EDIT --experiment STUDY"
            ),
        ]
        if info.shared
        else []
    )
    return "\n".join(
        [
            f"local stack {state} ({kind}, loopback only)",
            f"  MLflow tracking URI / UI: {info.tracking_uri}",
            f"  S3 endpoint:              {info.s3_endpoint} "
            f"(artifacts in {info.artifacts_destination}, proxied by the server)",
            "point clients at it:",
            f"  export MLFLOW_TRACKING_URI={info.tracking_uri}",
            *auth,
            (
                "direct S3 access (boto3, aws cli): "
                f"export MLFLOW_S3_ENDPOINT_URL={info.s3_endpoint} and the credentials in {info.credentials_file} "
                "(or your AWS_* variables if they were set at 'lgeom up')"
            ),
            f"state: {info.state_dir}/stack.json   stop: lgeom down",
        ]
    )


def up(
    state_dir: str,
    *,
    bucket: str = DEFAULT_BUCKET,
    timeout: float = 90.0,
    new_ports: bool = False,
    shared: bool = False,
) -> StackInfo:
    """Start the stack unless one recorded in ``state_dir`` is running; prints where it is. A restart comes
    back on the ports (and data) of the last start unless ``new_ports``.

    Raises:
        StackError: a running stack is of the other kind (shared or not), or a start failed.
    """
    existing = read_state(state_dir)
    if existing is not None and stack_alive(existing):
        if existing.shared != shared:
            want, got = ("shared", "unshared") if shared else ("unshared", "shared")
            raise StackError(
                f"local stack in {state_dir}: expected a {want} stack, got a {got} one running (run 'lgeom down' first)"
            )
        print(describe(existing, already=True))
        return existing
    if existing is not None:
        stop_stack(existing)  # stale state: a component died; clean up before starting anew
    info = start_stack(state_dir, bucket=bucket, startup_timeout=timeout, new_ports=new_ports, shared=shared)
    print(describe(info))
    return info


def down(state_dir: str) -> bool:
    """Stop the stack recorded in ``state_dir``; prints what happened."""
    stopped = stop_stack(state_dir)
    print("local stack stopped" if stopped else f"no local stack recorded in {state_dir}")
    return stopped


def user_add(
    state_dir: str, name: str, *, permission: str | None, experiments: list[str], password: str | None = None
) -> None:
    """Create user ``name`` on the running shared stack (password from ``password``, else
    ``$LGEOM_USER_PASSWORD``, else asked on the terminal; never printed) and grant ``permission`` on each
    experiment. Acts as the admin (credentials from the stack's ``shared.env``).

    Raises:
        StackError: no shared stack runs, no password could be had, or the server refused.
    """
    info = read_state(state_dir)
    if info is None or not stack_alive(info):
        raise StackError(
            f"lgeom user: expected a running shared stack in {state_dir}, got none (start it with 'lgeom up --shared')"
        )
    admin = info.admin_credentials()
    if experiments and not permission:
        raise StackError("lgeom user add: expected --permission with --experiment, got none")
    if permission and not experiments:
        raise StackError("lgeom user add: expected --experiment with --permission, got none")
    if not shared_server.user_exists(info.tracking_uri, admin, name):
        password = password or os.environ.get(PASSWORD_ENV)
        if not password and sys.stdin.isatty():
            password = getpass.getpass(f"password for {name} (at least 12 characters): ")
        if not password:
            raise StackError(
                f"lgeom user add {name}: expected a password in ${PASSWORD_ENV} (or typed on a terminal), got none"
            )
        shared_server.add_user(info.tracking_uri, admin, name, password)
        print(f"user {name} created")
    else:
        print(f"user {name} exists")
    for exp in experiments:
        exp_id = shared_server.grant_permission(info.tracking_uri, admin, name, exp, permission or "")
        print(f"user {name}: {permission.upper() if permission else ''} on experiment {exp} (id {exp_id})")


def cli(cfg: Any, args: Any) -> int:
    """``lgeom up`` / ``down`` / ``user``: exit 0 on success, 1 when a server could not be started, stopped or
    asked.
    """
    try:
        if args.step == "up":
            up(args.state_dir, bucket=args.bucket, timeout=args.timeout, new_ports=args.new_ports, shared=args.shared)
        elif args.step == "user":
            user_add(args.state_dir, args.name, permission=args.permission, experiments=args.experiment)
        else:
            down(args.state_dir)
    except (StackError, shared_server.SharedServerError) as err:
        print(f"lgeom {args.step}: failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from pipelines.cli import main as cli_main

    sys.exit(cli_main(sys.argv[1:] or ["up"]))
