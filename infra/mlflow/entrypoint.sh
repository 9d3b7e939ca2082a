#!/bin/sh
# Writes the basic-auth config and starts the MLflow server with proxied S3 artifacts: the same settings as
# 'lgeom up --shared' (tracking/shared_server.py; tests/test_infra.py checks they agree). No secret
# is in the config, a URI or the command line: the database password reaches libpq through PGPASSWORD, the
# admin's through MLFLOW_AUTH_ADMIN_PASSWORD (both from the environment compose passes).
set -eu
: "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD:?}" "${MLFLOW_AUTH_ADMIN_PASSWORD:?}" "${MLFLOW_FLASK_SERVER_SECRET_KEY:?}"
export PGPASSWORD="${POSTGRES_PASSWORD}" PGCONNECT_TIMEOUT=5
DB="postgresql+psycopg2://${POSTGRES_USER}@postgres:5432"
export MLFLOW_AUTH_CONFIG_PATH="$HOME/basic_auth.ini"
cat > "$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = READ
database_uri = ${DB}/mlflow_auth
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
auth_cache_ttl_seconds = 60
INI
exec mlflow server \
  --app-name basic-auth \
  --backend-store-uri "${DB}/mlflow" \
  --artifacts-destination "s3://${LGEOM_BUCKET:-lgeom}/artifacts" \
  --host 0.0.0.0 --port 5000 --workers 1
