"""
The handlers of the ``vmsnap audit`` commands (ADR 0021). They open the store read-only,
without the adapters, the views' catch-up or the chain's sealing; a store that does not
exist is refused. ``audit verify --from-export`` needs no store or config at all.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vmsnap import render
from vmsnap.cli_commands import (
    EXIT_FAILED,
    EXIT_OK,
    Handler,
    Refused,
    load_config,
    show,
    store_url,
)

if TYPE_CHECKING:
    from vmsnap.service.auditing import Auditing
    from vmsnap.views import VerifyReport

AuditHandler = Callable[["Auditing", argparse.Namespace], int]


def open_auditing(args: argparse.Namespace) -> Auditing:
    """
    Raises:
        StoreError, ConfigError: no such store, or it cannot be read with this config.
    """
    from vmsnap.adapters.at_rest import at_rest_env
    from vmsnap.adapters.log_reader import open_reader
    from vmsnap.adapters.store import StoreUrl
    from vmsnap.service.auditing import Auditing

    config = load_config(args, store_only=True)
    url = store_url(args)
    parsed = (
        StoreUrl.parse(url, Path.cwd()) if url else StoreUrl.parse(config.store_url, config.folder)
    )
    at_rest = at_rest_env(config.store_cipher, config.store_compress, os.environ)
    known = {vm.id for vm in config.vms}
    return Auditing(open_reader(parsed, at_rest), known.__contains__)


def with_auditing(fn: AuditHandler, *, readable: bool = True) -> Handler:
    """
    A handler that runs ``fn`` on the store opened read-only; ``readable``: refuse a
    store whose events this config cannot decode (verify reports that instead).
    """

    @functools.wraps(fn)
    def handler(args: argparse.Namespace) -> int:
        if args.recover:
            raise Refused("--recover writes to the store; the audit commands only read it")
        auditing = open_auditing(args)
        try:
            if readable:
                auditing.check_readable()
            return fn(auditing, args)
        finally:
            auditing.close()

    return handler


def audit_timeline(c: Auditing, args: argparse.Namespace) -> int:
    if (args.id is None) == (args.vm is None):
        raise Refused("give a snapshot ID or --vm VM")
    events = c.timeline(snapshot_id=args.id, vm_id=args.vm)
    if args.json:
        render.emit_json([e.to_dict() for e in events])
    else:
        print(render.timeline_text(events))
        print(render.frozen_text(events))
    return EXIT_OK


def audit_state(c: Auditing, args: argparse.Namespace) -> int:
    return show(args, c.state(args.id, args.at), ran=False)


def audit_export(c: Auditing, args: argparse.Namespace) -> int:
    """JSON lines, whether or not ``--json`` is given."""
    out = sys.stdout
    for e in c.export():
        out.write(e.json_line())  # = render.json_line(e.to_dict()), made faster
    return EXIT_OK


def audit_verify(args: argparse.Namespace) -> int:
    """
    ``--from-export FILE``: the export alone, no config or store; else the store, read
    only. With ``--json`` one document is printed whatever verify finds.
    """
    if args.from_export is not None:
        report = _verify_export(args)
    else:
        handler = with_auditing(
            lambda c, a: _print_report(a, c.verify(a.expect_head)), readable=False
        )
        return handler(args)
    return _print_report(args, report)


def _print_report(args: argparse.Namespace, report: VerifyReport) -> int:
    if args.json:
        render.emit_json(report.to_dict())
    else:
        print(render.verify_text(report))
    return EXIT_OK if report.ok else EXIT_FAILED


def _verify_export(args: argparse.Namespace) -> VerifyReport:
    from vmsnap.adapters.at_rest import at_rest_env
    from vmsnap.adapters.log_reader import mapper_for
    from vmsnap.service.auditing import parse_head
    from vmsnap.verify_export import verify_export

    kept = None if args.expect_head is None else parse_head(args.expect_head)
    # The settings the events may have been written with: tried in turn on the first.
    cipher = "aes" if os.environ.get("VMSNAP_CIPHER_KEY") else None
    settings: list[tuple[str | None, bool]] = [(None, False), (None, True)]
    if cipher is not None:
        settings += [(cipher, False), (cipher, True)]
    mappers = [mapper_for(at_rest_env(c, z, os.environ)) for c, z in settings]
    path = Path(args.from_export)
    try:
        with path.open(encoding="utf-8") as lines:
            return verify_export(lines, mappers, kept)
    except OSError as e:
        raise Refused(f"cannot read the export {path}: {e.strerror or e}") from None
