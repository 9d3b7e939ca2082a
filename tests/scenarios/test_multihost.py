"""A study on a Ray cluster that spans hosts, with the tracking server on a third host: three network
namespaces on one bridge (:mod:`tests.scenarios.netns`) stand for three machines.

* ``track`` (10.213.7.1): an MLflow server (sqlite backend, proxied artifacts) listening on its own address,
  with that address as an allowed Host header;
* ``head`` (10.213.7.2): ``ray start --head`` (1 CPU, token authentication on) and the driver,
  ``lgeom study --address 10.213.7.2:6379``;
* ``worker`` (10.213.7.3): ``ray start --address 10.213.7.2:6379`` (1 CPU).

The study's trials run on both nodes and log to the server; once a trial on the worker has finished and
the next one there is RUNNING, every process of the worker host is killed: Ray Tune reschedules the lost
trial on the head (``study.max_failures``), and every cell ends FINISHED exactly once, with no run left
RUNNING. Needs root and iproute2 (skipped otherwise); every namespace and process is removed at the end,
and the lab's files too unless ``LGEOM_KEEP_LAB_FILES`` is set.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lgeom import names
from tests.scenarios.netns import NetnsLab, unavailable_reason

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MLFLOW_PORT, RAY_PORT = 5000, 6379
STUDY = "multihost-tiny"
# Four cells, two CPUs (one per node): each node runs two trials one after the other.
MATRIX = 'study.matrix={"model.width": [16], "train.optimizer": [sgd, adam], "train.lr": [0.02, 0.005]}'
OVERRIDES = [f"name={STUDY}", "train.epochs=4", "curve.epochs=2", "study.max_failures=2", MATRIX]

_why_not = unavailable_reason()
if _why_not is not None:
    pytestmark.append(pytest.mark.skip(reason=f"multi-host scenario: {_why_not}"))


@dataclass
class Cluster:
    """The lab, where its services listen, and the environment a Ray process of the cluster runs with."""

    lab: NetnsLab
    root: Path
    tracking_uri: str
    ray_address: str
    ray_env: dict[str, str]
    token: str

    def api(self, host: str, endpoint: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call the MLflow REST API ``endpoint`` from ``host``'s namespace; the decoded JSON answer.

        Raises:
            AssertionError: the server did not answer 200.
        """
        status, text = self.lab.http(host, f"{self.tracking_uri}/api/2.0/mlflow/{endpoint}", body)
        assert status == 200, f"{endpoint} from {host}: {status} {text[:500]}"
        return json.loads(text or "{}")

    def trial_runs(self, host: str = "head") -> list[dict[str, Any]]:
        """Every trial child run of the study (status and tags as dicts), read from ``host``."""
        try:
            exp = self.api(host, f"experiments/get-by-name?experiment_name={STUDY}")["experiment"]
        except AssertionError:
            return []
        runs: list[dict[str, Any]] = []
        token = None
        while True:
            page = self.api(
                host,
                "runs/search",
                {
                    "experiment_ids": [exp["experiment_id"]],
                    "max_results": 1000,
                    **({"page_token": token} if token else {}),
                },
            )
            for r in page.get("runs", []):
                tags = {t["key"]: t["value"] for t in r["data"].get("tags", [])}
                if tags.get(names.TAG_STAGE) == names.STAGE_TRIAL:
                    runs.append({"id": r["info"]["run_id"], "status": r["info"]["status"], "tags": tags})
            token = page.get("next_page_token")
            if not token:
                return runs


def _ray_start(cluster: Cluster, host: str, *extra: str) -> None:
    temp = cluster.root / f"ray-{host}"
    temp.mkdir()
    argv = [
        str(BIN / "ray"),
        "start",
        f"--node-ip-address={cluster.lab[host].ip}",
        "--num-cpus=1",
        "--num-gpus=0",
        f"--object-store-memory={100 * 1024**2}",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
        *extra,
    ]
    cluster.lab.run(host, argv, env=cluster.ray_env, timeout=180)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """The three hosts with the tracking server and the two-node Ray cluster up; all removed after."""
    root = Path(tempfile.mkdtemp(prefix="lgmh-", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    lab = NetnsLab(["track", "head", "worker"])
    try:
        lab.up()
        track = lab["track"]
        uri = f"http://{track.ip}:{MLFLOW_PORT}"
        server_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        with open(root / "mlflow-server.log", "w") as log:  # the server keeps its own copy of the descriptor
            server = lab.popen(
                "track",
                [
                    str(BIN / "mlflow"),
                    "server",
                    "--backend-store-uri",
                    f"sqlite:///{root / 'mlflow.db'}",
                    "--artifacts-destination",
                    str(root / "artifacts"),
                    "--serve-artifacts",
                    "--host",
                    track.ip,
                    "--port",
                    str(MLFLOW_PORT),
                    "--workers",
                    "1",
                    # clients on other hosts send Host: <this address>; MLflow answers 403 to a Host it does not allow
                    "--allowed-hosts",
                    f"{track.ip}:{MLFLOW_PORT},{track.ip}",
                ],
                env=server_env,
                cwd=root,
                stdout=log,
                stderr=log,
            )
        lab.wait_http("head", f"{uri}/health", timeout=120, proc=server, log=root / "mlflow-server.log")

        token = secrets.token_hex(32)
        token_file = root / "ray-auth-token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        ray_env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token_file),
            "RAY_USAGE_STATS_ENABLED": "0",
            # notice a lost node within ~5 s (default period 3 s): a killed raylet refuses the check at
            # once; the default 10 s timeout per check keeps a node slowed by a loaded machine alive
            "RAY_health_check_period_ms": "1000",
        }
        for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_TOKEN"):
            ray_env.pop(var, None)
        c = Cluster(lab, root, uri, f"{lab['head'].ip}:{RAY_PORT}", ray_env, token)
        _ray_start(c, "head", "--head", f"--port={RAY_PORT}", "--include-dashboard=false")
        _ray_start(c, "worker", f"--address={c.ray_address}")
        yield c
    finally:
        lab.close()
        if os.environ.get(
            "LGEOM_KEEP_LAB_FILES"
        ):  # logs of the server, the Ray nodes and the driver, for a post-mortem
            print(f"\nmulti-host lab files kept in {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


def test_lab_connects_its_hosts_and_removes_everything(tmp_path: Path) -> None:
    """The helper alone: hosts reach each other over the bridge, and closing ends even a process that
    ignores SIGTERM and deletes every namespace (no veth is left in this machine's namespace).
    """

    def listed() -> str:
        return subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True, timeout=30).stdout

    lab = NetnsLab(["a", "b"])
    with lab:
        server = lab.popen(
            "b",
            [sys.executable, "-m", "http.server", "8080", "--bind", lab["b"].ip, "--directory", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stubborn = lab.popen("a", ["sh", "-c", "trap '' TERM; sleep 300"])
        lab.wait_http("a", f"http://{lab['b'].ip}:8080/", timeout=30, proc=server)
        assert lab.http("a", "http://127.0.0.1:8080/")[0] == 0, "b's server must not answer on a's loopback"
        assert set(lab.host_pids("a")) >= {stubborn.pid} and lab.host_pids("b") == [server.pid]
        assert all(ns in listed() for ns in (lab["a"].netns, lab["b"].netns, lab.switch))
    assert stubborn.poll() is not None and server.poll() is not None
    assert lab.prefix not in listed()
    links = subprocess.run(["ip", "-o", "link"], check=False, capture_output=True, text=True, timeout=30).stdout
    assert lab.prefix not in links
    with pytest.raises(ValueError, match="distinct names"):
        NetnsLab(["a", "a"])


def _driver_env(cluster: Cluster, tracking_uri: str | None) -> dict[str, str]:
    env = {**cluster.ray_env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def test_embedded_store_is_refused_when_the_cluster_spans_hosts(cluster: Cluster) -> None:
    """Runs first, while both nodes are up: trials on the worker could not write the driver's sqlite file."""
    work = cluster.root / "embedded"
    work.mkdir()
    try:
        proc = cluster.lab.run(
            "head",
            [
                sys.executable,
                "-m",
                "pipelines.cli",
                "study",
                "--preset",
                "quick-tiny",
                "--address",
                cluster.ray_address,
                f"output_dir={work / 'outputs'}",
                f"name={STUDY}-embedded",
            ],
            env=_driver_env(cluster, None),
            cwd=work,
            timeout=240,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            "the study ran instead of refusing the embedded store: was the worker node declared dead? "
            f"(processes on the worker host: {cluster.lab.host_pids('worker')})"
        )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "MLFLOW_TRACKING_URI: expected an MLflow server that every Ray node can reach" in proc.stderr
    assert (
        f"its nodes {cluster.lab['head'].ip}, {cluster.lab['worker'].ip} are not all on this machine" in proc.stderr
        or f"its nodes {cluster.lab['worker'].ip}, {cluster.lab['head'].ip} are not all on this machine" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    if (work / "mlflow.db").exists():  # the study opens its store before it asks Ray where trials would run
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
        exp = client.get_experiment_by_name(f"{STUDY}-embedded")
        assert exp is None or not client.search_runs([exp.experiment_id]), "a refused study must not create runs"


@pytest.mark.timeout(900)  # a loaded 2-core machine: the default 600 s is tight for a 4-cell study on 2 nodes
def test_study_spans_hosts_and_survives_losing_a_worker(cluster: Cluster) -> None:
    lab, head_ip, worker_ip = cluster.lab, cluster.lab["head"].ip, cluster.lab["worker"].ip
    work = cluster.root / "driver"
    work.mkdir()
    env = _driver_env(cluster, cluster.tracking_uri)
    log_path = work / "study.log"
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        driver = lab.popen(
            "head",
            [
                sys.executable,
                "-m",
                "pipelines.cli",
                "study",
                "--preset",
                "quick-tiny",
                "--address",
                cluster.ray_address,
                f"output_dir={work / 'outputs'}",
                *OVERRIDES,
            ],
            env=env,
            cwd=work,
            stdout=log,
            stderr=log,
        )

    def output() -> str:
        return log_path.read_text(errors="replace")[-6000:]

    # Wait until the worker has finished one trial and is RUNNING the next one, then take the host down.
    killed_cell = None
    deadline = time.monotonic() + 360
    while killed_cell is None:
        assert driver.poll() is None, f"the study ended before the worker ran a second trial:\n{output()}"
        assert time.monotonic() < deadline, (
            f"no second trial on the worker within 360 s (its processes: {lab.host_pids('worker')}):\n{output()}"
        )
        on_worker = [r for r in cluster.trial_runs() if r["tags"].get(names.TAG_NODE_IP) == worker_ip]
        running = [r for r in on_worker if r["status"] == "RUNNING"]
        if running and any(r["status"] == "FINISHED" for r in on_worker):
            killed_cell = running[0]["tags"][names.TAG_CELL]
            t_kill = time.monotonic() - t0
            assert lab.kill_host("worker"), "the worker host had no processes"
        else:
            time.sleep(0.5)
    assert not lab.host_pids("worker")

    try:
        rc = driver.wait(timeout=420)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the study did not end within 420 s of the worker's loss:\n{output()}")
    t_end = time.monotonic() - t0
    text = log_path.read_text(errors="replace")
    assert rc == 0, text[-6000:]
    assert f"Ray: {cluster.ray_address} (2 node(s), 2 CPUs" in text

    runs = cluster.trial_runs()
    cells = sorted({r["tags"][names.TAG_CELL] for r in runs})
    assert len(cells) == 4, cells
    assert not [r for r in runs if r["status"] == "RUNNING"], "no run may be left RUNNING"
    finished = [r for r in runs if r["status"] == "FINISHED"]
    assert sorted(r["tags"][names.TAG_CELL] for r in finished) == cells, "every cell FINISHED exactly once"
    # the trials ran on both hosts and the lost one was redone on the head
    assert {r["tags"].get(names.TAG_NODE_IP) for r in finished} == {head_ip, worker_ip}
    lost = [r for r in runs if r["tags"][names.TAG_CELL] == killed_cell and r["status"] != "FINISHED"]
    assert len(lost) == 1 and lost[0]["status"] == "FAILED" and lost[0]["tags"].get(names.TAG_NODE_IP) == worker_ip
    redone = next(r for r in finished if r["tags"][names.TAG_CELL] == killed_cell)
    # closed by its retry when that started, not left RUNNING until the study's end
    assert lost[0]["tags"].get(names.TAG_ERROR) == f"lost attempt: superseded by the retry in run {redone['id']}"
    assert redone["tags"].get(names.TAG_NODE_IP) == head_ip
    # the parent run (the driver's) ended FINISHED on the server, read from the worker's side of the lab too
    exp = cluster.api("track", f"experiments/get-by-name?experiment_name={STUDY}")["experiment"]
    parents = [
        r
        for r in cluster.api(
            "track",
            "runs/search",
            {"experiment_ids": [exp["experiment_id"]], "filter": f"tags.`{names.TAG_STAGE}` = '{names.STAGE_STUDY}'"},
        )["runs"]
    ]
    assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
    parent_tags = {t["key"]: t["value"] for t in parents[0]["data"]["tags"]}
    assert parent_tags.get(names.TAG_NODE_IP) == head_ip, "the driver ran on the head node"
    # the Ray token stays out of Ray's logs and the study's output
    leaked = [
        str(p)
        for p in cluster.root.rglob("*")
        if p.is_file()
        and p.name != "ray-auth-token"
        and p.stat().st_size < 50_000_000
        and cluster.token.encode() in p.read_bytes()
    ]
    assert not leaked, f"the Ray auth token appears in {leaked}"
    print(f"\nmulti-host study: worker killed at {t_kill:.0f} s, study ended at {t_end:.0f} s", flush=True)
