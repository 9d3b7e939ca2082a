"""infra/docker-compose.yml cannot run here (no Docker): check its structure instead."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parents[1] / "infra"
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|ROOT_USER", re.I)
REQUIRED_REF = re.compile(r"^\$\{[A-Z0-9_]+:\?[^}]*\}$")


def _compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def test_services_and_dependencies() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "minio", "create-bucket", "mlflow"}
    mlflow = services["mlflow"]
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mlflow["depends_on"]["create-bucket"]["condition"] == "service_completed_successfully"
    assert services["create-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing" in " ".join(services["create-bucket"]["command"])
    entrypoint = (INFRA / "mlflow" / "entrypoint.sh").read_text()
    assert (
        "--app-name basic-auth" in entrypoint
        and "--artifacts-destination" in entrypoint
        and "postgresql://" in entrypoint
    )
    assert "mlflow[auth]==3.17.2" in (INFRA / "mlflow" / "Dockerfile").read_text()


def test_published_ports_bind_to_loopback_by_default() -> None:
    services = _compose()["services"]
    assert "ports" not in services["postgres"]
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert len(published) == 3
    for port in published:
        assert isinstance(port, str) and port.startswith("${LGEOM_BIND_ADDRESS:-127.0.0.1}:"), port


def test_no_literal_secrets() -> None:
    for name, service in _compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_KEY.search(key):
                assert REQUIRED_REF.match(str(value)), (
                    f"{name}.{key} must be a required ${{VAR:?}} reference, got {value!r}"
                )
    env_example = (INFRA / ".env.example").read_text()
    for line in env_example.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            if SECRET_KEY.search(key) or key.endswith("_USER") and key.startswith("MINIO"):
                assert value == "", f".env.example {key} must be an empty placeholder"
    assert not re.search(r"(?i)(password|secret)\s*[:=]\s*[A-Za-z0-9]{6,}", (INFRA / "docker-compose.yml").read_text())
