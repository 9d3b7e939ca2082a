"""The ``lgeom`` command: overrides split like ``mlflow run`` passes them, the parser lists every step with
its options, and each kind of error becomes its exit status with a one-line message (a step module made
here raises it; nothing else is replaced).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import shlex
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from lgeom.data import DatasetNotFoundError
from lgeom.train import NonFiniteLossError
from pipelines import cli
from pipelines.cli import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    STEPS,
    build_parser,
    main,
    plain_text,
    split_overrides,
)
from pipelines.config import ConfigError, available_presets
from tracking.store import StoreUnavailableError


@pytest.mark.parametrize(
    ("items", "split"),
    [
        ([], []),
        (["train.epochs=5"], ["train.epochs=5"]),
        (["train.epochs=5 train.lr=0.1", "name=x"], ["train.epochs=5", "train.lr=0.1", "name=x"]),
        (["  a=1   b.c=2  "], ["a=1", "b.c=2"]),
        (
            ['study.matrix={"model.width": [16, 64]} train.lr=0.1'],
            ['study.matrix={"model.width": [16, 64]}', "train.lr=0.1"],
        ),
        (["train.seeds=[0, 1]"], ["train.seeds=[0, 1]"]),
        (["name='a b' x=1"], ["name='a b'", "x=1"]),
        ([""], []),
    ],
)
def test_split_overrides(items: list[str], split: list[str]) -> None:
    assert split_overrides(items) == split


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_parser_lists_every_step_and_preset_steps_take_preset_cell_and_overrides() -> None:
    subs = _subcommands(build_parser())
    assert list(subs) == list(STEPS)
    for step, (_, takes_preset, _) in STEPS.items():
        options = {o for a in subs[step]._actions for o in a.option_strings}
        assert ({"--preset", "--cell", "--no-progress"} <= options) is takes_preset, step
    args = build_parser().parse_args(["train", "--cell", "mlp2x16/moons/sgd", "train.epochs=1", "name=x"])
    assert (args.step, args.preset, args.cell, args.overrides) == (
        "train",
        "quick",
        "mlp2x16/moons/sgd",
        ["train.epochs=1", "name=x"],
    )


def test_no_step_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_BAD_INPUT
    out = capsys.readouterr().out
    assert out.startswith("usage: lgeom") and all(step in out for step in STEPS)


def test_an_unknown_step_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["fly"])
    assert exit_.value.code == 2 and "invalid choice: 'fly'" in capsys.readouterr().err


def _raiser(error: BaseException) -> Callable[..., int]:
    def step(cfg: object, args: argparse.Namespace) -> int:
        raise error

    return step


@pytest.mark.parametrize(
    ("error", "status", "prefix"),
    [
        (ConfigError(["train.lr: expected > 0"]), EXIT_BAD_INPUT, "error"),
        (DatasetNotFoundError("mnist: expected files in /x"), EXIT_BAD_INPUT, "error"),
        (FileNotFoundError("checkpoint: expected a file"), EXIT_BAD_INPUT, "error"),
        (ValueError("cell: expected one of a, b"), EXIT_BAD_INPUT, "error"),
        (NonFiniteLossError(1, 7, float("nan")), EXIT_FAILED, "failed"),
        (ConnectionError("ray: cannot reach 10.0.0.5:6379"), EXIT_FAILED, "failed"),
        (StoreUnavailableError("MLflow at http://x: down"), EXIT_FAILED, "failed"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_errors_become_exit_statuses_with_their_message(
    error: BaseException, status: int, prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = types.ModuleType("lgeom_test_boom_step")
    module.cli = _raiser(error)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.STEPS, "boom", (module.__name__, False, "raises"))
    assert main(["boom"]) == status
    assert capsys.readouterr().err == f"lgeom boom: {prefix}: {error}\n"


def test_an_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    module = types.ModuleType("lgeom_test_interrupted_step")
    module.cli = _raiser(KeyboardInterrupt())  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.STEPS, "boom", (module.__name__, False, "interrupted"))
    assert main(["boom"]) == 130
    assert capsys.readouterr().err == "lgeom boom: interrupted\n"


def test_a_step_returns_its_status_and_empty_options_become_none(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def step(cfg: object, args: argparse.Namespace) -> int:
        seen.update(cfg=cfg, name=args.name)
        return 3

    module = types.ModuleType("lgeom_test_ok_step")
    module.cli = step  # type: ignore[attr-defined]
    module.add_arguments = lambda p, name: p.add_argument("--name", default="x")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.STEPS, "ok", (module.__name__, False, "returns 3"))
    assert main(["ok", "--name="]) == 3  # MLproject passes --option= for an option left unset
    assert seen == {"cfg": None, "name": None}


def test_a_preset_step_gets_the_loaded_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    module = types.ModuleType("lgeom_test_cfg_step")
    module.cli = lambda cfg, args: seen.append(cfg) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.STEPS, "cfg", (module.__name__, True, "takes a preset"))
    assert main(["cfg", "--preset", "quick-tiny", "train.epochs=3 name=from-cli"]) == 0
    assert seen[0].name == "from-cli" and seen[0].train.epochs == 3  # type: ignore[attr-defined]


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"lgeom {importlib.metadata.version('lgeom')}"


def test_help_shows_defaults_and_presets_without_markup() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "step").choices
    assert "quick-tiny" in parser.format_help()
    study = sub["study"].format_help()
    assert re.search(r"--gpu GPU .*\(default:\s+-1\.0\)", study, re.S)
    assert all(p in " ".join(study.split()) for p in available_presets())
    for step in STEPS:
        if step in sub:
            text = sub[step].format_help()
            assert "``" not in text and not re.search(r":(func|mod|class|meth|data):`", text), step


def test_plain_text_strips_roles_and_literals() -> None:
    assert plain_text("see :func:`~tracking.live.progress_metrics` and ``train/a/loss``") == (
        "see tracking.live.progress_metrics and train/a/loss"
    )


def test_plugin_overrides_survive_mlflow_run_quoting(plugins: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    mod, _ = plugins
    seen: list[object] = []
    module = types.ModuleType("lgeom_test_plugin_step")
    module.cli = lambda cfg, args: seen.append(cfg) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.STEPS, "cfg", (module.__name__, True, "takes a preset"))
    # MLproject: "... {overrides}" with -P overrides="..."; MLflow substitutes the value shell-quoted.
    value = f"study.matrix={{}} model={{arch: {mod}:build_att, width: 4}} data.name={mod}:blobs data.noise=null"
    argv = shlex.split(f"python -m pipelines.cfg --preset quick-tiny --cell= --no-progress {shlex.quote(value)}")[3:]
    assert main(["cfg", *argv]) == 0
    cfg = seen[0]
    assert cfg.model.arch == f"{mod}:build_att" and cfg.model.options == {"width": 4}  # type: ignore[attr-defined]
    assert cfg.data.name == f"{mod}:blobs"  # type: ignore[attr-defined]


def test_a_plugin_that_cannot_be_imported_exits_2_before_anything_starts(
    plugins: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    status = main(["study", "--preset", "quick-tiny", "study.matrix={}", "model={arch: 'nosuch_mod_q:build_vit'}"])
    err = capsys.readouterr().err
    assert status == 2
    assert "model.arch plug-in 'nosuch_mod_q:build_vit': cannot import module 'nosuch_mod_q' to take 'build_vit'" in err
    assert f"search path (sys.path, working directory first): {tmp_path}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no outputs, no store, no Ray session folder
