"""``lgeom.sys.node_ip``: recorded only inside Ray (the multi-host scenario checks the values on a real
two-node cluster, ``tests/scenarios/test_multihost.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_node_ip_outside_ray_and_ray_is_not_imported_for_it() -> None:
    code = (
        "import sys\n"
        "from tracking.runs import ray_node_ip\n"
        "assert ray_node_ip() is None\n"
        "assert 'ray' not in sys.modules, 'looking for the node IP must not import ray'\n"
        "import ray\n"
        "assert not ray.is_initialized() and ray_node_ip() is None\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
