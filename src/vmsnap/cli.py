"""
The ``vmsnap`` command line (CONTRACT.md): the parser, and ``main``, which runs the handler
the parser names and maps what it raises to an exit code. The handlers are in
``cli_commands``, what they print in ``render``. Heavy modules are imported only when a
command runs (ADR 0015).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from vmsnap import cli_audit as audit_handlers
from vmsnap import cli_commands as handlers
from vmsnap.cli_commands import (
    EXIT_CONFLICT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    Handler,
    Refused,
)

__all__ = ["EXIT_CONFLICT", "EXIT_FAILED", "EXIT_OK", "EXIT_REFUSED", "build_parser", "main"]

EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see vmsnap --help)", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED)


if TYPE_CHECKING:
    _Group = argparse._SubParsersAction[_Parser]


def _common(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    # Accept the global options before or after the command; the innermost wins.
    default = None if top else argparse.SUPPRESS
    p.add_argument(
        "--config",
        default=default,
        help="config file (default: $VMSNAP_CONFIG, else ./vmsnap.toml)",
    )
    p.add_argument(
        "--store", default=default, help="store URL (overrides $VMSNAP_STORE and the config)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print exactly one JSON document",
    )
    p.add_argument(
        "--recover",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="first recover what controllers that died left in flight (as `vmsnap recover`)",
    )


class _Commands:
    """Adds commands and groups of commands; every command names its handler."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._top = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
        self._top.required = True

    def command(
        self, name: str, help: str, handler: Handler, group: _Group | None = None
    ) -> argparse.ArgumentParser:
        parent = self._top if group is None else group
        p = parent.add_parser(name, help=help, description=help)
        _common(p)
        p.set_defaults(handler=handler)
        return p

    def group(self, name: str, help: str) -> _Group:
        p = self._top.add_parser(name, help=help, description=help)
        sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
        sub.required = True
        return sub


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vmsnap",
        description="VM snapshots with quiesce across hypervisors and storage drivers.",
    )
    _common(parser, top=True)
    commands = _Commands(parser)
    demo = commands.command(
        "demo", "write a demo config and world, and tell the whole story", handlers.demo
    )
    demo.add_argument("--dir", help="folder for the demo (default: a new temporary folder)")
    demo.add_argument(
        "--no-real-guest",
        action="store_true",
        help="leave out the chapter that boots a real QEMU guest (it takes a while)",
    )
    _inventory_commands(commands)
    _vm_snapshot_commands(commands)
    _volume_snapshot_commands(commands)
    _vm_commands(commands)
    _audit_commands(commands)
    _service_commands(commands)
    return parser


def _inventory_commands(commands: _Commands) -> None:
    pools = commands.group("pools", "storage pools")
    commands.command(
        "list", "pools with their capabilities (caps)", _controlled(handlers.pools_list), pools
    )
    volumes = commands.group("volumes", "volumes")
    p = commands.command(
        "list",
        "volumes with quiescevm and supportsstoragesnapshot",
        _controlled(handlers.volumes_list),
        volumes,
    )
    p.add_argument("--vm", help="only this VM's volumes")


def _vm_snapshot_commands(commands: _Commands) -> None:
    vms = commands.group("vm-snapshots", "VM snapshots")
    p = commands.command(
        "create", "take a VM snapshot", _controlled(handlers.vm_snapshots_create), vms
    )
    p.add_argument("--vm", required=True)
    p.add_argument("--name")
    p.add_argument("--description")
    p.add_argument(
        "--memory", action="store_true", help="include the memory state (VM must be Running)"
    )
    p.add_argument(
        "--quiesce", action="store_true", help="quiesce the guest (the seed's quiescevm)"
    )
    _origin(p)
    p = commands.command(
        "list", "VM snapshots (removed ones only with --all)", handlers.vm_snapshots_list, vms
    )
    p.add_argument("--vm")
    p.add_argument("--state")
    p.add_argument("--all", action="store_true", help="include removed snapshots")
    for name, help, handler in (
        ("show", "one VM snapshot", handlers.vm_snapshots_show),
        ("revert", "revert the VM to a snapshot", handlers.vm_snapshots_revert),
        ("delete", "delete a VM snapshot", handlers.vm_snapshots_delete),
    ):
        p = commands.command(name, help, _controlled(handler), vms)
        p.add_argument("id")
        if name != "show":
            _origin(p)


def _volume_snapshot_commands(commands: _Commands) -> None:
    snaps = commands.group("snapshots", "volume snapshots")
    p = commands.command(
        "create", "take a volume snapshot", _controlled(handlers.snapshots_create), snaps
    )
    p.add_argument("--volume", required=True)
    p.add_argument(
        "--quiesce",
        action="store_true",
        help="quiesce the VM (pool must advertise VOLUME_SNAPSHOT_QUIESCEVM)",
    )
    _origin(p)
    p = commands.command("list", "volume snapshots", _controlled(handlers.snapshots_list), snaps)
    p.add_argument("--volume")
    for name, help, handler in (
        ("show", "one volume snapshot", handlers.snapshots_show),
        ("delete", "delete a volume snapshot", handlers.snapshots_delete),
    ):
        p = commands.command(name, help, _controlled(handler), snaps)
        p.add_argument("id")
        if name != "show":
            _origin(p)


def _origin(p: argparse.ArgumentParser) -> None:
    """Why, and under which request: recorded with the operation, as the OS user and host."""
    p.add_argument("--reason", metavar="TEXT", help="why: recorded with the operation")
    p.add_argument(
        "--correlation-id",
        metavar="ID",
        help="the ticket or request this belongs to: recorded with the operation",
    )


def _vm_commands(commands: _Commands) -> None:
    vms = commands.group("vms", "VMs as the log knows them")
    p = commands.command(
        "list",
        "VMs with their operation in flight and whether believed frozen",
        _controlled(handlers.vms_list),
        vms,
    )
    p.add_argument("--frozen", action="store_true", help="only VMs believed frozen")
    commands.command(
        "recover",
        "finish or compensate operations left in flight by a crashed controller",
        _controlled(handlers.recover),
    )
    p = commands.command(
        "reconcile",
        "what backends hold under vmsnap's names against what the log owns (exit 1: a "
        "difference is left)",
        _controlled(handlers.reconcile),
    )
    p.add_argument(
        "--clean", action="store_true", help="remove what is owed or orphaned, recording each"
    )


def _audit_commands(commands: _Commands) -> None:
    audit = commands.group("audit", "replay the event log")
    p = commands.command(
        "timeline",
        "the events of one snapshot, or of every snapshot of a VM",
        _audited(audit_handlers.audit_timeline),
        audit,
    )
    p.add_argument("id", nargs="?")
    p.add_argument("--vm")
    commands.command(
        "export",
        "every stored event, in log order, as JSON lines",
        _audited(audit_handlers.audit_export),
        audit,
    )
    p = commands.command(
        "state",
        "a snapshot as it was at a point of the log (time travel)",
        _audited(audit_handlers.audit_state),
        audit,
    )
    p.add_argument("id")
    p.add_argument("--at", required=True, help="a log position (integer) or an ISO-8601 timestamp")
    p = commands.command(
        "verify",
        "replay the whole log and check it (read-only)",
        audit_handlers.audit_verify,
        audit,
    )
    p.add_argument(
        "--expect-head",
        metavar="POSITION:HASH",
        help="a chain head printed by an earlier verify and kept elsewhere: the chain "
        "must still pass through it",
    )
    p.add_argument(
        "--from-export",
        metavar="FILE",
        help="verify an `audit export` file alone: no config or store needed",
    )


def _service_commands(commands: _Commands) -> None:
    store = commands.group("store", "the event store")
    commands.command(
        "migrate", "create or upgrade the store's schema", handlers.store_migrate, store
    )
    sim = commands.group("simulator", "the simulated world")
    commands.command(
        "show",
        "the simulated world: VMs, volumes and every simulated call",
        handlers.simulator_show,
        sim,
    )
    serve = commands.command("serve", "serve the CloudStack-compatible API", handlers.serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)


def _controlled(fn: handlers.ControllerHandler) -> Handler:
    return handlers.with_controller(fn)


def _audited(fn: audit_handlers.AuditHandler) -> Handler:
    # The audit commands open the store read-only, also with only --store and no config.
    return audit_handlers.with_auditing(fn)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run one command; every exception a handler raises becomes its exit code here.
    """
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    from vmsnap.domain.exceptions import InvalidRequest, OperationInProgress, VmsnapError

    try:
        with _interrupted_by_signals():
            return handler(args)
    except OperationInProgress as e:
        return _fail(str(e), EXIT_CONFLICT)
    except (InvalidRequest, Refused) as e:  # NotFound, ConfigError, StoreError among them
        return _fail(str(e), EXIT_REFUSED)
    except VmsnapError as e:
        return _fail(str(e), EXIT_REFUSED)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # one line, as the contract wants; the trace on request
        if os.environ.get("VMSNAP_DEBUG"):
            raise
        return _fail(
            f"{type(e).__name__}: {e} (an operation may be left in flight: run "
            "'vmsnap recover'; set VMSNAP_DEBUG=1 for the trace)",
            EXIT_FAILED,
        )


@contextlib.contextmanager
def _interrupted_by_signals() -> Iterator[None]:
    """
    SIGTERM and SIGHUP interrupt a command as Ctrl-C does: the operation's flow thaws a
    frozen guest (recorded) before the process exits 130 (``serve`` has its own stop).
    """

    def interrupt(sig: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(sig).name)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _fail(message: str, code: int) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
