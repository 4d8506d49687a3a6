"""
The handlers of the ``vmsnap`` commands: one small function per command, named by its
parser in ``cli.py`` (the audit's are in ``cli_audit``). A handler takes the parsed
arguments and returns the exit code; the exceptions it raises are mapped to exit codes in
``cli.main``.

Heavy modules are imported only when a command runs (ADR 0015).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, TypeVar

from vmsnap import render

if TYPE_CHECKING:
    from vmsnap.config import Config
    from vmsnap.controller import Controller
    from vmsnap.views import VmSnapshotView, VolumeSnapshotView

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_CONFLICT = 0, 1, 2, 3

# vmsnap.domain.workflow.REMOVED, spelt out: importing the workflow loads `transitions`,
# which the quick list read avoids (ADR 0015). tests/unit/test_cli_dispatch.py checks
# that the two agree.
QUICK_REMOVED = "removed"
QUICK_STATES = (
    "allocated",
    "quiescing",
    "snapshotting",
    "unquiescing",
    "ready",
    "reverting",
    "expunging",
    "removed",
    "failed",
)

Handler = Callable[[argparse.Namespace], int]
ControllerHandler = Callable[["Controller", argparse.Namespace], int]


class _View(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


V = TypeVar("V", bound=_View)


class Refused(Exception):
    """A CLI-level refusal (exit 2)."""


# Setting up ---------------------------------------------------------------------------


def config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("VMSNAP_CONFIG") or "vmsnap.toml")


def store_url(args: argparse.Namespace) -> str | None:
    return args.store or os.environ.get("VMSNAP_STORE") or None


def load_config(args: argparse.Namespace, *, store_only: bool = False) -> Config:
    """
    The config the arguments name; ``store_only``: a command that needs only a store
    runs without a config file when ``--store`` or ``$VMSNAP_STORE`` names one.
    """
    from vmsnap import config

    path = config_path(args)
    if store_only and not path.exists() and store_url(args):
        return config.parse({}, folder=Path.cwd())
    return config.load(path)


def open_controller(
    args: argparse.Namespace, *, store_only: bool = False, migrate: bool = False
) -> Controller:
    from vmsnap.controller import Controller

    config = load_config(args, store_only=store_only)
    return Controller(config, store_url(args), recover=args.recover, migrate=migrate)


def with_controller(fn: ControllerHandler, *, store_only: bool = False) -> Handler:
    """A handler that runs ``fn`` with a Controller opened for the command, then closed."""

    @functools.wraps(fn)
    def handler(args: argparse.Namespace) -> int:
        from vmsnap.domain.exceptions import OperationInterrupted

        with open_controller(args, store_only=store_only) as controller:
            try:
                return fn(controller, args)
            except OperationInterrupted as e:
                return interrupted(controller, args, e)

    return handler


def interrupted(c: Controller, args: argparse.Namespace, e: Exception) -> int:
    """
    An operation stopped after its claim: exit 1 (not 2: events were recorded), with
    the snapshot as far as the views got, and what to run next.
    """
    sid = getattr(e, "snapshot_id", None)
    view: Any = None
    with contextlib.suppress(Exception):  # the store may be what failed
        view = c.snapshot(sid) if sid else None
    if view is not None:
        if args.json:
            render.emit_json(view.to_dict())
        else:
            print(render.view_text(view))
    message = " ".join(str(e).split())
    if "vmsnap recover" not in message:
        message += "; run 'vmsnap recover'"
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FAILED


class OriginArgs(TypedDict):
    actor: str | None
    reason: str | None
    correlation_id: str | None


def origin(args: argparse.Namespace) -> OriginArgs:
    """
    Who runs a state-changing command (the OS user and host), why (``--reason``) and
    under which request (``--correlation-id``), for the operation's first event.
    """
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = f"uid {os.getuid()}"
    return {
        "actor": f"{user}@{socket.gethostname()}",
        "reason": args.reason,
        "correlation_id": args.correlation_id,
    }


# Printing -----------------------------------------------------------------------------


def show(
    args: argparse.Namespace,
    view: VmSnapshotView | VolumeSnapshotView,
    *,
    ran: bool = True,
    error_fails: bool = False,
) -> int:
    """
    Print one view; exit 1 when the operation that just ran (``ran``) ended failed, or,
    with ``error_fails`` (a failed revert ends ``ready``), when its error is set.
    """
    from vmsnap.domain.workflow import FAILED

    if args.json:
        render.emit_json(view.to_dict())
    else:
        print(render.view_text(view))
    failed = view.state == FAILED or (error_fails and view.error is not None)
    if ran and failed:
        print(f"error: {view.error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def list_of(
    args: argparse.Namespace, items: Sequence[V], text: Callable[[Sequence[V]], str]
) -> int:
    """Print ``items``: a JSON array with ``--json``, else the table ``text`` makes."""
    if args.json:
        render.emit_json([i.to_dict() for i in items])
    else:
        print(text(items))
    return EXIT_OK


# Commands without a Controller ----------------------------------------------------------


def demo(args: argparse.Namespace) -> int:
    from vmsnap.demo import run_demo

    return run_demo(
        Path(args.dir) if args.dir else None,
        as_json=args.json,
        real_guest=not args.no_real_guest,
    )


def serve(args: argparse.Namespace) -> int:
    from vmsnap.api.server import serve

    return serve(load_config(args), store_url(args), host=args.host, port=args.port)


def simulator_show(args: argparse.Namespace) -> int:
    from vmsnap.bootstrap import simulator_worlds

    worlds = simulator_worlds(load_config(args))
    if not worlds:
        raise Refused("the config has no simulator")
    merged: dict[str, Any] = {"vms": {}, "volumes": {}, "calls": []}
    for world in worlds.values():
        shown = world.show()
        merged["vms"].update(shown["vms"])
        merged["volumes"].update(shown["volumes"])
        merged["calls"].extend(shown["calls"])
    if args.json:
        render.emit_json(merged)
    else:
        print(render.simulator_text(merged))
    return EXIT_OK


def store_migrate(args: argparse.Namespace) -> int:
    with open_controller(args, store_only=True, migrate=True) as controller:
        position = controller.migrate()
    if args.json:
        render.emit_json({"ok": True, "events": position})
    else:
        print(f"store is ready ({position} events)")
    return EXIT_OK


# VM snapshots -------------------------------------------------------------------------


def vm_snapshots_create(c: Controller, args: argparse.Namespace) -> int:
    snapshot = c.create_vm_snapshot(
        args.vm,
        name=args.name,
        description=args.description,
        memory=args.memory,
        quiesce=args.quiesce,
        **origin(args),
    )
    return show(args, snapshot)


def vm_snapshots_list(args: argparse.Namespace) -> int:
    """
    From current SQLite views without a Controller when it can (ADR 0015), else through one
    (which catches the views up first); ``--recover`` always takes the Controller.
    """
    quick = None if args.recover else _current_vm_snapshots(args)
    if quick is not None:
        return list_of(args, quick, render.vm_snapshot_rows)
    with open_controller(args) as c:
        views = c.list_vm_snapshots(vm_id=args.vm, state=args.state, include_removed=args.all)
        return list_of(args, views, render.vm_snapshot_rows)


def _current_vm_snapshots(args: argparse.Namespace) -> list[VmSnapshotView] | None:
    """
    ``vm-snapshots list`` straight from current SQLite views, without importing the
    Controller (ADR 0015); ``None``: take the Controller's path.
    """
    from vmsnap.adapters.view_reader import current_vm_snapshots, sqlite_path

    if args.state is not None and args.state not in QUICK_STATES:
        raise Refused(f"no such state: {args.state!r} (one of {', '.join(QUICK_STATES)})")
    config, url = load_config(args), store_url(args)
    if args.vm is not None and args.vm not in {vm.id for vm in config.vms}:
        return None  # the Controller knows VMs gone from the config, or refuses the id
    path = sqlite_path(url, Path.cwd()) if url else sqlite_path(config.store_url, config.folder)
    where = {k: v for k, v in (("vm_id", args.vm), ("state", args.state)) if v is not None}
    exclude = None if args.all or args.state == QUICK_REMOVED else QUICK_REMOVED
    docs = None if path is None else current_vm_snapshots(path, where, exclude)
    if docs is None:
        return None
    from vmsnap.views import VmSnapshotView, VolumeInSnapshot

    return [
        VmSnapshotView(**{**d, "volumes": tuple(VolumeInSnapshot(**v) for v in d["volumes"])})
        for d in docs
    ]


def vm_snapshots_show(c: Controller, args: argparse.Namespace) -> int:
    return show(args, c.get_vm_snapshot(args.id), ran=False)


def vm_snapshots_revert(c: Controller, args: argparse.Namespace) -> int:
    return show(args, c.revert_vm_snapshot(args.id, **origin(args)), error_fails=True)


def vm_snapshots_delete(c: Controller, args: argparse.Namespace) -> int:
    return show(args, c.delete_vm_snapshot(args.id, **origin(args)))


# Volume snapshots, pools, volumes, VMs --------------------------------------------------


def snapshots_create(c: Controller, args: argparse.Namespace) -> int:
    return show(args, c.create_volume_snapshot(args.volume, quiesce=args.quiesce, **origin(args)))


def snapshots_list(c: Controller, args: argparse.Namespace) -> int:
    views = c.list_volume_snapshots(volume_id=args.volume)
    return list_of(args, views, render.volume_snapshot_rows)


def snapshots_show(c: Controller, args: argparse.Namespace) -> int:
    return show(args, c.get_volume_snapshot(args.id), ran=False)


def snapshots_delete(c: Controller, args: argparse.Namespace) -> int:
    return show(args, c.delete_volume_snapshot(args.id, **origin(args)))


def pools_list(c: Controller, args: argparse.Namespace) -> int:
    return list_of(args, c.list_pools(), render.pool_rows)


def volumes_list(c: Controller, args: argparse.Namespace) -> int:
    return list_of(args, c.list_volumes(vm_id=args.vm), render.volume_rows)


def vms_list(c: Controller, args: argparse.Namespace) -> int:
    return list_of(args, c.list_vms(frozen=args.frozen), render.vm_rows)


def recover(c: Controller, args: argparse.Namespace) -> int:
    """Exit 1 when a VM could not be recovered: one ``error:`` line per VM, naming why."""
    report = c.recover_report()
    if args.json:
        render.emit_json(report.to_dict())
    else:
        print(render.recover_text(report.recovered))
    for u in report.unrecovered:
        what = f" (snapshot {u.snapshot_id})" if u.snapshot_id else ""
        print(
            f"error: VM {u.vm_id}{what} not recovered: {' '.join(u.reason.split())}",
            file=sys.stderr,
        )
    return EXIT_FAILED if report.unrecovered else EXIT_OK


def reconcile(c: Controller, args: argparse.Namespace) -> int:
    report = c.reconcile(clean=args.clean)
    if args.json:
        render.emit_json(report.to_dict())
    else:
        print(render.reconcile_text(report.to_dict()))
    for problem in report.problems:
        print(f"error: {' '.join(problem.split())}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_FAILED
