"""The ``vmsnap`` command line (CONTRACT.md). Imports heavy modules only when a command runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from vmsnap.config import Config
    from vmsnap.controller import Controller

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_CONFLICT = 0, 1, 2, 3


class Refused(Exception):
    """A CLI-level refusal (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see vmsnap --help)", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED)


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vmsnap",
        description="VM snapshots with quiesce across hypervisors and storage drivers.",
    )
    _common(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, help: str, parent: Any = commands) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        _common(p)
        return p

    def group(name: str, help: str) -> Any:
        p = commands.add_parser(name, help=help, description=help)
        sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
        sub.required = True
        return sub

    demo = command("demo", "write a demo config and world, and tell the whole story")
    demo.add_argument("--dir", help="folder for the demo (default: a new temporary folder)")

    pools = group("pools", "storage pools")
    command("list", "pools with their capabilities (caps)", pools)

    volumes = group("volumes", "volumes")
    p = command("list", "volumes with quiescevm and supportsstoragesnapshot", volumes)
    p.add_argument("--vm", help="only this VM's volumes")

    vms = group("vm-snapshots", "VM snapshots")
    p = command("create", "take a VM snapshot", vms)
    p.add_argument("--vm", required=True)
    p.add_argument("--name")
    p.add_argument("--description")
    p.add_argument(
        "--memory", action="store_true", help="include the memory state (VM must be Running)"
    )
    p.add_argument(
        "--quiesce", action="store_true", help="quiesce the guest (the seed's quiescevm)"
    )
    p = command("list", "VM snapshots (removed ones only with --all)", vms)
    p.add_argument("--vm")
    p.add_argument("--state")
    p.add_argument("--all", action="store_true", help="include removed snapshots")
    for name, help in (
        ("show", "one VM snapshot"),
        ("revert", "revert the VM to a snapshot"),
        ("delete", "delete a VM snapshot"),
    ):
        command(name, help, vms).add_argument("id")

    snaps = group("snapshots", "volume snapshots")
    p = command("create", "take a volume snapshot", snaps)
    p.add_argument("--volume", required=True)
    p.add_argument(
        "--quiesce",
        action="store_true",
        help="quiesce the VM (pool must advertise VOLUME_SNAPSHOT_QUIESCEVM)",
    )
    p = command("list", "volume snapshots", snaps)
    p.add_argument("--volume")
    command("show", "one volume snapshot", snaps).add_argument("id")
    command("delete", "delete a volume snapshot", snaps).add_argument("id")

    vm_group = group("vms", "VMs as the log knows them")
    p = command("list", "VMs with their operation in flight and whether believed frozen", vm_group)
    p.add_argument("--frozen", action="store_true", help="only VMs believed frozen")

    command("recover", "finish or compensate operations left in flight by a crashed controller")

    audit = group("audit", "replay the event log")
    p = command("timeline", "the events of one snapshot, or of every snapshot of a VM", audit)
    p.add_argument("id", nargs="?")
    p.add_argument("--vm")
    command("export", "every stored event, in log order, as JSON lines", audit)
    p = command("state", "a snapshot as it was at a point of the log (time travel)", audit)
    p.add_argument("id")
    p.add_argument("--at", required=True, help="a log position (integer) or an ISO-8601 timestamp")
    p = command("verify", "replay the whole log and check it", audit)
    p.add_argument(
        "--expect-head",
        metavar="POSITION:HASH",
        help="a chain head printed by an earlier verify and kept elsewhere: the chain "
        "must still pass through it",
    )

    store = group("store", "the event store")
    command("migrate", "create or upgrade the store's schema", store)

    sim = group("simulator", "the simulated world")
    command("show", "the simulated world: VMs, volumes and every simulated call", sim)

    serve = command("serve", "serve the CloudStack-compatible API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    return parser


# Output -----------------------------------------------------------------------------


def _emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) if cells else lines[0] + "\n(none)"


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def view_text(s: Any) -> str:
    d = s.to_dict()
    lines = [f"{k:18} {_cell(v)}" for k, v in d.items() if k != "volumes"]
    if "volumes" in d:
        vols = ", ".join(f"{v['volume_id']}@{v['pool_id']}" for v in d["volumes"])
        lines.append(f"{'volumes':18} {vols}")
    return "\n".join(lines)


def vm_snapshot_rows(items: Sequence[Any]) -> str:
    return _table(
        [
            (s.id, s.vm_id, s.name, s.state, s.strategy, s.quiesced, s.consistency, s.current)
            for s in items
        ],
        ("id", "vm", "name", "state", "strategy", "quiesced", "consistency", "current"),
    )


def volume_snapshot_rows(items: Sequence[Any]) -> str:
    return _table(
        [
            (s.id, s.volume_id, s.pool_id, s.state, s.quiesce_requested, s.quiesced, s.error)
            for s in items
        ],
        ("id", "volume", "pool", "state", "quiesce", "quiesced", "error"),
    )


def timeline_text(events: Sequence[Any]) -> str:
    from datetime import datetime

    lines, previous = [], None
    for e in events:
        at = datetime.fromisoformat(e.timestamp)
        delta = "" if previous is None else f"+{(at - previous).total_seconds() * 1000:.1f}ms"
        previous = at
        summary = ", ".join(f"{k}={_short(v)}" for k, v in e.data.items() if k not in ("caps",))
        lines.append(f"{e.position:>6}  {at:%H:%M:%S.%f}  {delta:>10}  {e.type:34} {summary}")
    return "\n".join(lines) if lines else "(no events)"


def frozen_text(events: Sequence[Any]) -> str:
    """
    How long each VM was frozen, per snapshot: the summary under a human timeline.
    """
    from vmsnap.audit import frozen_spans

    lines = []
    for s in frozen_spans(events):
        if s.seconds is None:
            lines.append(
                f"  {s.vm_id} FROZEN since position {s.frozen_at} by snapshot "
                f"{s.snapshot_id}: no thaw recorded"
            )
        else:
            lines.append(
                f"  {s.vm_id} frozen {s.seconds * 1000:.1f}ms by snapshot {s.snapshot_id} "
                f"(positions {s.frozen_at}-{s.thawed_at})"
            )
    return "\n".join(["frozen:", *lines]) if lines else "frozen: never (no VM was frozen)"


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 80 else text[:77] + "..."


# Commands ---------------------------------------------------------------------------


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("VMSNAP_CONFIG") or "vmsnap.toml")


def _store_url(args: argparse.Namespace) -> str | None:
    return args.store or os.environ.get("VMSNAP_STORE") or None


def _load_config(args: argparse.Namespace, *, store_only: bool = False) -> Config:
    from vmsnap import config

    path = _config_path(args)
    if store_only and not path.exists() and _store_url(args):
        return config.parse({}, folder=Path.cwd())
    return config.load(path)


def _controller(
    args: argparse.Namespace, *, store_only: bool = False, migrate: bool = False
) -> Controller:
    from vmsnap.controller import Controller

    config = _load_config(args, store_only=store_only)
    return Controller(config, _store_url(args), recover=args.recover, migrate=migrate)


def _show(args: argparse.Namespace, view: Any, *, ran: bool = True) -> int:
    """
    Print one view; exit 1 when the operation that just ran ended failed (a failed
    revert ends ``ready`` with its error set).
    """
    if args.json:
        _emit_json(view.to_dict())
    else:
        print(view_text(view))
    failed = view.state == "failed" or (args.action == "revert" and view.error is not None)
    if ran and failed:
        print(f"error: {view.error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _list(
    args: argparse.Namespace, items: Sequence[Any], text: Callable[[Sequence[Any]], str]
) -> int:
    if args.json:
        _emit_json([i.to_dict() for i in items])
    else:
        print(text(items))
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    cmd, action = args.command, getattr(args, "action", None)
    if cmd == "demo":
        from vmsnap.demo import run_demo

        return run_demo(Path(args.dir) if args.dir else None, as_json=args.json)
    if cmd == "simulator":
        return _simulator_show(args)
    if cmd == "serve":
        from vmsnap.api.server import serve

        return serve(_load_config(args), _store_url(args), args.host, args.port)
    if cmd == "store":
        with _controller(args, store_only=True, migrate=True) as ctrl:
            position = ctrl.migrate()
        if args.json:
            _emit_json({"ok": True, "events": position})
        else:
            print(f"store is ready ({position} events)")
        return EXIT_OK
    if cmd == "vm-snapshots" and action == "list" and not args.recover:
        quick = _list_from_current_views(args)
        if quick is not None:
            return quick
    store_only = cmd == "audit"
    with _controller(args, store_only=store_only) as c:
        return _run_with(c, args, cmd, action)


def _list_from_current_views(args: argparse.Namespace) -> int | None:
    """
    ``vm-snapshots list`` straight from current SQLite views, without importing the
    Controller (ADR 0015); ``None``: take the Controller's path.
    """
    from vmsnap.adapters.view_reader import current_vm_snapshots, sqlite_path

    config, url = _load_config(args), _store_url(args)
    path = sqlite_path(url, Path.cwd()) if url else sqlite_path(config.store_url, config.folder)
    where = {k: v for k, v in (("vm_id", args.vm), ("state", args.state)) if v is not None}
    exclude = None if args.all or args.state == "removed" else "removed"
    docs = None if path is None else current_vm_snapshots(path, where, exclude)
    if docs is None:
        return None
    from vmsnap.views import VmSnapshotView, VolumeInSnapshot

    views = [
        VmSnapshotView(**{**d, "volumes": tuple(VolumeInSnapshot(**v) for v in d["volumes"])})
        for d in docs
    ]
    return _list(args, views, vm_snapshot_rows)


def _run_with(c: Controller, args: argparse.Namespace, cmd: str, action: str | None) -> int:
    if cmd == "pools":
        return _list(
            args,
            c.list_pools(),
            lambda ps: _table(
                [(p.id, p.name, p.driver, *p.caps.values()) for p in ps],
                ("id", "name", "driver", "VOLUME_SNAPSHOT_QUIESCEVM", "STORAGE_SYSTEM_SNAPSHOT"),
            ),
        )
    if cmd == "volumes":
        return _list(
            args,
            c.list_volumes(args.vm),
            lambda vs: _table(
                [
                    (v.id, v.vm_id, v.pool_id, v.type, v.quiescevm, v.supportsstoragesnapshot)
                    for v in vs
                ],
                ("id", "vm", "pool", "type", "quiescevm", "supportsstoragesnapshot"),
            ),
        )
    if cmd == "vm-snapshots":
        if action == "create":
            return _show(
                args,
                c.create_vm_snapshot(
                    args.vm, args.name, args.description, args.memory, args.quiesce
                ),
            )
        if action == "list":
            return _list(args, c.list_vm_snapshots(args.vm, args.state, args.all), vm_snapshot_rows)
        if action == "show":
            return _show(args, c.get_vm_snapshot(args.id), ran=False)
        op = c.revert_vm_snapshot if action == "revert" else c.delete_vm_snapshot
        return _show(args, op(args.id))
    if cmd == "snapshots":
        if action == "create":
            return _show(args, c.create_volume_snapshot(args.volume, args.quiesce))
        if action == "list":
            return _list(args, c.list_volume_snapshots(args.volume), volume_snapshot_rows)
        if action == "show":
            return _show(args, c.get_volume_snapshot(args.id), ran=False)
        return _show(args, c.delete_volume_snapshot(args.id))
    if cmd == "vms":
        return _list(
            args,
            c.list_vms(args.frozen),
            lambda vs: _table(
                [(v.id, v.hypervisor, v.operation, v.in_flight, v.frozen, v.alert) for v in vs],
                ("id", "hypervisor", "operation", "in flight", "frozen", "alert"),
            ),
        )
    if cmd == "recover":
        done = c.recover()
        if args.json:
            _emit_json({"recovered": [s.to_dict() for s in done]})
        else:
            print(f"recovered {len(done)} operation(s)")
            for s in done:
                print(f"  {s.id}  {s.state}  {s.error or ''}")
        return EXIT_OK
    if cmd == "audit":
        if action == "timeline":
            if (args.id is None) == (args.vm is None):
                raise Refused("give a snapshot ID or --vm VM")
            events = c.audit_timeline(args.id, args.vm)
            if args.json:
                _emit_json([e.to_dict() for e in events])
            else:
                print(timeline_text(events))
                print(frozen_text(events))
            return EXIT_OK
        if action == "state":
            return _show(args, c.audit_state(args.id, args.at), ran=False)
        if action == "export":
            out = sys.stdout
            for e in c.audit_export():
                out.write(json.dumps(e.to_dict()) + "\n")
            return EXIT_OK
        report = c.audit_verify(args.expect_head)
        if args.json:
            _emit_json(report.to_dict())
        else:
            print(f"{'ok' if report.ok else 'PROBLEMS'}: {report.events} events replayed")
            if report.chain_head is not None:
                position, digest = report.chain_head
                print(f"chain head: {position}:{digest} (keep it: --expect-head)")
            for p in report.problems:
                print(f"  - {p}")
        return EXIT_OK if report.ok else EXIT_FAILED
    raise Refused(f"unknown command {cmd}")


def _simulator_show(args: argparse.Namespace) -> int:
    from vmsnap.bootstrap import simulator_worlds

    worlds = simulator_worlds(_load_config(args))
    if not worlds:
        raise Refused("the config has no simulator")
    merged: dict[str, Any] = {"vms": {}, "volumes": {}, "calls": []}
    for world in worlds.values():
        shown = world.show()
        merged["vms"].update(shown["vms"])
        merged["volumes"].update(shown["volumes"])
        merged["calls"].extend(shown["calls"])
    if args.json:
        _emit_json(merged)
        return EXIT_OK
    print(
        _table(
            [
                (
                    vm,
                    s["frozen"],
                    s["freeze_count"],
                    s["thaw_count"],
                    ", ".join(s["hypervisor_snapshots"]),
                )
                for vm, s in merged["vms"].items()
            ],
            ("vm", "frozen", "freezes", "thaws", "hypervisor snapshots"),
        )
    )
    print()
    print(
        _table(
            [(vol, ", ".join(s["snapshots"])) for vol, s in merged["volumes"].items()],
            ("volume", "snapshots"),
        )
    )
    print()
    print(
        _table(
            [
                (
                    c["op"],
                    c["target"],
                    c["vm_id"],
                    ",".join(c["volumes"]),
                    c["ok"],
                    c["error"] or _short(c["result"]),
                )
                for c in merged["calls"]
            ],
            ("op", "target", "vm", "volumes", "ok", "result"),
        )
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vmsnap.domain.exceptions import InvalidRequest, OperationInProgress, VmsnapError

    try:
        return run(args)
    except OperationInProgress as e:
        return _fail(str(e), EXIT_CONFLICT)
    except (InvalidRequest, Refused) as e:
        return _fail(str(e), EXIT_REFUSED)
    except VmsnapError as e:
        return _fail(str(e), EXIT_REFUSED)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
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


def _fail(message: str, code: int) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
