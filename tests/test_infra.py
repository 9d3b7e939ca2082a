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
        and "postgresql+psycopg2://" in entrypoint
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


def _ini(text: str) -> dict[str, str]:
    import configparser

    parser = configparser.ConfigParser()
    parser.read_string(text)
    return dict(parser["mlflow"])


def test_compose_matches_the_shared_server_the_tests_run(tmp_path: Path) -> None:
    """The compose MLflow service runs what 'lgeom up --shared' runs: basic-auth app, the same auth settings,
    psycopg2 Postgres URIs without passwords (PGPASSWORD), tracking and auth databases, one worker, proxied
    artifacts; and the Dockerfile installs the same drivers.
    """
    from tracking import shared_server

    entrypoint = (INFRA / "mlflow" / "entrypoint.sh").read_text()
    heredoc = entrypoint.split("<<INI\n", 1)[1].split("\nINI\n", 1)[0]
    compose_ini = _ini(heredoc.replace("${DB}", "postgresql+psycopg2://${POSTGRES_USER}@postgres:5432"))
    local_ini = _ini(shared_server.write_auth_config(tmp_path, 5432).read_text())
    assert set(compose_ini) == set(local_ini)
    for key in set(local_ini) - {"database_uri"}:
        assert compose_ini[key] == local_ini[key], key
    assert compose_ini["auth_cache_ttl_seconds"] == str(shared_server.AUTH_CACHE_TTL_S)
    local_db, compose_db = local_ini["database_uri"], compose_ini["database_uri"]
    assert local_db.split("://")[0] == compose_db.split("://")[0] == "postgresql+psycopg2"
    assert local_db.rsplit("/", 1)[1] == compose_db.rsplit("/", 1)[1] == shared_server.AUTH_DB
    assert ":" not in local_db.split("://")[1].split("@")[0] and ":" not in compose_db.split("://")[1].split("@")[0]
    assert shared_server.backend_store_uri(5432).rsplit("/", 1)[1] == "mlflow" and '"${DB}/mlflow"' in entrypoint
    assert "PGPASSWORD=" in entrypoint and "--workers 1" in entrypoint and "--app-name basic-auth" in entrypoint
    env = {
        **shared_server.server_env(
            tmp_path,
            5432,
            dict.fromkeys(
                (
                    "LGEOM_PG_PASSWORD",
                    "MLFLOW_AUTH_ADMIN_USERNAME",
                    "MLFLOW_AUTH_ADMIN_PASSWORD",
                    "MLFLOW_FLASK_SERVER_SECRET_KEY",
                ),
                "x",
            ),
        )
    }
    mlflow_env = _compose()["services"]["mlflow"]["environment"]
    for var in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert var in env and var in mlflow_env, var
    assert "PGPASSWORD" in env
    dockerfile = (INFRA / "mlflow" / "Dockerfile").read_text()
    assert "psycopg2-binary" in dockerfile and "mlflow[auth]" in dockerfile
    assert (INFRA / "postgres" / "init-auth-db.sql").read_text().count(f"CREATE DATABASE {shared_server.AUTH_DB}") == 1
