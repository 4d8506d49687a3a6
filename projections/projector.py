"""
The projector: applies one event to the view rows. A pure function of the event and
the rows, so rebuilding from the log gives the same rows (invariant 6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmsnap.domain.values import Capabilities
from vmsnap.domain.workflow import EVENT_TRIGGERS, VM_SNAPSHOT_WORKFLOW, VOLUME_SNAPSHOT_WORKFLOW
from vmsnap.projections.rows import Doc, Rows

Handler = Callable[[Any, Rows, int], None]


def project(event: Any, rows: Rows, position: int) -> None:
    """
    Apply ``event`` (recorded at ``position``) to ``rows``.
    """
    handler = _HANDLERS.get(type(event).__qualname__)
    if handler is not None:
        handler(event, rows, position)
        return
    # Events shared by both snapshot kinds are told apart by the row they belong to.
    sid = str(event.originator_id)
    for table in ("vm_snapshots", "volume_snapshots"):
        doc = rows.get(table, sid)
        if doc is not None:
            _snapshot_event(table, doc, event)
            rows.put(table, sid, doc, position)
            _frozen_vms(doc, event, rows, position)
            return


def _when(e: Any) -> str:
    return str(e.timestamp.isoformat())


def _vm_snapshot_requested(e: Any, rows: Rows, position: int) -> None:
    doc: Doc = {
        "id": str(e.originator_id),
        "vm_id": e.vm_id,
        "name": e.name,
        "description": e.description,
        "type": "DiskAndMemory" if e.memory else "Disk",
        "state": "allocated",
        "quiesce_requested": e.quiesce_requested,
        "quiesced": False,
        "consistency": "crash",
        "strategy": e.strategy,
        "error": None,
        "volumes": [{"volume_id": v.volume_id, "pool_id": v.pool_id} for v in e.volumes],
        "parent_id": e.parent_id,
        "current": False,
        "hypervisor": e.hypervisor,
        "created": _when(e),
        "updated": _when(e),
    }
    rows.put("vm_snapshots", doc["id"], doc, position)


def _volume_snapshot_requested(e: Any, rows: Rows, position: int) -> None:
    doc: Doc = {
        "id": str(e.originator_id),
        "volume_id": e.volume_id,
        "pool_id": e.pool_id,
        "vm_id": e.vm_id,
        "state": "allocated",
        "quiesce_requested": e.quiesce_requested,
        "quiesced": False,
        "error": None,
        "created": _when(e),
    }
    rows.put("volume_snapshots", doc["id"], doc, position)


def _snapshot_event(table: str, doc: Doc, e: Any) -> None:
    name = type(e).__name__
    trigger = EVENT_TRIGGERS.get(name)
    if trigger is not None:
        workflow = VM_SNAPSHOT_WORKFLOW if table == "vm_snapshots" else VOLUME_SNAPSHOT_WORKFLOW
        doc["state"] = workflow.table.get((trigger, doc["state"]), doc["state"])
    if name == "Completed":
        doc["quiesced"] = e.quiesced
        doc["error"] = None
        if table == "vm_snapshots":
            doc["consistency"] = e.consistency
    elif name in ("Failed", "RevertFailed"):
        doc["error"] = e.error
    elif name == "RevertStarted":
        doc["error"] = None
    if table == "vm_snapshots":
        doc["updated"] = _when(e)


def _frozen_vms(snapshot: Doc, e: Any, rows: Rows, position: int) -> None:
    # The VMs believed frozen: frozen by a quiesce, until a thaw is recorded.
    name = type(e).__name__
    vm_id = snapshot["vm_id"]
    if name == "Quiesced" and e.result.frozen:
        changes = {"frozen": True, "frozen_by": snapshot["id"], "frozen_since": _when(e)}
    elif name == "Unquiesced" and e.thawed:
        changes = {"frozen": False, "frozen_by": None, "frozen_since": None, "alert": None}
    elif name == "AlertRaised":
        changes = {"alert": e.message}
    else:
        return
    doc = _vm(rows, vm_id)
    doc.update(changes)
    rows.put("vms", vm_id, doc, position)


def _vm(rows: Rows, vm_id: str) -> Doc:
    return rows.get("vms", vm_id) or {
        "vm_id": vm_id,
        "current": None,
        "in_flight": None,
        "operation": None,
        "owner": None,
        "frozen": False,
        "frozen_by": None,
        "frozen_since": None,
        "alert": None,
    }


def _put_vm(e: Any, rows: Rows, position: int, **changes: Any) -> None:
    doc = _vm(rows, e.vm_id)
    doc.update(changes)
    rows.put("vms", e.vm_id, doc, position)


def _vm_registered(e: Any, rows: Rows, position: int) -> None:
    _put_vm(e, rows, position)


def _operation_started(e: Any, rows: Rows, position: int) -> None:
    _put_vm(
        e,
        rows,
        position,
        in_flight=e.snapshot_id,
        operation=e.operation,
        owner=e.owner,
        in_flight_since=e.timestamp.isoformat(),
    )


def _operation_ended(e: Any, rows: Rows, position: int) -> None:
    _put_vm(e, rows, position, in_flight=None, operation=None, owner=None, in_flight_since=None)


def _current_changed(e: Any, rows: Rows, position: int) -> None:
    for sid, flag in ((e.previous, False), (e.snapshot_id, True)):
        doc = None if sid is None else rows.get("vm_snapshots", sid)
        if doc is not None:
            doc["current"] = flag
            rows.put("vm_snapshots", doc["id"], doc, position)
    _put_vm(e, rows, position, current=e.snapshot_id)


def _snapshot_forgotten(e: Any, rows: Rows, position: int) -> None:
    for child in e.children:
        doc = rows.get("vm_snapshots", child)
        if doc is not None:
            doc["parent_id"] = e.new_parent
            rows.put("vm_snapshots", child, doc, position)


def _pool_observed(e: Any, rows: Rows, position: int) -> None:
    caps: Capabilities = e.caps
    doc = {
        "id": e.pool_id,
        "name": e.name,
        "driver": e.driver,
        "caps": caps.to_dict(),
        "since": _when(e),
    }
    rows.put("pools", e.pool_id, doc, position)
    for volume in rows.find("volumes", "pool_id", e.pool_id):
        _put_volume(rows, volume, caps, position)


def _volumes_observed(e: Any, rows: Rows, position: int) -> None:
    current = {v.id for v in e.volumes}
    for old in rows.find("volumes", "vm_id", e.vm_id):
        if old["id"] not in current:
            rows.delete("volumes", old["id"])
    for v in e.volumes:
        pool = rows.get("pools", v.pool_id)
        caps = Capabilities.from_dict(pool["caps"]) if pool else Capabilities()
        doc = {"id": v.id, "vm_id": v.vm_id, "pool_id": v.pool_id, "type": v.type}
        _put_volume(rows, doc, caps, position)


def _put_volume(rows: Rows, doc: Doc, caps: Capabilities, position: int) -> None:
    doc = dict(doc)
    doc["quiescevm"] = caps.volume_snapshot_quiescevm
    doc["supportsstoragesnapshot"] = caps.storage_system_snapshot
    rows.put("volumes", doc["id"], doc, position)


_HANDLERS: dict[str, Handler] = {
    "VmSnapshot.Requested": _vm_snapshot_requested,
    "VolumeSnapshot.Requested": _volume_snapshot_requested,
    "Vm.Registered": _vm_registered,
    "Vm.OperationStarted": _operation_started,
    "Vm.OperationEnded": _operation_ended,
    "Vm.CurrentSnapshotChanged": _current_changed,
    "Vm.SnapshotForgotten": _snapshot_forgotten,
    "Vm.VolumesObserved": _volumes_observed,
    "Pool.Registered": _pool_observed,
    "Pool.CapabilitiesChanged": _pool_observed,
}
