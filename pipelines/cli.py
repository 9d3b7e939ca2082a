"""The ``lgeom`` command: ``lgeom <step> --preset NAME [dotted.key=value ...]``.

Every step lives in ``pipelines/<step>.py`` with ``add_arguments(parser)`` (optional extra options) and
``cli(cfg, args) -> int``; preset steps get ``--preset``, ``--cell`` and overrides for free. Errors in the
configuration or the input exit with status 2 (bad input) or 1 (a failure while running) and a one-line
message naming the bad value, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import re
import sys
from collections.abc import Sequence
from typing import Any

from lgeom.data import DatasetNotFoundError
from lgeom.train import NonFiniteLossError
from pipelines.config import ConfigError, available_presets, load_config
from tracking.store import StoreUnavailableError

# step -> (module, takes a preset, one-line help)
STEPS: dict[str, tuple[str, bool, str]] = {
    "train": ("pipelines.train", True, "train the endpoints of every cell (checkpoints + metrics)"),
    "connect": ("pipelines.connect", True, "connect two endpoints: line, Bezier, PolyChain, path metrics, plane"),
    "probe": (
        "pipelines.probe",
        True,
        "Hessian spectra, sharpness, slices, PCA plane at a checkpoint or along a curve",
    ),
    "study": ("pipelines.study", True, "run the matrix on Ray Tune, one trial per cell, logged to MLflow"),
    "tune": ("pipelines.tune", True, "Optuna search (through Ray Tune) over one cell's training hyperparameters"),
    "compare": ("pipelines.compare", False, "comparison tables from logged runs"),
    "report": ("pipelines.report", False, "Markdown + HTML report of a study"),
    "figures": ("pipelines.figures", False, "draw the per-cell figures of logged runs (deferred by a study)"),
    "up": ("pipelines.stack", False, "start the local S3 (SeaweedFS) + MLflow server stack"),
    "down": ("pipelines.stack", False, "stop the local stack"),
    "user": ("pipelines.stack", False, "add a user of the shared server and grant experiment permissions"),
}

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def _load(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name == module:
            return None
        raise


_NEXT_OVERRIDE = re.compile(r"\s+(?=[A-Za-z_][\w.]*=)")


def split_overrides(items: Sequence[str]) -> list[str]:
    """Overrides as separate ``key=value`` strings. ``mlflow run`` passes ``-P overrides="a=1 b=2"`` as one
    argument; it is split before each ``key=`` that follows whitespace, so values with spaces inside
    brackets or quotes (``study.matrix={"model.width": [16, 64]}``) stay whole.
    """
    out: list[str] = []
    for item in items:
        out.extend(part for part in _NEXT_OVERRIDE.split(item.strip()) if part)
    return out


_ROLE = re.compile(r":[\w:.-]+:`~?([^`<]+?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain_text(text: str) -> str:
    """A docstring as plain help text: reStructuredText roles (``:func:`x```, ``:mod:`~a.b```) and double
    backticks are reduced to their content.
    """
    return _LITERAL.sub(r"\1", _ROLE.sub(r"\1", text))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default (``(default: 0.0)``) unless its help already talks about the default
    or there is none to show (``None``, ``""``, ``False``); descriptions keep their paragraphs.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        nothing = (
            action.default is None
            or action.default is False
            or action.default == ""
            or action.default == argparse.SUPPRESS
        )
        if "default" in text or nothing or not action.option_strings:
            return text
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(super(HelpFormatter, self)._fill_text(p, width, indent) for p in text.split("\n\n"))


def version() -> str:
    """The installed package's version (``lgeom --version``), ``unknown`` when it is not installed."""
    try:
        return importlib.metadata.version("lgeom")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The ``lgeom`` argument parser with one subcommand per available step."""
    presets = ", ".join(available_presets())
    parser = argparse.ArgumentParser(
        prog="lgeom",
        description="Loss-landscape geometry studies tracked in MLflow. "
        "Example: lgeom train --preset quick train.epochs=5",
        epilog=f"presets: {presets}",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="step", metavar="<step>")
    for step, (module_name, takes_preset, help_text) in STEPS.items():
        module = _load(module_name)
        if module is None or not hasattr(module, "cli"):
            continue
        p = sub.add_parser(
            step,
            help=help_text,
            description=plain_text((module.__doc__ or help_text).strip().split("\n\n")[0]),
            formatter_class=HelpFormatter,
            epilog=f"presets: {presets}" if takes_preset else None,
        )
        if takes_preset:
            p.add_argument("--preset", default="quick", help=f"preset name ({presets}) or a YAML file")
            p.add_argument("--cell", default=None, help="only this matrix cell (e.g. mlp2x16/moons/sgd)")
            p.add_argument("--no-progress", action="store_true", help="no progress bars")
            p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.epochs=5")
        if hasattr(module, "add_arguments"):
            module.add_arguments(p, step)
        p.set_defaults(_module=module, _takes_preset=takes_preset)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lgeom`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.step:
        parser.print_help()
        return EXIT_BAD_INPUT
    prog = f"lgeom {args.step}"
    try:
        cfg = None
        for key, value in vars(args).items():
            if value == "":  # MLproject passes --option= for an option left unset
                setattr(args, key, None)
        if args._takes_preset:
            overrides = split_overrides(args.overrides)
            cfg = load_config(args.preset, overrides)
        return int(args._module.cli(cfg, args) or 0)
    except ConfigError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (DatasetNotFoundError, FileNotFoundError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as err:
        print(f"{prog}: failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    except ConnectionError as err:  # an unreachable Ray cluster
        print(f"{prog}: failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    except StoreUnavailableError as err:
        print(f"{prog}: failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
