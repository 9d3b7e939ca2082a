"""Step ``compare``: comparison tables from logged runs, printed in the terminal.

    lgeom compare --study quick --metrics barrier/bezier/test/acc_auc,barrier/linear/test/loss  # per setting
    lgeom compare --study quick --metrics barrier/bezier/test/acc_auc --by model,optimizer
    lgeom compare --study resnet-depth --table depth-auc --format markdown
    lgeom compare --study resnet-depth --table depth-triangle --format csv > triangle.csv

Runs come from ``$MLFLOW_TRACKING_URI`` (or ``--tracking-uri``), else the embedded ``./mlflow.db``.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from lgeom import names
from pipelines.report import main_table, with_setting
from tracking import query
from tracking.query import FORMATS
from tracking.redact import redact
from tracking.runs import attach_run, project_run_id
from tracking.store import Store, StoreUnavailableError, connect

TABLES = ("compare", "depth-auc", "depth-triangle")


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def add_arguments(parser: Any, step: str) -> None:
    """``--study``, ``--metrics``, ``--by``, ``--table``, ``--format``, ``--stage``, ``--tracking-uri``."""
    parser.add_argument("--study", required=True, help="study (MLflow experiment) name")
    parser.add_argument(
        "--metrics",
        default="",
        help="comma-separated metric names (for --table compare; default: the main comparison per setting)",
    )
    parser.add_argument(
        "--by",
        default="",
        help="comma-separated grouping keys (default: the setting, i.e. the cell "
        "without its seeds, as in the main table; model,dataset for the depth tables)",
    )
    parser.add_argument("--table", choices=TABLES, default="compare", help="which table (default compare)")
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format (default text)")
    parser.add_argument("--stage", default=None, help="only runs with this lgeom.stage (e.g. trial, connect)")
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or ./mlflow.db)"
    )


def cli(cfg: Any, args: Any) -> int:
    """Print the table; exit 2 for bad input (unknown study, metric or key), 1 if the store is unreachable."""
    prog = "lgeom compare"
    by = _split(args.by) or (["setting"] if args.table == "compare" else ["model", "dataset"])
    metrics = _split(args.metrics)
    try:
        store = connect(args.tracking_uri)
        df = query.runs(args.study, store=store, stage=args.stage, children_only=False)
        df = with_setting(df[df["cell"].notna()] if not df.empty else df)
        if args.table == "compare" and not metrics:
            table = main_table(args.study, store=store)
        elif args.table == "compare":
            table = query.compare(df, metrics, by)
        elif args.table == "depth-auc":
            table = query.depth_auc_table(df, by=by)
        else:
            table = query.depth_triangle_table(df, by=by)
    except StoreUnavailableError as err:
        print(f"{prog}: failed: {err}", file=sys.stderr)
        return 1
    except (LookupError, ValueError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    print(query.format_table(table, args.format))
    _log_to_project_run(store, table, args)
    return 0


def _log_to_project_run(store: Store, table: pd.DataFrame, args: Any) -> None:
    """Under ``mlflow run`` the project run is the run this comparison used: it gets the table (CSV, under
    ``tables/``), tag ``lgeom.study`` and a description, instead of staying an empty stray run.
    """
    run_id = project_run_id()
    if run_id is None:
        return
    try:
        run = attach_run(store, run_id)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{args.table}.csv"
            table.to_csv(path, index=False)
            run.log_artifact(path, names.REPORT_TABLES_DIR)
        what = ", ".join(_split(args.metrics)) or "the main comparison per setting"
        run.set_tags(
            {
                names.TAG_STUDY: args.study,
                names.TAG_NOTE: f"`lgeom compare --study {args.study} --table {args.table}`: {what}; "
                f"the table is the artifact `{names.REPORT_TABLES_DIR}/{args.table}.csv`.",
            }
        )
        run.verify()
    except Exception as err:  # noqa: BLE001 - the table was printed; recording it is a courtesy
        warnings.warn(
            f"could not record the comparison on the mlflow run project run {run_id} ({redact(str(err))[:200]})",
            RuntimeWarning,
            stacklevel=2,
        )


if __name__ == "__main__":
    from pipelines.cli import main as cli_main

    sys.exit(cli_main(["compare", *sys.argv[1:]]))
