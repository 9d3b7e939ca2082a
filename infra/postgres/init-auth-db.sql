-- A second database for MLflow's basic-auth app (users and permissions), beside the tracking store.
CREATE DATABASE mlflow_auth;
