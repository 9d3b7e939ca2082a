"""Tracking load: 16 concurrent tiny trials against four MLflow stores, side by side in one run.

Each trial (a thread) creates a run, logs 3 params, ``--metrics`` metric values with steps (one request
each), a small text artifact and a small state dict, and ends its run (``tracking.loadgen``). Stores:

* **shared server** — ``lgeom up --shared``: PostgreSQL backend store, MLflow basic-auth (a user with her
  own password), SeaweedFS S3 with proxied artifacts;
* **PostgreSQL server, no auth** — the same without the basic-auth app (separates the database's cost from
  that of authentication);
* **sqlite server** — ``lgeom up``: the same MLflow server and S3 without auth, sqlite backend store;
* **embedded sqlite** — no server: the client writes ``mlflow.db`` and local artifact files itself.

Reported per store: requests/s, runs/s, p50 and p99 request latency, and whether everything was read back
(``tracking.loadgen.verify``). Servers run on loopback in temp folders and are stopped and removed at the end.

    PYTHONPATH=. python3 bench/tracking_load.py [--trials 16] [--metrics 50] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import statistics
import tempfile
import uuid
from pathlib import Path

from tracking.loadgen import LoadResult, run_load, verify


def _row(name: str, results: list[LoadResult], problems: int) -> str:
    req = statistics.median(r.requests_per_s for r in results)
    runs = statistics.median(r.runs_per_s for r in results)
    lat = LoadResult(experiment_id="", latencies=[x for r in results for x in r.latencies])
    return (
        f"| {name} | {req:.1f} | {runs:.2f} | {lat.percentile(50) * 1e3:.0f} | {lat.percentile(99) * 1e3:.0f} | "
        f"{'none lost' if problems == 0 else f'{problems} problems'} |"
    )


def main() -> None:
    """Run the four stores one after the other and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--metrics", type=int, default=50)
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat each store this many times (median throughput, pooled latencies)"
    )
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        os.environ.pop(var, None)
    from tracking import shared_server
    from tracking.local_stack import start_stack, stop_stack

    base = Path(tempfile.mkdtemp(prefix="lgeom-bench-load-"))
    os.chmod(base, 0o711)  # PostgreSQL runs as an unprivileged user when we are root
    rows = []
    try:
        stores: list[tuple[str, str, dict[str, str], str | None]] = []
        shared = start_stack(base / "shared", shared=True)
        password = secrets.token_urlsafe(18)
        shared_server.add_user(shared.tracking_uri, shared.admin_credentials(), "bench", password)
        stores.append(
            (
                "shared server (PostgreSQL, basic auth)",
                shared.tracking_uri,
                {"MLFLOW_TRACKING_USERNAME": "bench", "MLFLOW_TRACKING_PASSWORD": password},
                None,
            )
        )
        noauth = start_stack(base / "noauth", shared=True, auth=False)
        stores.append(("PostgreSQL server (no auth)", noauth.tracking_uri, {}, None))
        plain = start_stack(base / "plain")
        stores.append(("sqlite server (no auth)", plain.tracking_uri, {}, None))
        stores.append(
            (
                "embedded sqlite",
                f"sqlite:///{base / 'embedded' / 'mlflow.db'}",
                {},
                (base / "embedded" / "artifacts").as_uri(),
            )
        )
        (base / "embedded").mkdir()
        results: dict[str, list[LoadResult]] = {name: [] for name, *_ in stores}
        problems = dict.fromkeys(results, 0)
        for round_ in range(args.rounds):  # rounds interleave the stores, so that a busy spell hits all of them
            for name, uri, env, artifacts in stores:
                os.environ.update(env)
                try:
                    r = run_load(
                        uri,
                        f"load-{uuid.uuid4().hex[:6]}",
                        trials=args.trials,
                        metrics=args.metrics,
                        artifact_location=None if artifacts is None else f"{artifacts}/{round_}",
                    )
                    problems[name] += len(verify(uri, r, trials=args.trials, metrics=args.metrics))
                finally:
                    for var in env:
                        os.environ.pop(var, None)
                results[name].append(r)
                print(
                    f"round {round_ + 1} {name}: {r.requests_per_s:.1f} req/s, p99 {r.percentile(99) * 1e3:.0f} ms",
                    flush=True,
                )
        rows = [_row(name, results[name], problems[name]) for name in results]
    finally:
        for sub in ("shared", "noauth", "plain"):
            try:
                stop_stack(base / sub)
            except Exception as err:  # noqa: BLE001 - keep stopping the others
                print(f"stopping {sub}: {err}")
        shutil.rmtree(base, ignore_errors=True)
    requests_per_trial = 1 + 3 + args.metrics + 2 + 1
    print(
        f"\n{args.trials} concurrent trials x {requests_per_trial} requests ({args.metrics} metrics), "
        f"{args.rounds} round(s); "
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}\n"
    )
    print("| store | requests/s | runs/s | p50 latency (ms) | p99 latency (ms) | read back |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
