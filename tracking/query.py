"""Comparison queries over logged runs, returned as pandas DataFrames.

* :func:`runs` — the runs of a study (one row per run: ids, status, the lgeom tags, ``model`` /
  ``dataset`` / ``optimizer`` taken from the cell name, and ``params.*``, ``metrics.*``, ``tags.*``).
* :func:`compare` — metrics aggregated over the runs of each group (seeds, endpoint pairs):
  ``<metric>.mean``, ``<metric>.std``, ``<metric>.n``.
* :func:`path_series` — a run's values along a path (``t`` plus every column); :func:`path_tables` — all of
  a run's paths at once.
* :func:`depth_auc_table`, :func:`depth_triangle_table` — the depth study's Table 2 and Tables 3-4.
* :func:`stage_times` — seconds per trial stage of each cell (train, curve fits, path evaluation, planes,
  probes, logging ...), from the trials' ``trial/*`` metrics.
* :func:`varying_axes` — the matrix axes (params) that take more than one value across a study's runs.
* :func:`family_table`, :func:`narrow_table` — one metric family per table (row keys such as path and split,
  one column per quantity with its unit), std and n only where a setting has more than one seed pair.
* :func:`format_table` — text / CSV / Markdown rendering for the terminal (``lgeom compare``).
"""

from __future__ import annotations

import difflib
import io
import math
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lgeom import names
from lgeom.names import TAG_CELL, TAG_CONFIG_HASH, TAG_PARENT, TAG_STAGE, TAG_STUDY
from tracking.runs import quote_search_value, search_all_runs
from tracking.store import Store, resolve_store, with_retries

CELL_PARTS = ("model", "dataset", "optimizer")
DEPTH_AUC_METRICS = tuple(
    names.barrier_metric(path, "test", quantity)
    for quantity in ("acc_auc", "acc_drop")
    for path in (names.LINE, "bezier")
)
TRIANGLE_METRICS = ("dist_ac", "dist_bc", "angle_acb_deg")
FORMATS = ("text", "csv", "markdown")


class StudyNotFoundError(LookupError):
    """No experiment of that name in the store (the message lists the studies there are)."""


def _store(store: Store | None) -> Store:
    return store or resolve_store()


def experiment_id(study: str, *, store: Store | None = None) -> str:
    """The id of the experiment of ``study``.

    Raises:
        StudyNotFoundError: no such experiment (lists the existing ones, with a close match first).
    """
    store = _store(store)
    client = store.client()
    exp = with_retries(lambda: client.get_experiment_by_name(study), what=f"looking up study {study!r}")
    if exp is None or exp.lifecycle_stage == "deleted":
        studies = sorted(e.name for e in client.search_experiments(max_results=1000))
        close = difflib.get_close_matches(study, studies, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise StudyNotFoundError(
            f"study: expected one of {', '.join(repr(n) for n in studies) or 'no studies (nothing logged yet)'} "
            f"in {store.describe()}, got {study!r}{hint}"
        )
    return str(exp.experiment_id)


def runs(
    study: str,
    *,
    store: Store | None = None,
    stage: str | None = None,
    status: str | None = "FINISHED",
    cell: str | None = None,
    parent_run_id: str | None = None,
    children_only: bool = False,
    filter_string: str | None = None,
) -> pd.DataFrame:
    """The runs of ``study`` as a DataFrame, newest first.

    Args:
        stage, cell, parent_run_id: keep runs with that ``lgeom.stage`` / ``lgeom.cell`` / parent.
        status: keep runs with that status (``None``: any).
        children_only: keep only runs that have a parent (trials, not the study run itself).
        filter_string: an extra MLflow search filter, e.g. ``"params.`train.lr` = '0.05'"``.

    Returns:
        columns ``run_id, run_name, status, start_time, end_time, parent_run_id, study, cell, stage,
        config_hash, model, dataset, optimizer`` then ``params.<k>``, ``metrics.<k>``, ``tags.<k>``
        (empty frame with those fixed columns when nothing matches).

    Raises:
        StudyNotFoundError: unknown study.
    """
    store = _store(store)
    exp_id = experiment_id(study, store=store)
    filters = []
    if status:
        filters.append(f"attributes.status = '{status}'")
    for tag, value in ((TAG_STAGE, stage), (TAG_CELL, cell), (TAG_PARENT, parent_run_id)):
        if value is not None:
            filters.append(f"tags.`{tag}` = {quote_search_value(value)}")
    if filter_string:
        filters.append(filter_string)
    found = search_all_runs(store, [exp_id], " and ".join(filters), order_by=["attributes.start_time DESC"])
    rows = []
    for r in found:
        tags = r.data.tags
        if children_only and TAG_PARENT not in tags:
            continue
        cell_name = tags.get(TAG_CELL, "")
        parts = cell_name.split("/") if cell_name else []
        row: dict[str, Any] = {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name,
            "status": r.info.status,
            "start_time": pd.to_datetime(r.info.start_time, unit="ms") if r.info.start_time else pd.NaT,
            "end_time": pd.to_datetime(r.info.end_time, unit="ms") if r.info.end_time else pd.NaT,
            "parent_run_id": tags.get(TAG_PARENT),
            "study": tags.get(TAG_STUDY, study),
            "cell": cell_name or None,
            "stage": tags.get(TAG_STAGE),
            "config_hash": tags.get(TAG_CONFIG_HASH),
        }
        for i, name in enumerate(CELL_PARTS):
            row[name] = parts[i] if len(parts) > i else None
        row.update({f"params.{k}": v for k, v in r.data.params.items()})
        row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
        row.update({f"tags.{k}": v for k, v in tags.items() if not k.startswith("mlflow.")})
        rows.append(row)
    fixed = [
        "run_id",
        "run_name",
        "status",
        "start_time",
        "end_time",
        "parent_run_id",
        "study",
        "cell",
        "stage",
        "config_hash",
        *CELL_PARTS,
    ]
    if not rows:
        return pd.DataFrame(columns=fixed)
    df = pd.DataFrame(rows)
    rest = sorted(c for c in df.columns if c not in fixed)
    return df[fixed + rest]


def resolve_column(df: pd.DataFrame, name: str) -> str:
    """The column of ``df`` that ``name`` refers to: itself, else ``params.<name>``, ``tags.<name>``,
    ``metrics.<name>``.

    Raises:
        KeyError: no such column (lists the candidates, a close match first).
    """
    for candidate in (name, f"params.{name}", f"tags.{name}", f"metrics.{name}"):
        if candidate in df.columns:
            return candidate
    columns = sorted(c for c in df.columns)
    short = sorted({c.split(".", 1)[1] if c.startswith(("params.", "tags.", "metrics.")) else c for c in columns})
    close = difflib.get_close_matches(name, short, n=3)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    metrics = [c[len("metrics.") :] for c in columns if c.startswith("metrics.")]
    listed = ", ".join(metrics[:40]) + (f" ... ({len(metrics)} in all)" if len(metrics) > 40 else "")
    raise KeyError(
        f"column {name!r}: expected a run field, param, tag or metric of the runs, got none of that name{hint}; "
        f"metrics: {listed or 'none'}"
    )


def natural_key(value: Any) -> tuple[Any, ...]:
    """Sort key that orders ``preresnet8`` before ``preresnet26`` and numbers numerically."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ((2, ""),)
    if isinstance(value, (int, float)):
        return ((0, float(value)),)
    text = str(value)
    try:
        return ((0, float(text)),)
    except ValueError:
        pass
    return tuple((0, float(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p)


def _sort_groups(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    if df.empty:
        return df
    keys = df[list(by)].apply(lambda row: tuple(natural_key(v) for v in row), axis=1)
    return df.assign(_key=keys).sort_values("_key").drop(columns="_key").reset_index(drop=True)


def compare(
    study: str | pd.DataFrame,
    metrics: Sequence[str],
    by: Sequence[str] = ("model", "dataset"),
    *,
    store: Store | None = None,
    stage: str | None = None,
    children_only: bool = True,
) -> pd.DataFrame:
    """Aggregate ``metrics`` over the runs of each ``by`` group (e.g. over the seeds / endpoint pairs of a
    model): one row per group with the ``by`` columns, then ``<metric>.mean``, ``<metric>.std`` (sample
    std, NaN for one run) and ``<metric>.n`` (runs with a finite value) per metric.

    Args:
        study: a study name (FINISHED runs are fetched with :func:`runs`) or a frame from :func:`runs`.
        metrics: metric names as logged (``bezier.test.acc_auc``) or any column name.
        by: grouping keys: ``model``, ``dataset``, ``optimizer``, ``cell``, a param (``model.depth``,
            ``train.lr``), a tag, or a column.

    Raises:
        ValueError: no metrics given.
        KeyError: a metric or grouping key the runs do not have (with a close match).
        StudyNotFoundError: unknown study.
    """
    if not metrics:
        raise ValueError("metrics: expected at least one metric name, got none")
    df = (
        study if isinstance(study, pd.DataFrame) else runs(study, store=store, stage=stage, children_only=children_only)
    )
    by = list(by)
    out_cols = [*by] + [f"{m}.{s}" for m in metrics for s in ("mean", "std", "n")]
    if df.empty:
        return pd.DataFrame(columns=out_cols)
    by_cols = [resolve_column(df, b) for b in by]
    metric_cols = [resolve_column(df, m) for m in metrics]
    work = df[by_cols].copy()
    work.columns = by
    for m, c in zip(metrics, metric_cols):
        work[m] = pd.to_numeric(df[c], errors="coerce")
    work[by] = work[by].fillna("-")
    rows = []
    for key, group in work.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, key))
        for m in metrics:
            values = group[m][group[m].map(lambda v: math.isfinite(v) if pd.notna(v) else False)]
            row[f"{m}.mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{m}.std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            row[f"{m}.n"] = int(len(values))
        rows.append(row)
    return _sort_groups(pd.DataFrame(rows, columns=out_cols), by)


def path_series(run_id: str, path: str, *, store: Store | None = None) -> pd.DataFrame:
    """The values along ``path`` (``linear``, ``bezier``, ...) logged for ``run_id``: column ``t`` plus every
    logged column (``test_acc``, ``hessian_lambda_max`` ...), one row per point.

    Read from the run's ``paths/<path>.csv`` artifact; without it, rebuilt from the metric histories
    ``<path>.<column>`` (step = point index, ``t`` evenly spaced).

    Raises:
        KeyError: the run has no series for ``path`` (lists the paths it has).
    """
    store = _store(store)
    client = store.client()
    table = names.path_table_artifact(path)
    files = _path_files(client, run_id)
    if table in files:
        with tempfile.TemporaryDirectory(prefix="lgeom-path-") as tmp:
            local = with_retries(lambda: client.download_artifacts(run_id, table, tmp), what="downloading a path table")
            return pd.read_csv(local)
    run = with_retries(lambda: client.get_run(run_id), what=f"reading run {run_id}")
    rebuilt = _series_from_metrics(client, run, {path})
    if path not in rebuilt:
        series = (names.parse_series_metric(k) for k in run.data.metrics)
        have = sorted({Path(f).stem for f in files} | {p[0] for p in series if p is not None})
        raise KeyError(f"path {path!r} of run {run_id}: expected one of {have or 'none logged'}, got {path!r}")
    return rebuilt[path]


def path_tables(run_id: str, *, store: Store | None = None) -> dict[str, pd.DataFrame]:
    """Every path series of ``run_id`` as ``{path: table}``, each table what :func:`path_series` gives for
    that path, read with one listing and one download of the run's ``paths/`` folder (and, for paths logged
    only as metric histories, one read of the run). A study's report reads hundreds of runs this way.
    """
    store = _store(store)
    client = store.client()
    files = _path_files(client, run_id)
    tables: dict[str, pd.DataFrame] = {}
    if files:
        with tempfile.TemporaryDirectory(prefix="lgeom-path-") as tmp:
            folder = Path(
                with_retries(
                    lambda: client.download_artifacts(run_id, names.PATHS_DIR, tmp), what="downloading path tables"
                )
            )
            for f in sorted(files):
                tables[Path(f).stem] = pd.read_csv(folder / Path(f).name)
    run = with_retries(lambda: client.get_run(run_id), what=f"reading run {run_id}")
    logged = {p[0] for p in map(names.parse_series_metric, run.data.metrics) if p is not None}
    tables.update(_series_from_metrics(client, run, logged - set(tables)))
    return tables


def _path_files(client: Any, run_id: str) -> set[str]:
    """The ``paths/*.csv`` tables logged for ``run_id`` (artifact paths)."""
    listed = with_retries(lambda: client.list_artifacts(run_id, names.PATHS_DIR), what="listing paths/")
    return {i.path for i in listed if not i.is_dir and i.path.endswith(".csv")}


def _series_from_metrics(client: Any, run: Any, paths: set[str]) -> dict[str, pd.DataFrame]:
    """Path tables rebuilt from the metric histories ``<path>.<column>`` of ``run`` for each of ``paths``
    (step = point index, ``t`` evenly spaced); a path whose histories have at most one value is left out.
    """
    run_id = run.info.run_id
    columns: dict[str, dict[str, pd.Series]] = {}
    for key in run.data.metrics:
        parsed = names.parse_series_metric(key)
        if parsed is None or parsed[0] not in paths:
            continue
        hist = with_retries(lambda: client.get_metric_history(run_id, key), what=f"reading metric {key}")
        if len(hist) > 1:
            columns.setdefault(parsed[0], {})[parsed[1]] = pd.Series({m.step: m.value for m in hist}).sort_index()
    out: dict[str, pd.DataFrame] = {}
    for path, cols in columns.items():
        df = pd.DataFrame(cols).sort_index()
        n = len(df)
        df.insert(0, "t", [i / (n - 1) if n > 1 else 0.0 for i in range(n)])
        out[path] = df.reset_index(drop=True)
    return out


def _with_n_params(table: pd.DataFrame, df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Add an ``n_params`` column (median per group) when the runs record it, and sort by it."""
    try:
        col = resolve_column(df, "n_params")
    except KeyError:
        return table
    work = df[[resolve_column(df, b) for b in by]].copy()
    work.columns = list(by)
    work = work.fillna("-")
    work["n_params"] = pd.to_numeric(df[col], errors="coerce")
    med = work.groupby(list(by), dropna=False)["n_params"].median().reset_index()
    out = table.merge(med, on=list(by), how="left")
    cols = list(by) + ["n_params"] + [c for c in table.columns if c not in by]
    return out[cols].sort_values("n_params", kind="stable").reset_index(drop=True)


def depth_auc_table(
    study: str | pd.DataFrame, *, store: Store | None = None, by: Sequence[str] = ("model", "dataset")
) -> pd.DataFrame:
    """The depth study's Table 2: per model, the AUC and the peak accuracy drop of the convex (linear)
    path and of the Bezier curve on the test set (mean, std, n over endpoint pairs), with ``n_params``.

    Metrics: ``linear.test.acc_auc``, ``bezier.test.acc_auc``, ``linear.test.acc_drop``,
    ``bezier.test.acc_drop``.
    """
    df = study if isinstance(study, pd.DataFrame) else runs(study, store=store, children_only=True)
    present = [m for m in DEPTH_AUC_METRICS if f"metrics.{m}" in df.columns]
    if not present:
        raise KeyError(f"depth AUC table: expected runs with metrics {', '.join(DEPTH_AUC_METRICS)}, got none of them")
    table = compare(df[df[[f"metrics.{m}" for m in present]].notna().any(axis=1)], present, by)
    return _with_n_params(table, df, by)


def depth_triangle_table(
    study: str | pd.DataFrame,
    *,
    store: Store | None = None,
    by: Sequence[str] = ("model", "dataset"),
    curves: Sequence[str] = (*names.CURVES, *(names.aligned(c) for c in names.CURVES)),
) -> pd.DataFrame:
    """The depth study's Tables 3-4: per model and curve (aligned curves too when logged), ``||A-C||``,
    ``||B-C||`` and the angle ACB in degrees (metrics ``triangle/<curve>/dist_ac``, ``.../dist_bc``,
    ``.../angle_acb_deg``), mean/std/n.

    Returns:
        one row per (``by``..., ``curve``) with ``dist_ac.*``, ``dist_bc.*``, ``angle_acb_deg.*`` columns.
    """
    df = study if isinstance(study, pd.DataFrame) else runs(study, store=store, children_only=True)
    parts = []
    for curve in curves:
        metrics = {names.triangle_metric(curve, m): m for m in TRIANGLE_METRICS}
        if not any(f"metrics.{n}" in df.columns for n in metrics):
            continue
        sub = df[df[[f"metrics.{n}" for n in metrics if f"metrics.{n}" in df.columns]].notna().any(axis=1)].copy()
        for n in metrics:
            if f"metrics.{n}" not in sub.columns:
                sub[f"metrics.{n}"] = math.nan
        t = compare(sub, list(metrics), by)
        t = t.rename(
            columns={f"{n}.{stat}": f"{m}.{stat}" for n, m in metrics.items() for stat in ("mean", "std", "n")}
        )
        t.insert(len(by), "curve", curve)
        parts.append(_with_n_params(t, df, by))
    if not parts:
        raise KeyError(
            "triangle table: expected runs with metrics "
            f"{', '.join(names.triangle_metric('<curve>', m) for m in TRIANGLE_METRICS)} for "
            f"curves {', '.join(curves)}, got none"
        )
    out = pd.concat(parts, ignore_index=True)
    keys = [c for c in ("n_params", *by, "curve") if c in out.columns]
    return out.sort_values(
        keys, kind="stable", key=lambda s: s.map(natural_key) if s.dtype == object else s
    ).reset_index(drop=True)


#: Columns of :func:`stage_times` after ``cell``, in order: the parts of a trial's wall time, the total, and the
#: CPU seconds of the compute (the stages from train to probe).
STAGE_TIME_COLUMNS = (
    "train",
    "fit",
    "path_eval",
    "plane",
    "connect_other",
    "probe",
    "log",
    "other",
    "total",
    "compute_cpu",
)


def stage_times(study: str | pd.DataFrame, *, store: Store | None = None) -> pd.DataFrame:
    """Seconds each cell's trial spent per stage, read from its child run's ``trial/<stage>_s`` metrics
    (:data:`lgeom.names.TRIAL_TIMES`): ``train``, ``fit`` (curve fits), ``path_eval`` (every path's points),
    ``plane`` (planes through A, C, B), ``connect_other`` (the rest of the connect stage: endpoint evaluation,
    alignment, figures), ``probe``, ``log`` (the bundle to MLflow), ``other`` (the rest of the wall time:
    starting the run, params, the dataset input), ``total`` (the trial's wall time; the parts sum to it) and
    ``compute_cpu`` (CPU seconds of the process over train to probe, all threads).

    Args:
        study: a study name (its FINISHED trials are fetched with :func:`runs`) or a frame from :func:`runs`.

    Returns:
        one row per cell (its newest trial), ``cell`` then :data:`STAGE_TIME_COLUMNS`, ordered by cell; a
        trial that lacks a metric (logged before stage timing existed) has NaN there.

    Raises:
        StudyNotFoundError: unknown study.
    """
    df = study if isinstance(study, pd.DataFrame) else runs(study, store=store, stage=names.STAGE_TRIAL)
    if not df.empty and "stage" in df.columns:
        df = df[df["stage"] == names.STAGE_TRIAL]
    if df.empty:
        return pd.DataFrame(columns=["cell", *STAGE_TIME_COLUMNS])
    if "start_time" in df.columns:
        df = df.sort_values("start_time", ascending=False, kind="stable")
    df = df.drop_duplicates("cell")

    def metric(quantity: str) -> pd.Series:
        col = f"metrics.{names.trial_metric(quantity)}"
        return pd.to_numeric(df[col], errors="coerce") if col in df.columns else pd.Series(math.nan, index=df.index)

    out = pd.DataFrame({"cell": df["cell"]})
    for column in ("train", "fit", "path_eval", "plane", "probe", "log"):  # metric trial/<column>_s
        out[column] = metric(f"{column}_s")
    out["connect_other"] = metric("connect_s") - out["fit"] - out["path_eval"] - out["plane"]
    out["total"] = metric("wall_time_s")
    out["compute_cpu"] = metric("compute_cpu_s")
    out["other"] = out["total"] - out["train"] - metric("connect_s") - out["probe"] - out["log"]
    return _sort_groups(out[["cell", *STAGE_TIME_COLUMNS]], ["cell"])


# --- matrix axes and per-family tables --------------------------------------------------------------------

#: Config sections whose params can be matrix axes.
AXIS_SECTIONS = ("model", "data", "train", "curve", "probe")
#: The dataset axis (one figure panel per dataset).
DATASET_AXIS = "data.name"
# Vocabulary order of row keys (paths, points, splits), so tables read linear, bezier, polychain, aligned.
_KEY_ORDER = {
    v: i for i, v in enumerate((*names.PATHS, *(names.aligned(p) for p in names.PATHS), *names.POINTS, *names.SPLITS))
}


def is_numeric_axis(values: pd.Series) -> bool:
    """Whether every present value of an axis reads as a number (``model.depth``, ``train.lr``)."""
    present = values.dropna()
    return bool(len(present)) and bool(pd.to_numeric(present, errors="coerce").notna().all())


def varying_axes(df: pd.DataFrame) -> list[str]:
    """The params of :data:`AXIS_SECTIONS` (``model.depth``, ``train.optimizer``, ``data.name`` ...) that take
    more than one value across the runs of ``df``, i.e. the matrix axes that vary, in column order. A param
    that does not apply to a run (missing there, like ``train.momentum`` on an Adam cell) adds no value;
    seeds are never an axis (runs that differ only in seeds are the repeats of one setting).
    """
    out = []
    for col in df.columns:
        if not col.startswith("params."):
            continue
        key = col[len("params.") :]
        if key.split(".", 1)[0] not in AXIS_SECTIONS or "seed" in key.rsplit(".", 1)[-1]:
            continue
        if df[col].dropna().astype(str).nunique() > 1:
            out.append(key)
    return out


def _key_rank(value: Any) -> tuple[Any, ...]:
    return (_KEY_ORDER.get(value, len(_KEY_ORDER)), *natural_key(value))


def family_table(df: pd.DataFrame, family: str, by: Sequence[str] = ("setting",)) -> pd.DataFrame:
    """One metric family of the runs as a narrow table: one row per ``by`` group and row key (the name parts
    between family and quantity, :data:`lgeom.names.REPORT_FAMILIES`: ``path``, ``split`` for ``barrier``),
    one ``<quantity>.mean`` / ``.std`` (sample std, NaN for one value) / ``.n`` (finite values, i.e. seed
    pairs) triple per quantity of :data:`lgeom.names.QUANTITY_INFO` that some run has. Every path kind the
    runs logged is kept (``polychain_aligned`` included). Empty frame when no run has the family.

    Raises:
        KeyError: ``family`` is not one the report tabulates, or a ``by`` key the runs do not have.
    """
    if family not in names.REPORT_FAMILIES:
        raise KeyError(f"family: expected one of {', '.join(names.REPORT_FAMILIES)}, got {family!r}")
    labels = names.REPORT_FAMILIES[family]
    known = list(names.QUANTITY_INFO[family])
    by = list(by)
    parts = []
    for col in df.columns:
        parsed = names.split_metric_name(col[len("metrics.") :]) if col.startswith("metrics.") else None
        if parsed is None or parsed[0] != family or parsed[2] not in known:
            continue
        middle = parsed[1]
        if len(middle) < len(labels) or (not labels and middle):
            continue
        # Extra parts (triangle/<curve>/mid/...) stay in the last row key: ``bezier/mid``.
        key = (*middle[: len(labels) - 1], names.SEP.join(middle[len(labels) - 1 :])) if labels else ()
        values = pd.to_numeric(df[col], errors="coerce")
        if not values.map(lambda v: pd.notna(v) and math.isfinite(v)).any():
            continue
        part = pd.DataFrame({b: df[resolve_column(df, b)].fillna("-").to_numpy() for b in by})
        for label, k in zip(labels, key):
            part[label] = k
        part["quantity"] = parsed[2]
        part["value"] = values.where(values.map(lambda v: pd.notna(v) and math.isfinite(v))).to_numpy()
        parts.append(part)
    if not parts:
        return pd.DataFrame()
    long = pd.concat(parts, ignore_index=True)
    keys = [*by, *labels]
    agg = long.groupby([*keys, "quantity"], sort=False, dropna=False)["value"].agg(["mean", "std", "count"])
    agg = agg.rename(columns={"count": "n"}).reset_index()
    quantities = [q for q in known if q in set(agg["quantity"])]
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in agg.itertuples(index=False):
        rec_d = rec._asdict()
        key = tuple(rec_d[k] for k in keys) if keys else ()
        row = rows.setdefault(key, dict(zip(keys, key)))
        q = rec_d["quantity"]
        row[f"{q}.mean"], row[f"{q}.std"], row[f"{q}.n"] = rec_d["mean"], rec_d["std"], int(rec_d["n"])
    columns = [*keys, *(f"{q}.{stat}" for q in quantities for stat in ("mean", "std", "n"))]
    out = pd.DataFrame(list(rows.values())).reindex(columns=columns)
    for q in quantities:
        out[f"{q}.n"] = out[f"{q}.n"].fillna(0).astype(int)
    if not keys:
        return out.reset_index(drop=True)
    order = out[keys].apply(lambda r: tuple((natural_key(r[k]) if k in by else _key_rank(r[k])) for k in keys), axis=1)
    return out.assign(_key=order).sort_values("_key").drop(columns="_key").reset_index(drop=True)


def has_repeats(table: pd.DataFrame) -> bool:
    """Whether some row of a :func:`family_table` / :func:`compare` result aggregates more than one run."""
    n_cols = [c for c in table.columns if c.endswith(".n")]
    return bool(n_cols) and bool((table[n_cols].fillna(0).to_numpy() > 1).any())


def narrow_table(table: pd.DataFrame, family: str, *, text: bool = True, digits: int = 4) -> pd.DataFrame:
    """A :func:`family_table` ready to show: one column per quantity headed ``<quantity> [<unit>]``; the std
    (``mean ± std`` with ``text``, else a ``<quantity> std`` column) and an ``n`` column (seed pairs, the most
    of the row's quantities) only when some row has n > 1. ``text=False`` keeps numbers (``mlflow.log_table``).
    """
    if table.empty:
        return table
    spread = has_repeats(table)
    quantities = [c[: -len(".mean")] for c in table.columns if c.endswith(".mean")]
    keys = [c for c in table.columns if not c.endswith((".mean", ".std", ".n"))]
    out = table[keys].copy()
    for q in quantities:
        unit = names.quantity_info(family, q)[0]
        mean, std = table[f"{q}.mean"], table[f"{q}.std"]
        head = f"{q} [{unit}]"
        if text:
            out[head] = [
                "-" if pd.isna(m) else f"{m:.{digits}g}" + (f" ± {s:.2g}" if spread and pd.notna(s) else "")
                for m, s in zip(mean, std)
            ]
        else:
            out[head] = mean
            if spread:
                out[f"{q} std"] = std
    if spread:
        out["n"] = table[[f"{q}.n" for q in quantities]].max(axis=1).astype(int)
    return out.reset_index(drop=True)


# --- rendering --------------------------------------------------------------------------------------------


def _merge_mean_std(df: pd.DataFrame, digits: int) -> pd.DataFrame:
    """``<m>.mean`` + ``<m>.std`` -> one ``<m>`` column ``"mean ± std"``; ``<m>.n`` -> ``n`` when all agree and
    some group has more than one run.
    """
    out = pd.DataFrame(index=df.index)
    n_cols = [c for c in df.columns if c.endswith(".n")]
    repeats = has_repeats(df)  # one run per group: no spread to show, so no n column either
    same_n = bool(n_cols) and all(df[c].equals(df[n_cols[0]]) for c in n_cols) and repeats
    for c in df.columns:
        if c.endswith(".mean"):
            base = c[: -len(".mean")]
            std = df.get(f"{base}.std")
            out[base] = [
                ("-" if pd.isna(m) else f"{m:.{digits}f}") + ("" if std is None or pd.isna(s) else f" ± {s:.{digits}f}")
                for m, s in zip(df[c], std if std is not None else [math.nan] * len(df))
            ]
        elif c.endswith(".std") or (c.endswith(".n") and (same_n or not repeats)):
            continue
        elif c == "n_params":
            out[c] = df[c].map(lambda v: "-" if pd.isna(v) else f"{int(v):,}")
        else:
            out[c] = df[c]
    if same_n:
        out["n"] = df[n_cols[0]]
    return out


def format_table(df: pd.DataFrame, fmt: str = "text", *, digits: int = 3) -> str:
    """Render a query result: ``text`` (aligned, ``mean ± std``), ``csv`` (raw numbers) or ``markdown``.

    Raises:
        ValueError: unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "csv":
        buf = io.StringIO()
        df.to_csv(buf, index=False)
        return buf.getvalue()
    if df.empty:
        return "(no runs)"
    pretty = _merge_mean_std(df, digits).astype(str)
    if fmt == "text":
        return pretty.to_string(index=False)
    header = "| " + " | ".join(pretty.columns) + " |"
    rule = "|" + "|".join("---" for _ in pretty.columns) + "|"
    body = ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in pretty.itertuples(index=False)]
    return "\n".join([header, rule, *body])
