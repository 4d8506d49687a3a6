"""
What vmsnap prints: tables, views, timelines, reports and JSON documents.

Used by the command line and the demo; it imports nothing heavy, so ``vmsnap --help``
and the quick list read stay cheap (ADR 0015).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmsnap.views import (
        EventView,
        PoolView,
        VerifyReport,
        VmSnapshotView,
        VmView,
        VolumeSnapshotView,
        VolumeView,
    )

    SnapshotView = VmSnapshotView | VolumeSnapshotView


def emit_json(doc: Any) -> None:
    """Print ``doc`` as one indented JSON document."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def json_line(doc: Any) -> str:
    """``doc`` as one line of JSON lines, newline included."""
    return json.dumps(doc) + "\n"


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Columns padded to their widest cell under upper-case headers; ``(none)`` when empty."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) if cells else lines[0] + "\n(none)"


def cell(v: Any) -> str:
    """One value as a table shows it: ``-`` for none, ``yes``/``no`` for booleans."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def short(v: Any) -> str:
    """A value as JSON (strings as they are), cut to 80 characters."""
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 80 else text[:77] + "..."


# Views --------------------------------------------------------------------------------


def view_text(s: SnapshotView) -> str:
    """One snapshot, a field a line; its volumes on one line as ``volume@pool``."""
    d = s.to_dict()
    lines = [f"{k:18} {cell(v)}" for k, v in d.items() if k not in ("volumes", "hooks")]
    if "volumes" in d:
        vols = ", ".join(f"{v['volume_id']}@{v['pool_id']}" for v in d["volumes"])
        lines.append(f"{'volumes':18} {vols}")
    for i, h in enumerate(d.get("hooks", [])):  # one line per hook run (issue 19)
        done = "" if h["duration_ms"] is None else f", {h['duration_ms']} ms"
        code = "" if h["exit_code"] is None else f", exit {h['exit_code']}"
        why = f", {h['error']}" if h["error"] else ""
        run = f"{h['hook']} ({h['where']}) {' '.join(h['run'])}"
        lines.append(f"{'hooks' if i == 0 else '':18} {run}: {h['status']}{code}{done}{why}")
    return "\n".join(lines)


def vm_snapshot_rows(items: Sequence[VmSnapshotView]) -> str:
    return table(
        [
            (s.id, s.vm_id, s.name, s.state, s.strategy, s.quiesced, s.consistency, s.current)
            for s in items
        ],
        ("id", "vm", "name", "state", "strategy", "quiesced", "consistency", "current"),
    )


def volume_snapshot_rows(items: Sequence[VolumeSnapshotView]) -> str:
    return table(
        [
            (s.id, s.volume_id, s.pool_id, s.state, s.quiesce_requested, s.quiesced, s.error)
            for s in items
        ],
        ("id", "volume", "pool", "state", "quiesce", "quiesced", "error"),
    )


def pool_rows(items: Sequence[PoolView]) -> str:
    return table(
        [(p.id, p.name, p.driver, *p.caps.values()) for p in items],
        ("id", "name", "driver", "VOLUME_SNAPSHOT_QUIESCEVM", "STORAGE_SYSTEM_SNAPSHOT"),
    )


def volume_rows(items: Sequence[VolumeView]) -> str:
    return table(
        [(v.id, v.vm_id, v.pool_id, v.type, v.quiescevm, v.supportsstoragesnapshot) for v in items],
        ("id", "vm", "pool", "type", "quiescevm", "supportsstoragesnapshot"),
    )


def vm_rows(items: Sequence[VmView]) -> str:
    return table(
        [(v.id, v.hypervisor, v.operation, v.in_flight, v.frozen, v.alert) for v in items],
        ("id", "hypervisor", "operation", "in flight", "frozen", "alert"),
    )


# Operations and the audit -------------------------------------------------------------


def recover_text(done: Sequence[SnapshotView]) -> str:
    lines = [f"recovered {len(done)} operation(s)"]
    lines += [f"  {s.id}  {s.state}  {s.error or ''}" for s in done]
    return "\n".join(lines)


def reconcile_text(report: dict[str, Any]) -> str:
    """What is owed, orphaned, cleaned, and what could not be listed."""
    lines = []
    for label in ("owed", "orphans", "cleaned"):
        items = report[label]
        lines.append(f"{label}: {len(items)}")
        lines += [
            f"  {i['vm_id']}  {i['kind']}  {i['target']}  {i['name']}"
            + (f"  on {', '.join(i['volume_ids'])}" if i["volume_ids"] else "")
            for i in items
        ]
    lines += [f"not listed: {u}" for u in report["unlisted"]]
    hooks = report.get("hooks", [])
    if hooks:
        lines.append(f"post-thaw hooks owed: {len(hooks)}")
        lines += [
            f"  {h['vm_id']}  snapshot {h['snapshot_id']} ({h['snapshot_state']})  "
            f"{h['where']}: {' '.join(h['run'])}  "
            + (
                "never started: run 'vmsnap recover'"
                if h["status"] == "owed"
                else "started, its end never recorded: check the guest"
            )
            for h in hooks
        ]
    return "\n".join(lines)


def timeline_text(events: Sequence[EventView]) -> str:
    """One line per event: position, time, time since the previous event, type, data."""
    from datetime import datetime

    lines, previous = [], None
    for e in events:
        summary = ", ".join(f"{k}={short(v)}" for k, v in e.data.items() if k not in ("caps",))
        if not e.timestamp:  # an event that cannot be read: its error is its data
            lines.append(f"{e.position:>6}  {'?':15}  {'':>10}  {e.type:34} {summary}")
            continue
        at = datetime.fromisoformat(e.timestamp)
        delta = "" if previous is None else f"+{(at - previous).total_seconds() * 1000:.1f}ms"
        previous = at
        lines.append(f"{e.position:>6}  {at:%H:%M:%S.%f}  {delta:>10}  {e.type:34} {summary}")
        caps = caps_text(e.data)
        if caps:
            lines.append(f"{'':>46}caps then: {caps}")
    return "\n".join(lines) if lines else "(no events)"


def caps_text(data: Mapping[str, Any]) -> str:
    """
    What the pools advertised when a snapshot was requested (its ``caps``), in full:
    ``pool: CAP, CAP; pool: none``. A volume snapshot's caps are its one pool's.
    """
    caps = data.get("caps")
    if not isinstance(caps, Mapping) or not caps:
        return ""
    if all(isinstance(v, bool) for v in caps.values()):  # one pool's: a volume snapshot
        caps = {str(data.get("pool_id", "?")): caps}
    parts = []
    for pool, advertised in caps.items():
        names = [c for c, on in dict(advertised).items() if on]
        parts.append(f"{pool}: {', '.join(names) if names else 'none'}")
    return "; ".join(parts)


def frozen_text(events: Sequence[EventView]) -> str:
    """
    How long each VM was frozen, per snapshot: the summary under a human timeline, with
    the hooks that ran before the freeze and after the thaw (issue 19).
    """
    from vmsnap.audit import frozen_spans, hook_runs

    hooks = hook_runs(events)
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
        lines += [_hook_line(h) for h in hooks if h.snapshot_id == s.snapshot_id]
    spanned = {s.snapshot_id for s in frozen_spans(events)}
    unfrozen = [h for h in hooks if h.snapshot_id not in spanned]
    for sid in dict.fromkeys(h.snapshot_id for h in unfrozen):
        lines.append(f"  snapshot {sid}: hooks, no freeze")
        lines += [_hook_line(h) for h in unfrozen if h.snapshot_id == sid]
    return "\n".join(["frozen:", *lines]) if lines else "frozen: never (no VM was frozen)"


def _hook_line(h: Any) -> str:
    when = "before the freeze" if h.hook == "pre_freeze" else "after the thaw"
    head = f"    {when}: {h.hook} ({h.where}) {' '.join(h.run)}"
    if h.started_at is None:
        return f"{head}: OWED since position {h.owed_at}, never started: run 'vmsnap recover'"
    if h.ended_at is None:
        return f"{head}: started at position {h.started_at}, no end recorded"
    code = "" if h.exit_code is None else f"exit {h.exit_code}, "
    return f"{head}: {h.status} ({code}{h.duration_ms} ms, positions {h.started_at}-{h.ended_at})"


def verify_text(report: VerifyReport) -> str:
    lines = [f"{'ok' if report.ok else 'PROBLEMS'}: {report.events} events replayed"]
    if report.chain_head is not None:
        position, digest = report.chain_head
        lines.append(f"chain head: {position}:{digest} (keep it: --expect-head)")
    if report.unsealed is not None:
        count, first, last = report.unsealed
        lines.append(
            f"not yet sealed: {count} event(s) at positions {first}-{last} (sealed when the "
            "views next catch up after a command; the chain proves nothing about them yet)"
        )
    lines += [f"  - {p}" for p in report.problems]
    return "\n".join(lines)


# The simulator ------------------------------------------------------------------------


def simulator_text(world: Mapping[str, Any]) -> str:
    """``simulator show`` as three tables: VMs, volumes, and every call in order."""
    vms = table(
        [
            (
                vm,
                s["frozen"],
                s["freeze_count"],
                s["thaw_count"],
                ", ".join(s["hypervisor_snapshots"]),
            )
            for vm, s in world["vms"].items()
        ],
        ("vm", "frozen", "freezes", "thaws", "hypervisor snapshots"),
    )
    volumes = table(
        [(vol, ", ".join(s["snapshots"])) for vol, s in world["volumes"].items()],
        ("volume", "snapshots"),
    )
    calls = table(
        [
            (
                c["op"],
                c["target"],
                c["vm_id"],
                ",".join(c["volumes"]),
                c["ok"],
                c["error"] or short(c["result"]),
            )
            for c in world["calls"]
        ],
        ("op", "target", "vm", "volumes", "ok", "result"),
    )
    return f"{vms}\n\n{volumes}\n\n{calls}"
