"""Ray runtime helpers (pure functions): which clusters span hosts, loopback names, addresses."""

from __future__ import annotations

import os

import pytest

from pipelines.ray_runtime import (
    _host_of,
    hidden_credentials,
    is_loopback,
    ray_session,
    resolve_address,
    spans_hosts,
    worker_runtime_env,
)
from tracking.redact import redact

HERE = {"192.0.2.2"}  # this machine's outward address: Ray registers even a loopback-started node under it


@pytest.mark.parametrize(
    ("address", "node_ips", "remote"),
    [
        (None, ["10.0.0.5"], False),  # the local Ray the study starts itself
        ("127.0.0.1:6379", ["192.0.2.2", "192.0.2.2"], False),  # head + worker on this machine (the tests' cluster)
        ("127.0.0.1:6379", ["127.0.0.1"], False),
        ("localhost:6379", ["127.0.0.1"], False),
        ("192.0.2.2:6379", ["192.0.2.2"], False),
        ("auto", ["192.0.2.2"], False),
        ("ray://127.0.0.1:10001", ["127.0.0.1"], False),
        ("[::1]:6379", ["::1"], False),
        ("127.0.0.1:6379", ["192.0.2.2", "10.0.0.7"], True),  # a worker on another machine
        ("auto", ["10.0.0.7"], True),
        ("ray://head.example.org:10001", ["127.0.0.1"], True),  # Ray Client to another machine
        ("10.0.0.5:6379", [], True),
    ],
)
def test_which_clusters_span_hosts(address: str | None, node_ips: list[str], remote: bool) -> None:
    assert spans_hosts(address, node_ips, HERE) is remote


def test_loopback_names() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.3.0.1") and is_loopback("::1") and is_loopback("LOCALHOST")
    assert not is_loopback("10.0.0.1") and not is_loopback("head") and not is_loopback("")


@pytest.mark.parametrize(
    ("given", "env", "resolved"),
    [
        ("10.0.0.5:6379", "ray://other:10001", "10.0.0.5:6379"),  # --address wins
        (None, "ray://other:10001", "ray://other:10001"),  # then $RAY_ADDRESS
        ("", "auto", "auto"),
        (None, None, None),  # then a local Ray
        ("", "", None),
        ("local", "10.0.0.5:6379", None),  # "local" forces a new local Ray
    ],
)
def test_address_resolution(
    given: str | None, env: str | None, resolved: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    assert resolve_address(given) == resolved


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("10.0.0.5:6379", "10.0.0.5"),
        ("ray://head.example.org:10001", "head.example.org"),
        ("[::1]:6379", "::1"),
        ("ray://[fe80::1]:10001/x", "fe80::1"),
        ("head", "head"),
        ("::1", "::1"),
    ],
)
def test_host_of_an_address(address: str, host: str) -> None:
    assert _host_of(address) == host


def test_worker_runtime_env_holds_the_fixed_settings_and_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://u:p@host")  # not a worker setting: never passed
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "true-but-secret")
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    assert worker_runtime_env() == {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}}
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true-but-secret")  # a value holding a known secret is left out
    assert worker_runtime_env() == {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}}


def test_hidden_credentials_takes_them_out_and_puts_them_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hidden-secret-value")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hidden-password")
    monkeypatch.setenv("LGEOM_PLAIN_SETTING", "kept")
    with hidden_credentials() as taken:
        assert {"AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD"} <= set(taken) and taken == sorted(taken)
        assert "AWS_SECRET_ACCESS_KEY" not in os.environ and "MLFLOW_TRACKING_PASSWORD" not in os.environ
        assert os.environ["LGEOM_PLAIN_SETTING"] == "kept"
        assert redact("pw hidden-password") == "pw ***"  # still masked while out of the environment
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "hidden-secret-value"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "hidden-password"


def test_plugin_modules_are_shipped_but_no_credential(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "plug-secret")
    env = worker_runtime_env([tmp_path / "mynets.py"])
    assert env["py_modules"] == [str(tmp_path / "mynets.py")]
    assert {".venv", "mlruns", ".git", "data", "__pycache__"} <= set(env["excludes"])
    assert env["env_vars"] == {"RAY_USAGE_STATS_ENABLED": "0"}
    assert "plug-secret" not in repr(env)


@pytest.mark.integration
def test_workers_import_a_plugin_from_the_shipped_copy(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    src = tmp_path / "src"
    src.mkdir()
    module = f"shippedplug{os.getpid()}"
    (src / f"{module}.py").write_text("def build(*, num_classes, in_shape):\n    return 'from the shipped copy'\n")
    monkeypatch.chdir(tmp_path)  # the driver's working directory is not where the module is
    with ray_session(None, num_cpus=1, py_modules=[src / f"{module}.py"]):

        @ray.remote
        def load(name: str, hidden: str) -> tuple[str, str]:
            import importlib
            import sys

            sys.path[:] = [p for p in sys.path if not p.startswith(hidden)]  # no way back to the source folder
            mod = importlib.import_module(name)
            return mod.build(num_classes=2, in_shape=(1,)), mod.__file__

        text, where = ray.get(load.remote(module, str(src)))
    assert text == "from the shipped copy" and not where.startswith(str(src))
