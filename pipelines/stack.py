"""Steps ``up`` / ``down``: the local SeaweedFS S3 + MLflow server stack on loopback.

    lgeom up      # start (or report the running stack); prints the tracking URI
    lgeom down    # stop it (data, logs and generated credentials stay in .lgeom/)

State lives in ``.lgeom/stack.json`` (pids, ports, URIs); generated S3 credentials in
``.lgeom/credentials.env`` (mode 0600, never printed). ``lgeom down; lgeom up`` comes back on the same ports
and data (``.lgeom/ports.json``), so running clients keep their tracking URI; ``lgeom up --new-ports``
picks new ones. See ``tracking.local_stack``.
"""

from __future__ import annotations

import sys
from typing import Any

from tracking.local_stack import (
    DEFAULT_BUCKET,
    StackError,
    StackInfo,
    read_state,
    stack_alive,
    start_stack,
    stop_stack,
)


def add_arguments(parser: Any, step: str) -> None:
    """``--state-dir`` for both; ``--bucket`` and ``--timeout`` for ``up``."""
    parser.add_argument(
        "--state-dir", default=".lgeom", help="folder for data, logs, credentials and stack.json (default .lgeom)"
    )
    if step == "up":
        parser.add_argument("--bucket", default=DEFAULT_BUCKET, help=f"artifact bucket (default {DEFAULT_BUCKET})")
        parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the servers (default 90)")
        parser.add_argument(
            "--new-ports",
            action="store_true",
            help="start on new free ports instead of those of the last start (recorded in ports.json)",
        )


def describe(info: StackInfo, *, already: bool = False) -> str:
    """What ``lgeom up`` prints: where the stack runs and how to point clients at it (no secrets)."""
    state = "already running" if already else "running"
    return "\n".join(
        [
            f"local stack {state} (SeaweedFS S3 + MLflow server, loopback only)",
            f"  MLflow tracking URI / UI: {info.tracking_uri}",
            f"  S3 endpoint:              {info.s3_endpoint} "
            f"(artifacts in {info.artifacts_destination}, proxied by the server)",
            "point clients at it:",
            f"  export MLFLOW_TRACKING_URI={info.tracking_uri}",
            "direct S3 access (boto3, aws cli): "
            f"export MLFLOW_S3_ENDPOINT_URL={info.s3_endpoint} and the credentials in {info.credentials_file} "
            "(or your AWS_* variables if they were set at 'lgeom up')",
            f"state: {info.state_dir}/stack.json   stop: lgeom down",
        ]
    )


def up(state_dir: str, *, bucket: str = DEFAULT_BUCKET, timeout: float = 90.0, new_ports: bool = False) -> StackInfo:
    """Start the stack unless one recorded in ``state_dir`` is running; prints where it is. A restart comes
    back on the ports (and data) of the last start unless ``new_ports``.
    """
    existing = read_state(state_dir)
    if existing is not None and stack_alive(existing):
        print(describe(existing, already=True))
        return existing
    if existing is not None:
        stop_stack(existing)  # stale state: a component died; clean up before starting anew
    info = start_stack(state_dir, bucket=bucket, startup_timeout=timeout, new_ports=new_ports)
    print(describe(info))
    return info


def down(state_dir: str) -> bool:
    """Stop the stack recorded in ``state_dir``; prints what happened."""
    stopped = stop_stack(state_dir)
    print("local stack stopped" if stopped else f"no local stack recorded in {state_dir}")
    return stopped


def cli(cfg: Any, args: Any) -> int:
    """``lgeom up`` / ``lgeom down``: exit 0 on success, 1 when a server could not be started or stopped."""
    try:
        if args.step == "up":
            up(args.state_dir, bucket=args.bucket, timeout=args.timeout, new_ports=args.new_ports)
        else:
            down(args.state_dir)
    except StackError as err:
        print(f"lgeom {args.step}: failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from pipelines.cli import main as cli_main

    sys.exit(cli_main(sys.argv[1:] or ["up"]))
