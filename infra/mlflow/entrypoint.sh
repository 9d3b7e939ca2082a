#!/bin/sh
# Writes the basic-auth config (its database URI holds the Postgres password, so it is built here from
# the environment and never committed), then starts the MLflow server with proxied S3 artifacts.
set -eu
: "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD:?}" "${MLFLOW_AUTH_ADMIN_PASSWORD:?}" "${MLFLOW_FLASK_SERVER_SECRET_KEY:?}"
PW=$(python -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["POSTGRES_PASSWORD"], safe=""))')
DB="postgresql://${POSTGRES_USER}:${PW}@postgres:5432"
umask 077
export MLFLOW_AUTH_CONFIG_PATH="$HOME/basic_auth.ini"
cat > "$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = READ
database_uri = ${DB}/mlflow_auth
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
exec mlflow server \
  --app-name basic-auth \
  --backend-store-uri "${DB}/mlflow" \
  --artifacts-destination "s3://${LGEOM_BUCKET:-lgeom}/artifacts" \
  --host 0.0.0.0 --port 5000 --workers 2
