"""``lgeom up`` / ``lgeom down`` for real: loopback-only ports, state file, private credentials that are
never printed, clean stop of both process groups and of SeaweedFS's sockets.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from tracking.processes import process_alive

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _lgeom(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )


def _group_members(pgid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(p.name))
    return out


def _listening_addresses(pids: list[int]) -> set[str]:
    """``ip:port`` of every TCP socket in LISTEN state owned by ``pids`` (from /proc, no external tools)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    addrs = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state != "0A" or inode not in inodes:
                continue
            ip_hex, port_hex = local.split(":")
            if v6:
                ip = "::1" if ip_hex == "00000000000000000000000001000000" else ip_hex
            else:
                ip = ".".join(str(int(ip_hex[i : i + 2], 16)) for i in (6, 4, 2, 0))
            addrs.add(f"{ip}:{int(port_hex, 16)}")
    return addrs


def test_up_and_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 'lgeom up' runs as its own process (the servers must outlive it); the rest runs in-process to
    # spare the CLI's start-up time.
    from pipelines.cli import main as lgeom

    state = tmp_path / ".lgeom"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_TRACKING_", "MLFLOW_S3_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    up = _lgeom("up", "--state-dir", str(state), env=env)
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads((state / "stack.json").read_text())
        assert {"tracking_uri", "s3_endpoint", "bucket", "pids"} <= set(info)
        assert info["tracking_uri"].startswith("http://127.0.0.1:") and info["s3_endpoint"].startswith(
            "http://127.0.0.1:"
        )
        assert f"export MLFLOW_TRACKING_URI={info['tracking_uri']}" in up.stdout
        creds = state / "credentials.env"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600 and stat.S_IMODE(state.stat().st_mode) == 0o700
        secrets = [line.split("=", 1)[1] for line in creds.read_text().splitlines() if line.startswith("AWS_")]
        assert len(secrets) == 2
        for s in secrets:
            assert s not in up.stdout + up.stderr
            assert s not in (state / "stack.json").read_text()
        assert requests.get(info["tracking_uri"] + "/health", timeout=5).status_code == 200
        members = [m for pid in info["pids"].values() for m in _group_members(pid)]
        addresses = _listening_addresses(members)
        assert addresses and all(a.startswith(("127.0.0.1:", "::1:")) for a in addresses), addresses
        ports = {int(a.rsplit(":", 1)[1]) for a in addresses}
        assert info["ports"]["mlflow"] in ports and info["ports"]["weed.s3.port"] in ports

        capsys.readouterr()
        assert lgeom(["up", "--state-dir", str(state)]) == 0
        again = capsys.readouterr().out
        assert "already running" in again and info["tracking_uri"] in again
    finally:
        code = lgeom(["down", "--state-dir", str(state)])
    assert code == 0 and "local stack stopped" in capsys.readouterr().out
    for name, pid in info["pids"].items():
        assert not process_alive(pid), name
        assert _group_members(pid) == [], name
    assert not (state / "stack.json").exists() and creds.exists()
    ours = {str(p) for p in info["ports"].values()}
    left = [s for s in Path(tempfile.gettempdir()).glob("seaweedfs-*.sock") if s.stem.rsplit("-", 1)[-1] in ours]
    assert left == []
    assert lgeom(["down", "--state-dir", str(state)]) == 0
    assert "no local stack recorded" in capsys.readouterr().out
