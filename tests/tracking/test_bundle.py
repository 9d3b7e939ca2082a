"""A full trial's results logged through MLflow (server + S3, and the embedded default) and read back
through MLflow and straight from the storage; no secret reaches a param, tag or artifact.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from tracking.bundle import log_bundle
from tracking.log import (
    SecretInArtifactError,
    download_artifact,
    load_logged_curve,
    load_model,
    model_uris,
)
from tracking.query import path_series, path_tables
from tracking.runs import run_tags, tracked_run

pytestmark = pytest.mark.integration

FAKE_SECRET = "fake-secret-value-9f8e7d6c"


@pytest.fixture(params=["server", "direct", "embedded"])
def store(request: pytest.FixtureRequest) -> Any:
    """server: artifacts proxied by the server; direct: the client writes to S3 itself
    (MLFLOW_S3_ENDPOINT_URL + AWS_*, experiment with an s3:// location); embedded: sqlite + ./mlruns.
    """
    return request.getfixturevalue("embedded_store" if request.param == "embedded" else "server_store")


def _bucket_objects(stack: Any, prefix: str) -> dict[str, int]:
    s3 = stack.s3_client()
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix=prefix):
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return out


def test_full_trial_round_trip(
    store: Any,
    request: pytest.FixtureRequest,
    make_trial_bundle: Any,
    unique_study: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    mode = request.node.callspec.params["store"]
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", FAKE_SECRET)
    if mode == "direct":
        stack = request.getfixturevalue("local_stack")
        key, secret = stack.credentials()
        monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", stack.s3_endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        store.client().create_experiment(unique_study, artifact_location=f"s3://{stack.bucket}/direct/{unique_study}")
    bundle, arch, endpoints = make_trial_bundle()
    params = {
        "model": {"arch": "mlp", "depth": 2},
        "db.password": "hunter22",
        "note": f"pw={FAKE_SECRET}",
        "source": "https://user:tok3n-abc@example.org/repo",
    }
    with tracked_run(
        store, experiment=unique_study, run_name="study", tags=run_tags(study=unique_study, stage="study")
    ) as parent:
        tags = run_tags(
            study=unique_study,
            stage="trial",
            cell="mlp2x8/moons/sgd",
            config_hash="0123456789abcdef",
            extra={"lgeom.secret_token": "zzz", "lgeom.origin": f"from {FAKE_SECRET}"},
        )
        with tracked_run(
            store,
            experiment_id=parent.experiment_id,
            run_name="mlp2x8/moons/sgd",
            parent_run_id=parent.run_id,
            tags=tags,
            params=params,
        ) as run:
            manifest = log_bundle(
                run,
                bundle,
                model=arch,
                cell="mlp2x8/moons/sgd",
                input_example=torch.randn(2, 4, generator=torch.Generator().manual_seed(2)).numpy(),
            )

    client = store.client()
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and client.get_run(parent.run_id).info.status == "FINISHED"
    t = got.data.tags
    assert t["mlflow.parentRunId"] == parent.run_id and t["lgeom.cell"] == "mlp2x8/moons/sgd"
    assert (
        t["lgeom.config_hash"] == "0123456789abcdef"
        and t["lgeom.stage"] == "trial"
        and t["lgeom.study"] == unique_study
    )
    # scalar metrics (NaN kept as NaN), params flattened, credentials dropped or masked everywhere
    m = got.data.metrics
    assert (
        m["barrier/bezier/test/acc_auc"] == 0.5
        and m["hessian/mid/lambda_max"] == 3.5
        and math.isnan(m["gap/linear/gen_gap_max"])
    )
    p = got.data.params
    assert p["model.arch"] == "mlp" and p["model.depth"] == "2" and "db.password" not in p and p["n_params"]
    everything = json.dumps({**p, **t})
    for secret in (FAKE_SECRET, "tok3n-abc", "zzz", os.environ.get("AWS_SECRET_ACCESS_KEY", "zzz")):
        assert secret not in everything
    if mode != "embedded":
        stack = request.getfixturevalue("local_stack")
        for value in stack.credentials():
            assert value not in everything
    # series along paths: one step per point
    hist = client.get_metric_history(run.run_id, "path/bezier/test_acc")
    assert [h.step for h in sorted(hist, key=lambda h: h.step)] == list(range(7))
    table = bundle.read_path("bezier")
    np.testing.assert_allclose([h.value for h in sorted(hist, key=lambda h: h.step)], table["test_acc"])
    series = path_series(run.run_id, "linear", store=store)
    np.testing.assert_allclose(series["t"], np.linspace(0, 1, 7))
    assert np.isnan(series["hessian_lambda_max"][1]) and series["hessian_lambda_max"][0] == pytest.approx(3.0)
    tables = path_tables(run.run_id, store=store)  # every path at once, each as path_series reads it
    assert set(tables) == set(bundle.path_names()) and "linear" in tables
    for path, table in tables.items():
        pd.testing.assert_frame_equal(table, path_series(run.run_id, path, store=store))
    # artifacts at the bundle's relative paths, sizes as written
    expected = {str(f): (bundle.root / f).stat().st_size for f in bundle.files() if not str(f).startswith("endpoints/")}
    assert manifest.artifacts == expected
    listed = {}
    for folder in (None, "curves", "spectra", "planes", "figures", "paths"):
        listed.update({i.path: i.file_size for i in client.list_artifacts(run.run_id, folder) if not i.is_dir})
    assert listed == expected
    # models: LoggedModels linked to the run, identical outputs after loading
    assert set(model_uris(store, run.run_id)) == {"a", "b"}
    models = client.search_logged_models([parent.experiment_id], filter_string=f"source_run_id = '{run.run_id}'")
    assert {lm.name for lm in models} == {"mlp2x8-moons-sgd-a", "mlp2x8-moons-sgd-b"} and all(
        lm.status.name == "READY" for lm in models
    )
    from mlflow.models import get_model_info

    info = get_model_info(model_uris(store, run.run_id)["a"])
    assert info.signature is not None and tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 4)
    assert info.saved_input_example_info is not None
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    for name, module in endpoints.items():
        loaded = load_model(store, run.run_id, name, trust_pickle=True)
        assert torch.equal(loaded(x), module(x))
    any_batch = load_model(store, run.run_id, "a", trust_pickle=True)(torch.randn(3, 4))  # pickle: any batch size
    assert any_batch.shape == (3, 3)
    # curve: rebuilt from the logged control points, identical phi(t)
    curve, extra = load_logged_curve(store, run.run_id, "bezier")
    original, _ = __import__("lgeom.curves", fromlist=["load_curve"]).load_curve(bundle.root / "curves" / "bezier.pt")
    assert extra["model"]["arch"] == "mlp"
    for tt in (0.0, 0.3, 0.5, 1.0):
        for k, v in original.point(tt).items():
            assert torch.equal(curve.point(tt)[k], v)
    # spectra JSON and plane npz come back byte for byte
    spec = json.loads(download_artifact(store, run.run_id, "spectra/mid.json", tmp_path / "dl").read_text())
    assert spec["eigenvalues"] == [3.5, 2.0, 1.0]
    plane = np.load(download_artifact(store, run.run_id, "planes/bezier.npz", tmp_path / "dl"))
    np.testing.assert_array_equal(plane["test_loss"], np.load(bundle.root / "planes" / "bezier.npz")["test_loss"])
    # straight from the storage
    if mode != "embedded":
        stack = request.getfixturevalue("local_stack")
        objects = _bucket_objects(stack, "artifacts/" if mode == "server" else "direct/")
        uri = got.info.artifact_uri
        prefix = (
            f"artifacts/{uri.split(':', 1)[1].lstrip('/')}/"
            if mode == "server"
            else uri[len(f"s3://{stack.bucket}/") :] + "/"
        )
        assert uri.startswith("mlflow-artifacts:" if mode == "server" else "s3://")
        assert {k[len(prefix) :]: v for k, v in objects.items() if k.startswith(prefix)} == expected
        for lm in models:
            files = {k: v for k, v in objects.items() if f"/models/{lm.model_id}/artifacts/" in k}
            assert any(k.endswith("data/model.pth") for k in files) and any(k.endswith("MLmodel") for k in files)
        s3 = stack.s3_client()
        body = s3.get_object(Bucket="lgeom", Key=prefix + "metrics.json")["Body"].read()
        assert body == (bundle.root / "metrics.json").read_bytes()
    else:
        root = Path(os.getcwd())
        assert (root / "mlflow.db").exists()
        on_disk = [p for p in (root / "mlruns").rglob("*") if p.is_file()]
        assert any(p.name == "bezier.npz" for p in on_disk) and any(p.name == "model.pth" for p in on_disk)


def test_secret_in_an_artifact_is_refused(
    server_store: Any, make_trial_bundle: Any, unique_study: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LGEOM_TEST_PASSWORD", FAKE_SECRET)
    bundle, arch, _ = make_trial_bundle()
    bundle.write_json("probes.json", {"leaked": f"postgres://u:{FAKE_SECRET}@db/x"})
    with pytest.raises(SecretInArtifactError, match="got the value of LGEOM_TEST_PASSWORD") as info:
        with tracked_run(server_store, experiment=unique_study) as run:
            log_bundle(run, bundle)
    assert FAKE_SECRET not in str(info.value)
    got = server_store.client().get_run(run.run_id)
    assert got.info.status == "FAILED" and FAKE_SECRET not in json.dumps(got.data.tags)
    assert "probes.json" not in {i.path for i in server_store.client().list_artifacts(run.run_id)}
