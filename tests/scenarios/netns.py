"""Several hosts on one machine for tests: Linux network namespaces joined by one bridge.

:class:`NetnsLab` makes one namespace per host (``<prefix>-<host>``), a switch namespace holding a bridge,
and a veth pair from every host to that bridge; each host gets an address of a private /24 on its veth end
and its own loopback. Nothing is configured in the machine's own namespace (the veth pairs are created
there and moved out at once), so traffic only flows between the lab's hosts. Processes started with
:meth:`NetnsLab.popen` / :meth:`NetnsLab.run` live in a host's namespace; :meth:`NetnsLab.kill_host` ends
every process of one host by pid (``ip netns pids``), and :meth:`NetnsLab.close` ends every process of
every host and deletes the namespaces (their veth ends and the bridge go with them). Use it as a context
manager, or from a fixture's finalizer, so that happens even when a test fails.

Needs root and ``ip`` from iproute2; :func:`unavailable_reason` says why a lab cannot be made here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

#: The /24 the lab's hosts take their addresses from (host ``i`` of the list gets ``.<i + 1>``).
DEFAULT_SUBNET = "10.213.7"

# A tiny HTTP client run inside a host's namespace (stdlib only: starts in ~50 ms). argv: url [json body];
# prints {"status": <code>, "body": <text>} or {"status": 0, "error": <text>}.
_HTTP_SCRIPT = r"""
import json, sys, urllib.error, urllib.request
url = sys.argv[1]
data = sys.argv[2].encode() if len(sys.argv) > 2 else None
req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(json.dumps({"status": r.status, "body": r.read().decode()}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode(errors="replace")}))
except Exception as e:
    print(json.dumps({"status": 0, "error": f"{type(e).__name__}: {e}"}))
"""


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here (not root, no ``ip``, ``ip netns`` failing), or ``None``."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run the test as root"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is missing: apt-get install -y iproute2"
    probe = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"'ip netns list' failed: {probe.stderr.strip() or probe.returncode}"
    return None


@dataclass(frozen=True)
class Host:
    """One host of the lab: its namespace and its address."""

    name: str
    netns: str
    ip: str


@dataclass
class NetnsLab:
    """Hosts ``hosts`` (short names) in namespaces on one bridge, addresses ``<subnet>.1``, ``.2``, ...

    Attributes:
        hosts: short host names, in address order.
        subnet: the first three octets of the private /24 (``10.213.7``); the addresses stay inside the
            lab's namespaces, so labs running at the same time do not collide.
        prefix: namespace name prefix (default: ``lg`` + 4 random hex digits, unique per lab).
    """

    hosts: Sequence[str]
    subnet: str = DEFAULT_SUBNET
    prefix: str = field(default_factory=lambda: f"lg{uuid.uuid4().hex[:4]}")
    _made: list[str] = field(default_factory=list, init=False, repr=False)
    _procs: list[subprocess.Popen[Any]] = field(default_factory=list, init=False, repr=False)
    _by_name: dict[str, Host] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.hosts) <= 250 or len(set(self.hosts)) != len(self.hosts):
            raise ValueError(f"hosts: expected 1 to 250 distinct names, got {list(self.hosts)!r}")
        self._by_name = {h: Host(h, f"{self.prefix}-{h}", f"{self.subnet}.{i + 1}") for i, h in enumerate(self.hosts)}

    @property
    def switch(self) -> str:
        """The namespace holding the bridge."""
        return f"{self.prefix}-sw"

    def __getitem__(self, name: str) -> Host:
        """The host called ``name``."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"host: expected one of {', '.join(self._by_name)}, got {name!r}") from None

    # --- life cycle -------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def up(self) -> None:
        """Create the namespaces, the bridge and one veth pair per host; on any error, undo what was made.

        Raises:
            RuntimeError: an ``ip`` command failed (its message is included).
        """
        try:
            self._netns_add(self.switch)
            self._ip(self.switch, "link", "add", "br0", "type", "bridge")
            self._ip(self.switch, "link", "set", "br0", "up")
            self._ip(self.switch, "link", "set", "lo", "up")
            for i, host in enumerate(self._by_name.values()):
                self._netns_add(host.netns)
                inner, outer = f"{self.prefix}h{i}", f"{self.prefix}s{i}"
                # created in this namespace, both ends moved out before they are brought up
                self._cmd("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
                self._cmd("ip", "link", "set", inner, "netns", host.netns)
                self._cmd("ip", "link", "set", outer, "netns", self.switch)
                self._ip(self.switch, "link", "set", outer, "master", "br0")
                self._ip(self.switch, "link", "set", outer, "up")
                self._ip(host.netns, "addr", "add", f"{host.ip}/24", "dev", inner)
                self._ip(host.netns, "link", "set", inner, "up")
                self._ip(host.netns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """End every process in the lab's namespaces (SIGTERM, then SIGKILL after 5 s) and delete them.
        Safe to call twice; never raises for what is already gone.
        """
        for proc in self._procs:
            _signal_group(proc.pid, signal.SIGTERM)
        for ns in self._made:
            self._signal_netns(ns, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(self.pids(ns) for ns in self._made):
            time.sleep(0.2)
        for ns in self._made:
            self._signal_netns(ns, signal.SIGKILL)
        for proc in self._procs:
            _signal_group(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=30)
        self._made.clear()
        self._procs.clear()

    # --- processes --------------------------------------------------------------------------------------

    def argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run in ``host``'s namespace."""
        return ["ip", "netns", "exec", self[host].netns, *argv]

    def popen(
        self, host: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``host``'s namespace in a new session (process group); ended by :meth:`close`."""
        proc = subprocess.Popen(
            self.argv(host, argv), env=dict(env) if env is not None else None, start_new_session=True, **kwargs
        )
        self._procs.append(proc)
        return proc

    def run(
        self,
        host: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        check: bool = True,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion in ``host``'s namespace (text output captured).

        Raises:
            RuntimeError: ``check`` and a non-zero exit status (stdout and stderr tails included).
        """
        proc = subprocess.run(
            self.argv(host, argv),
            check=False,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if check and proc.returncode != 0:
            tails = f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            raise RuntimeError(f"{' '.join(argv[:3])} ... on {host}: exit {proc.returncode}\n{tails}")
        return proc

    def pids(self, netns: str) -> list[int]:
        """Every process in namespace ``netns`` (``ip netns pids``)."""
        out = subprocess.run(["ip", "netns", "pids", netns], check=False, capture_output=True, text=True, timeout=30)
        return [int(p) for p in out.stdout.split() if p.isdigit()]

    def host_pids(self, host: str) -> list[int]:
        """Every process in ``host``'s namespace."""
        return self.pids(self[host].netns)

    def kill_host(self, host: str, *, timeout: float = 10) -> list[int]:
        """SIGKILL every process in ``host``'s namespace (a machine losing power), again for any that a dying
        one started meanwhile, until none is left; returns their pids.

        Raises:
            RuntimeError: processes still there after ``timeout`` seconds (their pids are named).
        """
        killed: list[int] = []
        deadline = time.monotonic() + timeout
        while True:
            pids = self.host_pids(host)
            if not pids:
                return killed
            if time.monotonic() > deadline:
                raise RuntimeError(f"host {host}: processes {pids} still alive {timeout:.0f} s after SIGKILL")
            killed += [p for p in pids if p not in killed]
            self._signal_netns(self[host].netns, signal.SIGKILL)
            time.sleep(0.1)

    # --- HTTP from inside a host ------------------------------------------------------------------------

    def http(
        self, host: str, url: str, body: Mapping[str, Any] | None = None, *, timeout: float = 30
    ) -> tuple[int, str]:
        """GET ``url`` (POST ``body`` as JSON when given) from ``host``'s namespace; ``(status, text)``,
        status 0 when nothing answered (the text says why).
        """
        argv = [sys.executable, "-c", _HTTP_SCRIPT, url] + ([json.dumps(body)] if body is not None else [])
        proc = self.run(host, argv, timeout=timeout, check=False)
        try:
            answer = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            return 0, f"no answer: {proc.stderr[-500:]}"
        return int(answer["status"]), str(answer.get("body", answer.get("error", "")))

    def wait_http(
        self,
        host: str,
        url: str,
        *,
        timeout: float = 60,
        proc: subprocess.Popen[Any] | None = None,
        log: Path | None = None,
    ) -> None:
        """Poll ``url`` from ``host`` until it answers 200.

        Raises:
            RuntimeError: ``proc`` exited first, or ``timeout`` passed (the last answer and ``log``'s tail
                are included).
        """
        deadline = time.monotonic() + timeout
        last = (0, "")
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            last = self.http(host, url)
            if last[0] == 200:
                return
            time.sleep(0.5)
        tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
        raise RuntimeError(
            f"{url} from {host}: expected 200 within {timeout:.0f} s, got {last[0]} {last[1][:300]}\n{tail}"
        )

    # --- internals --------------------------------------------------------------------------------------

    def _netns_add(self, ns: str) -> None:
        self._cmd("ip", "netns", "add", ns)
        self._made.append(ns)

    def _ip(self, ns: str, *args: str) -> None:
        self._cmd("ip", "-n", ns, *args)

    @staticmethod
    def _cmd(*argv: str) -> None:
        proc = subprocess.run(list(argv), check=False, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")

    def _signal_netns(self, ns: str, sig: signal.Signals) -> None:
        for pid in self.pids(ns):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
