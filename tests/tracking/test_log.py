"""``tracking.log``: params flattened, metrics and series named by the contract, artifacts, figures, tables and
models uploaded, listed back and verified, secrets refused. MLflow is the real embedded store (sqlite in a temp
folder), never a mock.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from lgeom import names
from lgeom.models import build_model
from lgeom.table import Table
from tracking.log import (
    MAX_PARAM_VALUE,
    MAX_TAG_VALUE,
    SecretInArtifactError,
    UploadVerificationError,
    flatten_params,
    load_model,
    log_artifact,
    log_artifacts,
    log_figure,
    log_metrics,
    log_model,
    log_params,
    log_series,
    log_table,
    model_uris,
    set_tags,
    verify_uploads,
)
from tracking.runs import end_run, start_run, tracked_run


def test_flatten_params_nests_dots_lists_as_json_and_truncates() -> None:
    long = "x" * (MAX_PARAM_VALUE + 50)
    out = flatten_params(
        {"model": {"arch": "mlp", "widths": [16, 32]}, "seed": None, "note": long, "empty": {}}, prefix="cell"
    )
    assert out["cell.model.arch"] == "mlp" and out["cell.model.widths"] == "[16,32]" and out["cell.seed"] == "None"
    assert out["cell.empty"] == "{}"
    assert len(out["cell.note"]) <= MAX_PARAM_VALUE and out["cell.note"].endswith("...[truncated]")


def test_metrics_in_one_batch_none_as_nan_at_a_step(embedded_store: Any, unique_study: str) -> None:
    acc, gap = names.endpoint_metric("a", "test", "acc"), names.gap_metric(names.LINE, "gen_gap_max")
    with tracked_run(embedded_store, experiment=unique_study) as run:
        log_metrics(run, {acc: 91.0, gap: None}, step=3)
    client = embedded_store.client()
    got = client.get_run(run.run_id).data.metrics
    assert got[acc] == 91.0 and math.isnan(got[gap])
    assert [m.step for m in client.get_metric_history(run.run_id, acc)] == [3]


def test_bad_metric_names_and_values_are_refused(embedded_store: Any, unique_study: str) -> None:
    run = start_run(embedded_store, experiment=unique_study)
    with pytest.raises(ValueError, match=r"metric name: expected letters, digits and _ - \. / : or spaces, got 'a,b'"):
        log_metrics(run, {"a,b": 1.0})
    with pytest.raises(ValueError, match="metric endpoint/a/test_acc: expected a number, got 'high'"):
        log_metrics(run, {"endpoint/a/test_acc": "high"})  # type: ignore[dict-item]
    end_run(run, "FAILED")


def test_params_are_immutable_but_the_same_value_may_be_logged_again(embedded_store: Any, unique_study: str) -> None:
    run = start_run(embedded_store, experiment=unique_study, params={"train": {"lr": 0.05}})
    log_params(run, {"train.lr": 0.05, names.PARAM_N_PARAMS: 10})
    with pytest.raises(ValueError, match=r"got different ones for train.lr \(logged '0.05', now '0.1'\)"):
        log_params(run, {"train": {"lr": 0.1}})
    end_run(run, "FINISHED")
    assert embedded_store.client().get_run(run.run_id).data.params == {"train.lr": "0.05", "n_params": "10"}


def test_tags_are_cut_to_mlflows_limit(embedded_store: Any, unique_study: str) -> None:
    with tracked_run(embedded_store, experiment=unique_study) as run:
        set_tags(run, {names.TAG_CELL: "mlp/moons/sgd", "lgeom.long": "y" * (MAX_TAG_VALUE + 10)})
    tags = embedded_store.client().get_run(run.run_id).data.tags
    assert tags[names.TAG_CELL] == "mlp/moons/sgd" and len(tags["lgeom.long"]) == MAX_TAG_VALUE


def test_series_use_the_contract_names_skip_t_text_and_nan(embedded_store: Any, unique_study: str) -> None:
    test_acc, lam = names.split_column("test", "acc"), names.probe_column(names.HESSIAN, "lambda_max")
    columns = {
        "t": [0.0, 0.5, 1.0],
        test_acc: [90.0, 50.0, 89.0],
        lam: [2.0, np.nan, 3.0],
        "label": np.array(["x", "y", "z"]),
    }
    with tracked_run(embedded_store, experiment=unique_study) as run:
        logged = log_series(run, "bezier", columns)
        assert log_series(run, "linear", Table({"t": [0.0, 1.0], test_acc: [1.0, 2.0]})) == [
            names.series_metric("linear", test_acc)
        ]
    assert logged == [names.series_metric("bezier", test_acc), names.series_metric("bezier", lam)]
    client = embedded_store.client()
    history = client.get_metric_history(run.run_id, names.series_metric("bezier", lam))
    assert sorted((m.step, m.value) for m in history) == [(0, 2.0), (2, 3.0)], "the NaN row has no entry"


def test_series_of_unequal_columns_or_wrong_steps_are_refused(embedded_store: Any, unique_study: str) -> None:
    run = start_run(embedded_store, experiment=unique_study)
    with pytest.raises(ValueError, match=r"series bezier: expected columns of equal length, got lengths \[2, 3\]"):
        log_series(run, "bezier", {"test_acc": [1.0, 2.0], "test_loss": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match=r"series a.history: expected 2 steps \(one per row\), got 1"):
        log_series(run, "a.history", {"train_loss": [1.0, 2.0]}, steps=[1])
    end_run(run, "FAILED")


def _artifact_files(root: Path, name: str) -> list[Path]:
    return [p for p in (root / "mlruns").rglob(name) if p.is_file()]


def test_uploads_are_verified_and_a_lost_file_is_caught(embedded_store: Any, unique_study: str, tmp_path: Path) -> None:
    local = tmp_path / "paths.txt"
    local.write_text("loss and accuracy along the path\n")
    run = start_run(embedded_store, experiment=unique_study)
    key = log_artifact(run, local, names.FIGURES_DIR)
    assert key == "figures/paths.txt" and run.manifest.artifacts == {key: local.stat().st_size}
    verify_uploads(run)
    (stored,) = _artifact_files(tmp_path, "paths.txt")
    stored.write_text("truncated")
    with pytest.raises(UploadVerificationError, match=r"figures/paths.txt has 9 bytes, expected 33"):
        verify_uploads(run)
    stored.unlink()
    with pytest.raises(
        UploadVerificationError, match="1 upload\\(s\\) not confirmed by the store: artifact figures/paths.txt missing"
    ):
        run.verify()
    end_run(run, "FAILED")


def test_many_files_in_one_upload_are_recorded_and_verified(
    embedded_store: Any, unique_study: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    (src / "figures").mkdir(parents=True)
    files = {"metrics.json": "{}", "figures/paths.txt": "loss along the path\n", "figures/plane.txt": "grid\n"}
    for rel, text in files.items():
        (src / rel).write_text(text)
    run = start_run(embedded_store, experiment=unique_study)
    sizes = log_artifacts(run, [(src / rel, rel.rpartition("/")[0] or None) for rel in files])
    assert sizes == {rel: len(text) for rel, text in files.items()} and run.manifest.artifacts == sizes
    listed = {i.path: i.file_size for i in embedded_store.client().list_artifacts(run.run_id, names.FIGURES_DIR)}
    assert listed == {k: v for k, v in sizes.items() if k.startswith("figures/")}
    verify_uploads(run)
    (stored,) = _artifact_files(tmp_path, "plane.txt")
    stored.unlink()
    with pytest.raises(UploadVerificationError, match="artifact figures/plane.txt missing"):
        run.verify()
    assert (src / "figures" / "plane.txt").read_text() == "grid\n", "the local file is untouched"
    with pytest.raises(ValueError, match="expected one file per artifact path, got .* for figures/paths.txt"):
        log_artifacts(run, [(src / "figures/paths.txt", "figures"), (src / "figures/paths.txt", "figures")])
    with pytest.raises(FileNotFoundError, match="expected a file at .*nothing.txt"):
        log_artifacts(run, [(src / "nothing.txt", None)])
    secret = "s3cr3t-value-for-the-batch-test"
    monkeypatch.setenv("LGEOM_TEST_TOKEN", secret)
    (src / "leak.json").write_text(f'{{"token": "{secret}"}}')
    (src / "clean.txt").write_text("fine")
    with pytest.raises(SecretInArtifactError, match="got the value of LGEOM_TEST_TOKEN"):
        log_artifacts(run, [(src / "clean.txt", "more"), (src / "leak.json", "more")])
    assert embedded_store.client().list_artifacts(run.run_id, "more") == [], "nothing of the batch is uploaded"
    end_run(run, "FAILED")


def test_missing_files_and_credentials_in_text_are_refused(
    embedded_store: Any, unique_study: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-value-for-the-log-test"
    monkeypatch.setenv("LGEOM_TEST_TOKEN", secret)
    leaked = tmp_path / "probes.json"
    leaked.write_text(f'{{"url": "https://u:{secret}@example.org"}}')
    run = start_run(embedded_store, experiment=unique_study)
    with pytest.raises(FileNotFoundError, match="artifact: expected a file at .*nothing.json, got nothing there"):
        log_artifact(run, tmp_path / "nothing.json")
    with pytest.raises(SecretInArtifactError, match="got the value of LGEOM_TEST_TOKEN") as info:
        run.log_artifact(leaked)
    assert secret not in str(info.value) and run.manifest.artifacts == {}
    end_run(run, "FAILED")


def test_model_logged_verified_tagged_and_loaded_back(embedded_store: Any, unique_study: str) -> None:
    torch.manual_seed(0)
    module = build_model("mlp", num_classes=3, in_shape=(4,), depth=2, width=8, activation="relu")
    with tracked_run(embedded_store, experiment=unique_study) as run:
        rec = log_model(run, "a", module)
        with pytest.raises(ValueError, match="model name: expected letters, digits, _ . -, got 'a/b'"):
            run.log_model("a/b", module)
    assert model_uris(embedded_store, run.run_id) == {"a": rec.uri}
    assert embedded_store.client().get_run(run.run_id).data.tags[names.model_tag("a")] == rec.uri
    # MLflow's PyTorch format is a pickle: loading runs code, so it needs the caller's explicit trust.
    with pytest.raises(PermissionError, match=r"model 'a' of run .*: expected trust_pickle=True .*endpoints/a\.pt"):
        load_model(embedded_store, run.run_id, "a")
    loaded = load_model(embedded_store, run.run_id, "a", trust_pickle=True)
    for (name, value), (_, back) in zip(module.named_parameters(), loaded.named_parameters()):
        assert torch.equal(value, back), name
    with pytest.raises(KeyError, match=r"model 'b' of run .*: expected one of \['a'\], got 'b'"):
        load_model(embedded_store, run.run_id, "b", trust_pickle=True)


def test_figures_and_tables_render_in_the_ui_and_a_second_table_replaces_the_first(
    embedded_store: Any, unique_study: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fig = Figure(figsize=(3, 2))
    fig.subplots().plot([0, 1], [1, 0])
    table = pd.DataFrame({"setting": ["mlp/moons/sgd", "mlp/moons/adam"], "loss [nats]": [0.5, float("nan")]})
    with tracked_run(embedded_store, experiment=unique_study) as run:
        assert log_figure(run, fig, names.figure_artifact("line")) == "figures/line.png"
        assert run.log_table(table, names.report_table_artifact(names.BARRIER)) == "tables/barrier.json"
        run.log_table(table.iloc[:1], names.report_table_artifact(names.BARRIER))  # replaces, never appends
    client = embedded_store.client()
    assert set(run.manifest.artifacts) == {"figures/line.png", "tables/barrier.json"}  # verified at the end
    png = Path(client.download_artifacts(run.run_id, "figures/line.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(Path(client.download_artifacts(run.run_id, "tables/barrier.json", str(tmp_path))).read_text())
    assert doc["columns"] == ["setting", "loss [nats]"] and doc["data"] == [["mlp/moons/sgd", 0.5]]
    logged = json.loads(client.get_run(run.run_id).data.tags["mlflow.loggedArtifacts"])
    assert {"path": "tables/barrier.json", "type": "table"} in logged, "the UI's table view reads this tag"
    secret = "s3cr3t-value-for-the-table-test"
    monkeypatch.setenv("LGEOM_TEST_TOKEN", secret)
    other = start_run(embedded_store, experiment=unique_study)
    with pytest.raises(SecretInArtifactError, match="table tables/x.json: expected no credentials"):
        log_table(other, {"url": [f"https://u:{secret}@example.org"]}, "tables/x.json")
    assert other.manifest.artifacts == {}
    end_run(other, "FAILED")
