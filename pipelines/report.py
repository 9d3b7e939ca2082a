"""Step ``report``: a study's results section as Markdown + HTML (tables and figures), written to a folder
and logged as the ``report/`` artifact of the study's parent run.

    lgeom report --study quick --out reports/quick
    mlflow run . -e report -P study=quick -P out=reports/quick --env-manager local
"""

from __future__ import annotations

import html
import io
import re
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from lgeom import names
from tracking.log import TrackedRun
from tracking.plots import study_figures
from tracking.query import (
    StudyNotFoundError,
    compare,
    depth_auc_table,
    depth_triangle_table,
    format_table,
    runs,
)
from tracking.runs import attach_run
from tracking.store import connect, resolve_store

_LINE, _BEZIER, _POLYCHAIN = names.PATHS
# The main comparison: endpoints, barriers of every path, triangle geometry, curvature, sharpness.
MAIN_METRICS = (
    names.endpoint_metric("a", "test", "acc"),
    names.endpoint_metric("b", "test", "acc"),
    *(names.barrier_metric(p, "test", "loss_barrier") for p in (*names.PATHS, names.aligned(_LINE))),
    names.barrier_metric(_BEZIER, "test", "acc_auc"),
    names.triangle_metric(_BEZIER, "angle_acb_deg"),
    names.probe_metric(names.HESSIAN, "lambda_max", point="a"),
    names.probe_metric(names.HESSIAN, "lambda_max", point=names.MID),
    names.probe_metric(names.SHARPNESS, "eps_avg", point="a"),
)
SECTIONS = {
    "Endpoints": tuple(
        names.endpoint_metric(e, s, q)
        for q, s, e in (
            ("acc", "train", "a"),
            ("acc", "test", "a"),
            ("acc", "train", "b"),
            ("acc", "test", "b"),
            ("loss", "test", "a"),
            ("loss", "test", "b"),
        )
    ),
    "Barriers along paths (test set)": tuple(
        names.barrier_metric(p, "test", m)
        for p in (*names.PATHS, names.aligned(_LINE), names.aligned(_BEZIER))
        for m in names.BARRIER_QUANTITIES
    ),
    "Generalisation gap along paths": tuple(names.gap_metric(p, "gen_gap_max") for p in names.PATHS),
    "Triangle A, C, B": tuple(names.triangle_metric(c, m) for c in names.CURVES for m in names.TRIANGLE_QUANTITIES),
    "Curvature and sharpness": tuple(
        names.probe_metric(k, m, point=p)
        for p in names.POINTS
        for k, m in (
            (names.HESSIAN, "lambda_max"),
            (names.HESSIAN, "topk_mean"),
            (names.HESSIAN, "trace"),
            (names.SHARPNESS, "eps_avg"),
            (names.SHARPNESS, "eps_worst"),
        )
    ),
}


def with_setting(df: pd.DataFrame) -> pd.DataFrame:
    """Add column ``setting``: the cell name without its seed-pair part, so groups aggregate over seeds."""
    out = df.copy()
    if "cell" in out.columns:
        out["setting"] = out["cell"].astype(str).map(lambda c: re.sub(r"/seeds=[^/]*", "", c))
    return out


def present_metrics(df: pd.DataFrame, metrics: tuple[str, ...] | list[str]) -> list[str]:
    """The metrics of ``metrics`` that at least one run has."""
    return [m for m in metrics if f"metrics.{m}" in df.columns and df[f"metrics.{m}"].notna().any()]


def main_table(study: str, *, store: Any = None, metrics: tuple[str, ...] = MAIN_METRICS) -> pd.DataFrame:
    """The study's main comparison table: one row per setting (cell without seeds), mean/std/n of
    :data:`MAIN_METRICS` over seed pairs. Empty frame when nothing is logged yet.
    """
    df = runs(study, store=store, stage=names.STAGE_TRIAL, children_only=True)
    if df.empty:
        return pd.DataFrame()
    df = with_setting(df)
    return compare(df, present_metrics(df, metrics) or [names.endpoint_metric("a", "test", "acc")], ["setting"])


def write_report(study: str, out: str | Path, *, store: Any = None, parent: TrackedRun | None = None) -> Path:
    """Write ``report.md`` and ``report.html`` (+ ``figures/``, ``tables/``) for ``study`` into ``out``; with
    ``parent`` (a ``tracking.runs.TrackedRun``, default: the newest study run), also log the folder as its
    ``report/`` artifact.

    Returns:
        the path of ``report.md``.

    Raises:
        tracking.query.StudyNotFoundError: no such study.
    """
    store = store or resolve_store()
    out = Path(out)
    (out / names.REPORT_TABLES_DIR).mkdir(parents=True, exist_ok=True)
    df = with_setting(runs(study, store=store, stage=names.STAGE_TRIAL, children_only=True))
    md: list[str] = [
        f"# {study}: results",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} from {len(df)} FINISHED cell run(s) in {store.describe()}.",
        "",
    ]
    html_parts: list[str] = [f"<h1>{html.escape(study)}: results</h1>", f"<p>{html.escape(md[2])}</p>"]
    if not df.empty:
        for title, metrics in SECTIONS.items():
            shown = present_metrics(df, metrics)
            if not shown:
                continue
            table = compare(df, shown, ["setting"])
            _add_table(md, html_parts, out, title, table)
        for title, fn in (
            ("Depth study: AUC and peak accuracy drop (Table 2)", depth_auc_table),
            ("Depth study: triangle geometry (Tables 3-4)", depth_triangle_table),
        ):
            if "params.model.depth" in df.columns and df["params.model.depth"].nunique() > 1:
                try:
                    _add_table(md, html_parts, out, title, fn(df))
                except KeyError:
                    pass
    figures = study_figures(
        study, out / names.FIGURES_DIR, store=store, parent_run_id=parent.run_id if parent else None, log=False
    )
    if figures:
        md += ["## Figures", ""]
        html_parts.append("<h2>Figures</h2>")
        for f in figures:
            rel = f.relative_to(out).as_posix()
            md += [f"![{f.stem}]({rel})", ""]
            html_parts.append(
                f'<figure><img src="{html.escape(rel)}" alt="{html.escape(f.stem)}" width="640">'
                f"<figcaption>{html.escape(f.stem)}</figcaption></figure>"
            )
    if df.empty:
        md.append("No FINISHED cells yet.")
        html_parts.append("<p>No FINISHED cells yet.</p>")
    (out / names.REPORT_MARKDOWN).write_text("\n".join(md) + "\n")
    (out / names.REPORT_HTML).write_text(_html_page(study, "\n".join(html_parts)))
    if parent is None:
        parents = runs(study, store=store, stage=names.STAGE_STUDY, status=None)
        parent = attach_run(store, str(parents.iloc[0]["run_id"])) if not parents.empty else None
    if parent is not None:
        for p in sorted(out.rglob("*")):
            if p.is_file():
                parent.log_artifact(
                    p, str(Path(names.REPORT_DIR) / p.parent.relative_to(out)).rstrip("/.") or names.REPORT_DIR
                )
        parent.verify()
    return out / names.REPORT_MARKDOWN


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def _add_table(md: list[str], html_parts: list[str], out: Path, title: str, table: pd.DataFrame) -> None:
    table.to_csv(out / names.REPORT_TABLES_DIR / f"{_slug(title)}.csv", index=False)
    md += [f"## {title}", "", format_table(table, "markdown"), ""]
    pretty = format_table(table, "csv")
    frame = pd.read_csv(io.StringIO(pretty))
    html_parts += [
        f"<h2>{html.escape(title)}</h2>",
        frame.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}", border=0),
    ]


def _html_page(title: str, body: str) -> str:
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;}table{border-collapse:collapse;font-size:13px;}"
        "th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right;}th{background:#f4f4f4;}"
        "figure{display:inline-block;margin:1em;}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>\n{body}\n</body></html>\n"
    )


def add_arguments(parser: Any, step: str) -> None:
    """``--study``, ``--out``, ``--tracking-uri``."""
    parser.add_argument("--study", required=True, help="study (MLflow experiment) name")
    parser.add_argument("--out", default="", help="output folder (default reports/<study>)")
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or ./mlflow.db)"
    )


def cli(cfg: Any, args: Any) -> int:
    """``lgeom report``: write the report and print its path."""
    store = connect(args.tracking_uri)
    try:
        path = write_report(args.study, Path(args.out or Path("reports") / args.study), store=store)
    except StudyNotFoundError as err:
        raise ValueError(str(err)) from None
    print(f"report: {path} (and {path.with_suffix('.html')})")
    return 0


if __name__ == "__main__":
    from pipelines.cli import main as cli_main

    sys.exit(cli_main(["report", *sys.argv[1:]]))
