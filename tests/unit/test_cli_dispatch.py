"""
The command line's wiring: every command names its handler, ``main`` maps what a handler
raises to the contract's exit codes in one place, and the CLI and the demo do not import
each other.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmsnap import cli, cli_commands
from vmsnap.domain.exceptions import (
    ConfigError,
    DriverError,
    InvalidRequest,
    NotFound,
    OperationInProgress,
    StoreError,
)


def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:
        yield path, parser
    for action in subcommands:
        for name, sub in action.choices.items():
            yield from _leaves(sub, (*path, name))


def test_every_command_names_a_handler() -> None:
    leaves = dict(_leaves(cli.build_parser()))
    assert ("vm-snapshots", "create") in leaves and ("demo",) in leaves
    for path, parser in leaves.items():
        assert callable(parser.get_default("handler")), f"{' '.join(path)} has no handler"


def test_groups_name_no_handler_so_a_missing_action_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["vm-snapshots"])
    assert exited.value.code == cli.EXIT_REFUSED
    assert capsys.readouterr().err.startswith("error: ")


REFUSED = (InvalidRequest, NotFound, ConfigError, StoreError, cli_commands.Refused, DriverError)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        *((e("no"), cli.EXIT_REFUSED) for e in REFUSED),
        (OperationInProgress("busy"), cli.EXIT_CONFLICT),
        (KeyboardInterrupt(), 130),
        (RuntimeError("boom\nagain"), cli.EXIT_FAILED),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_main_maps_what_a_handler_raises_to_an_exit_code_and_one_error_line(
    error: BaseException,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.delenv("VMSNAP_DEBUG", raising=False)
    monkeypatch.setattr(cli_commands, "simulator_show", handler)
    assert cli.main(["simulator", "show", "--json"]) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err


def test_an_unexpected_error_names_recover_and_raises_with_vmsnap_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli_commands, "simulator_show", handler)
    monkeypatch.delenv("VMSNAP_DEBUG", raising=False)
    assert cli.main(["simulator", "show"]) == cli.EXIT_FAILED
    assert "'vmsnap recover'" in capsys.readouterr().err
    monkeypatch.setenv("VMSNAP_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["simulator", "show"])


def test_a_closed_standard_output_ends_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise BrokenPipeError

    monkeypatch.setattr(cli_commands, "simulator_show", handler)
    assert cli.main(["simulator", "show"]) == cli.EXIT_OK
    assert capsys.readouterr().err == ""


def test_the_quick_list_leaves_out_the_workflow_s_removed_state() -> None:
    from vmsnap.domain.workflow import REMOVED

    assert cli_commands.QUICK_REMOVED == REMOVED


def _imports(module: str) -> set[str]:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("module", ["vmsnap.demo", "vmsnap.demo_libvirt", "vmsnap.render"])
def test_the_demo_and_rendering_do_not_import_the_command_line(module: str) -> None:
    assert not {"vmsnap.cli", "vmsnap.cli_commands"} & _imports(module)
