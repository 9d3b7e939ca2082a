"""Step ``report``: a study's results as Markdown + self-contained HTML (one narrow table per metric family,
with units and definitions; figures over the matrix axes that vary), written to a folder and logged to the
study's parent run: the folder as ``report/``, each figure with ``mlflow.log_figure`` (``figures/<name>.png``)
and each table with ``mlflow.log_table`` (``tables/<family>.json``), so the MLflow UI shows them.

``report.html`` embeds every figure as a ``data:`` URI (no links to other files), so it renders in MLflow's
artifact viewer, which shows HTML in a sandboxed frame; ``report.md`` links the PNGs under ``figures/``.

    lgeom report --study quick --out reports/quick
    mlflow run . -e report -P study=quick -P out=reports/quick --env-manager local
"""

from __future__ import annotations

import base64
import html
import re
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from lgeom import names
from tracking.figures import save_figure
from tracking.log import TrackedRun
from tracking.plots import log_study_figures, study_figure_set
from tracking.query import (
    StudyNotFoundError,
    compare,
    family_table,
    has_repeats,
    narrow_table,
    natural_key,
    runs,
    varying_axes,
)
from tracking.runs import attach_run
from tracking.store import connect, resolve_store

_BEZIER = names.CURVES[0]
_ALL_PATHS = (*names.PATHS, *(names.aligned(p) for p in names.PATHS))
# The terminal's comparison table (``lgeom study`` / ``lgeom compare``): endpoints, the test loss barrier of
# every path kind (aligned ones included), AUC, triangle angle, curvature, sharpness.
MAIN_METRICS = (
    names.endpoint_metric("a", "test", "acc"),
    names.endpoint_metric("b", "test", "acc"),
    *(names.barrier_metric(p, "test", "loss_barrier") for p in _ALL_PATHS),
    names.barrier_metric(_BEZIER, "test", "acc_auc"),
    names.triangle_metric(_BEZIER, "angle_acb_deg"),
    names.probe_metric(names.HESSIAN, "lambda_max", point="a"),
    names.probe_metric(names.HESSIAN, "lambda_max", point=names.MID),
    names.probe_metric(names.SHARPNESS, "eps_avg", point="a"),
)
#: The report's section title of each metric family (tables in this order).
FAMILY_TITLES = {
    names.ENDPOINT: "Endpoints",
    names.BARRIER: "Barriers along paths",
    names.GAP: "Generalisation gap along paths",
    names.TRIANGLE: "Triangle A, C, B",
    names.FIT: "Curve fits",
    names.ALIGN: "Permutation alignment of B onto A",
    names.PROBE: "Loss at the probed points",
    names.HESSIAN: "Hessian",
    names.SHARPNESS: "Sharpness",
    names.CURVATURE: "Monte-Carlo curvature",
    names.PCA: "PCA plane of A's training trajectory",
    names.GRADIENTS: "Effective dimensionality of A's gradients",
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


def family_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{family: family_table}`` of every family of :data:`FAMILY_TITLES` some run of ``df`` (trial runs
    with a ``setting`` column) has, in that order.
    """
    if df.empty:
        return {}
    tables = {family: family_table(df, family) for family in FAMILY_TITLES}
    return {family: t for family, t in tables.items() if not t.empty}


def axes_sentence(df: pd.DataFrame) -> str:
    """One sentence naming the matrix axes that vary and their values (what the figures are drawn over)."""
    axes = varying_axes(df)
    if not axes:
        return "One setting: no matrix axis varies."
    parts = []
    for axis in axes:
        values = sorted(df[f"params.{axis}"].dropna().astype(str).unique(), key=natural_key)
        parts.append(f"{axis} ({', '.join(values)})")
    return "Matrix axes that vary: " + "; ".join(parts) + "."


def png_data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI (embedded in the HTML, no file link)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _definitions(family: str, table: pd.DataFrame) -> list[tuple[str, str, str]]:
    quantities = [c[: -len(".mean")] for c in table.columns if c.endswith(".mean")]
    return [(q, *names.quantity_info(family, q)) for q in quantities]


def _markdown_table(frame: pd.DataFrame) -> str:
    cells = frame.astype(str)
    header = "| " + " | ".join(cells.columns) + " |"
    rule = "|" + "|".join("---" for _ in cells.columns) + "|"
    body = ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _spread_note(table: pd.DataFrame) -> str:
    if has_repeats(table):
        return "Mean ± sample std over seed pairs; n = seed pairs (endpoint pairs) of the setting."
    return "One seed pair per setting: values as logged (no std, no n)."


def write_report(study: str, out: str | Path, *, store: Any = None, parent: TrackedRun | None = None) -> Path:
    """Write ``report.md``, a self-contained ``report.html`` (figures embedded), ``figures/*.png`` and
    ``tables/<family>.csv`` for ``study`` into ``out``; with ``parent`` (default: the newest study run),
    log the folder as its ``report/`` artifact, each figure with ``mlflow.log_figure`` and each family table
    with ``mlflow.log_table``.

    Returns:
        the path of ``report.md``.

    Raises:
        tracking.query.StudyNotFoundError: no such study.
    """
    store = store or resolve_store()
    out = Path(out)
    # The query first: an unknown study raises before anything is written.
    df = with_setting(runs(study, store=store, stage=names.STAGE_TRIAL, children_only=True))
    (out / names.REPORT_TABLES_DIR).mkdir(parents=True, exist_ok=True)
    intro = f"Generated {time.strftime('%Y-%m-%d %H:%M')} from {len(df)} FINISHED cell run(s) in {store.describe()}."
    md: list[str] = [f"# {study}: results", "", intro, ""]
    body: list[str] = [f"<h1>{html.escape(study)}: results</h1>", f"<p>{html.escape(intro)}</p>"]
    if df.empty:
        md.append("No FINISHED cells yet.")
        body.append("<p>No FINISHED cells yet.</p>")
    else:
        md += [axes_sentence(df), ""]
        body.append(f"<p>{html.escape(axes_sentence(df))}</p>")
    tables = family_tables(df)
    for family, table in tables.items():
        _add_table(md, body, out, family, table)
    figures = study_figure_set(df, store)
    pngs = {name: save_figure(fig, out / names.figure_artifact(name)) for name, fig in figures.items()}
    if pngs:
        md += ["## Figures", ""]
        body.append("<h2>Figures</h2>")
        for name, png in pngs.items():
            md += [f"![{name}]({png.relative_to(out).as_posix()})", ""]
            body.append(
                f'<figure><img src="{png_data_uri(png)}" alt="{html.escape(name)}">'
                f"<figcaption>{html.escape(name)}</figcaption></figure>"
            )
    (out / names.REPORT_MARKDOWN).write_text("\n".join(md) + "\n")
    (out / names.REPORT_HTML).write_text(html_page(study, "\n".join(body)))
    if parent is None:
        parents = runs(study, store=store, stage=names.STAGE_STUDY, status=None)
        parent = attach_run(store, str(parents.iloc[0]["run_id"])) if not parents.empty else None
    if parent is not None:
        log_report(parent, out, figures, tables)
    return out / names.REPORT_MARKDOWN


def log_report(parent: TrackedRun, out: Path, figures: dict[str, Figure], tables: dict[str, pd.DataFrame]) -> None:
    """Log the report folder ``out`` as ``report/``, the figures with ``mlflow.log_figure`` and the family
    tables with ``mlflow.log_table`` to ``parent``, then verify every upload.
    """
    for p in sorted(out.rglob("*")):
        if p.is_file():
            parent.log_artifact(
                p, str(Path(names.REPORT_DIR) / p.parent.relative_to(out)).rstrip("/.") or names.REPORT_DIR
            )
    log_study_figures(parent, figures)
    for family, table in tables.items():
        parent.log_table(narrow_table(table, family, text=False), names.report_table_artifact(family))
    parent.verify()


def _add_table(md: list[str], body: list[str], out: Path, family: str, table: pd.DataFrame) -> None:
    title = FAMILY_TITLES[family]
    narrow_table(table, family, text=False).to_csv(out / names.REPORT_TABLES_DIR / f"{family}.csv", index=False)
    shown = narrow_table(table, family)
    definitions = _definitions(family, table)
    note = _spread_note(table)
    md += [f"## {title}", "", _markdown_table(shown), "", note, ""]
    md += [f"- `{q}` [{unit}]: {meaning}" for q, unit, meaning in definitions] + [""]
    body += [
        f"<h2>{html.escape(title)} <small>({html.escape(family)}{names.SEP})</small></h2>",
        '<div class="scroll">' + shown.to_html(index=False, na_rep="-", border=0, escape=True) + "</div>",
        f'<p class="note">{html.escape(note)}</p>',
        "<dl>"
        + "".join(
            f"<dt>{html.escape(q)} [{html.escape(unit)}]</dt><dd>{html.escape(meaning)}</dd>"
            for q, unit, meaning in definitions
        )
        + "</dl>",
    ]


def html_page(title: str, body: str) -> str:
    """A complete HTML page around ``body``: inline style only, nothing loaded from elsewhere, narrow enough
    for MLflow's artifact viewer (tables scroll inside their box, images shrink to the page).
    """
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:1em auto;padding:0 1em;}"
        "table{border-collapse:collapse;font-size:13px;}.scroll{overflow-x:auto;max-width:100%;}"
        "th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap;}"
        "th{background:#f4f4f4;}td:first-child,th:first-child{text-align:left;}"
        "dl{font-size:12px;color:#444;display:grid;grid-template-columns:max-content auto;gap:2px 12px;}"
        "dt{font-family:monospace;}dd{margin:0;}.note{font-size:12px;color:#444;}"
        "figure{margin:1em 0;}img{max-width:100%;height:auto;}"
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
