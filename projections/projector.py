"""
The projector: applies one event to the view rows. A pure function of the event and
the rows, so rebuilding from the log gives the same rows (invariant 6).

``project`` dispatches on the event's class (ADR 0018); every stored event class is
registered, those that change no view explicitly so (a test checks it).
"""

from __future__ import annotations

from datetime import datetime
from functools import singledispatch
from typing import Any

from vmsnap.domain.api_job import ApiJob
from vmsnap.domain.api_refusal import ApiRefusal
from vmsnap.domain.pool import Pool
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import (
    CRASH,
    HOOK_OWED,
    HOOK_RUNNING,
    HOOK_UNENDED,
    POST_THAW,
    Capabilities,
)
from vmsnap.domain.vm import Vm
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.domain.workflow import (
    ALLOCATED,
    VM_SNAPSHOT_WORKFLOW,
    VOLUME_SNAPSHOT_WORKFLOW,
)
from vmsnap.projections.rows import Doc, Rows

VM_SNAPSHOTS, VOLUME_SNAPSHOTS, VMS, POOLS, VOLUMES = (
    "vm_snapshots",
    "volume_snapshots",
    "vms",
    "pools",
    "volumes",
)
_WORKFLOWS = {VM_SNAPSHOTS: VM_SNAPSHOT_WORKFLOW, VOLUME_SNAPSHOTS: VOLUME_SNAPSHOT_WORKFLOW}


@singledispatch
def project(event: object, rows: Rows, position: int) -> None:
    """
    Apply ``event`` (recorded at ``position``) to ``rows``.
    """
    raise TypeError(f"no projection is registered for {type(event).__qualname__}")


@project.register
def _no_view(
    event: ApiJob.Submitted | ApiJob.SnapshotAssigned | ApiJob.Finished | ApiRefusal.Recorded,
    rows: Rows,
    position: int,
) -> None:
    """The HTTP API's jobs and refusals have no view: the API reads their aggregates."""


def _when(e: Any) -> str:
    return str(e.timestamp.isoformat())


# Snapshots --------------------------------------------------------------------------


@project.register
def _vm_snapshot_requested(e: VmSnapshot.Requested, rows: Rows, position: int) -> None:
    when = _when(e)
    doc: Doc = {
        "id": str(e.originator_id),
        "vm_id": e.vm_id,
        "name": e.name,
        "description": e.description,
        "type": "DiskAndMemory" if e.memory else "Disk",
        "state": ALLOCATED,
        "quiesce_requested": e.quiesce_requested,
        "quiesced": False,
        "consistency": CRASH,
        "strategy": e.strategy,
        "error": None,
        "volumes": [{"volume_id": v.volume_id, "pool_id": v.pool_id} for v in e.volumes],
        "parent_id": e.parent_id,
        "current": False,
        "hypervisor": e.hypervisor,
        "created": when,
        "updated": when,
        "frozen_ms": None,
        "hooks": [],
    }
    rows.put(VM_SNAPSHOTS, doc["id"], doc, position)


@project.register
def _volume_snapshot_requested(e: VolumeSnapshot.Requested, rows: Rows, position: int) -> None:
    doc: Doc = {
        "id": str(e.originator_id),
        "volume_id": e.volume_id,
        "pool_id": e.pool_id,
        "vm_id": e.vm_id,
        "state": ALLOCATED,
        "quiesce_requested": e.quiesce_requested,
        "quiesced": False,
        "error": None,
        "created": _when(e),
        "frozen_ms": None,
        "hooks": [],
        "consistency": CRASH,  # "application" when its hooks made it so (issue 19)
    }
    rows.put(VOLUME_SNAPSHOTS, doc["id"], doc, position)


@project.register
def _snapshot_event(e: SnapshotAggregate.Event, rows: Rows, position: int) -> None:
    _update_snapshot(e, rows, position)


@project.register
def _completed(e: SnapshotAggregate.Completed, rows: Rows, position: int) -> None:
    _update_snapshot(e, rows, position, quiesced=e.quiesced, error=None, consistency=e.consistency)


@project.register
def _failed(
    e: SnapshotAggregate.Failed | VmSnapshot.RevertFailed, rows: Rows, position: int
) -> None:
    _update_snapshot(e, rows, position, error=e.error)


@project.register
def _revert_started(e: VmSnapshot.RevertStarted, rows: Rows, position: int) -> None:
    _update_snapshot(e, rows, position, error=None)


@project.register
def _unquiesced(e: SnapshotAggregate.Unquiesced, rows: Rows, position: int) -> None:
    sid = str(e.originator_id)
    snapshot = rows.get(VM_SNAPSHOTS, sid) or rows.get(VOLUME_SNAPSHOTS, sid)
    vm = rows.get(VMS, snapshot["vm_id"]) if snapshot is not None and e.thawed else None
    if vm is None or vm.get("frozen_by") != sid or not vm.get("frozen_since"):
        _update_snapshot(e, rows, position)
        return
    # The freeze window: from the freeze's answer (the VM's frozen_since) to the thaw's.
    frozen = e.timestamp - datetime.fromisoformat(vm["frozen_since"])
    _update_snapshot(e, rows, position, frozen_ms=round(frozen.total_seconds() * 1000, 3))


@project.register
def _alert_raised(e: SnapshotAggregate.AlertRaised, rows: Rows, position: int) -> None:
    doc = _update_snapshot(e, rows, position)
    if doc is not None:
        _put_vm(doc["vm_id"], rows, position, alert=e.message)


# Hooks (issue 19): one entry per hook run, in order, in the snapshot's ``hooks`` list.


def _snapshot_doc(e: SnapshotAggregate.Event, rows: Rows) -> Doc | None:
    sid = str(e.originator_id)
    return rows.get(VM_SNAPSHOTS, sid) or rows.get(VOLUME_SNAPSHOTS, sid)


def _hook_entry(hook: str, run: Any, where: str, status: str) -> Doc:
    entry = {"hook": hook, "run": list(run), "where": where, "status": status}
    return entry | {"exit_code": None, "duration_ms": None, "output": "", "error": None}


@project.register
def _post_hook_owed(e: SnapshotAggregate.PostHookOwed, rows: Rows, position: int) -> None:
    doc = _snapshot_doc(e, rows)
    hooks = [] if doc is None else list(doc.get("hooks", []))
    _update_snapshot(
        e, rows, position, hooks=[*hooks, _hook_entry(POST_THAW, e.run, e.where, HOOK_OWED)]
    )


@project.register
def _hook_started(e: SnapshotAggregate.HookStarted, rows: Rows, position: int) -> None:
    doc = _snapshot_doc(e, rows)
    hooks = [] if doc is None else [dict(h) for h in doc.get("hooks", [])]
    owed = next((h for h in hooks if h["hook"] == e.hook and h["status"] == HOOK_OWED), None)
    for h in hooks:  # a run that never ended, now run again (an idempotent post hook)
        if h["hook"] == e.hook and h["status"] == HOOK_RUNNING:
            h["status"] = HOOK_UNENDED
    if owed is not None:
        owed["status"] = HOOK_RUNNING
    else:  # in the order they run: before an owed post hook still to come
        at = next((i for i, h in enumerate(hooks) if h["status"] == HOOK_OWED), len(hooks))
        hooks.insert(at, _hook_entry(e.hook, e.run, e.where, HOOK_RUNNING))
    _update_snapshot(e, rows, position, hooks=hooks)


@project.register
def _hook_ended(e: SnapshotAggregate.HookEnded, rows: Rows, position: int) -> None:
    doc = _snapshot_doc(e, rows)
    hooks = [] if doc is None else [dict(h) for h in doc.get("hooks", [])]
    running = [h for h in hooks if h["hook"] == e.hook and h["status"] == HOOK_RUNNING]
    if running:
        running[-1].update(
            status=e.status,
            exit_code=e.exit_code,
            duration_ms=e.duration_ms,
            output=e.output,
            error=e.error,
        )
    _update_snapshot(e, rows, position, hooks=hooks)


def _update_snapshot(
    e: SnapshotAggregate.Event, rows: Rows, position: int, **changes: Any
) -> Doc | None:
    """
    Apply a snapshot event to its row: the state its trigger leads to, ``changes``, and
    the VM's frozen flag. Events both snapshot kinds share are told apart by their row.
    """
    sid = str(e.originator_id)
    for table, workflow in _WORKFLOWS.items():
        doc = rows.get(table, sid)
        if doc is None:
            continue
        if e.trigger is not None:
            doc["state"] = workflow.table.get((e.trigger, doc["state"]), doc["state"])
        if table == VM_SNAPSHOTS:
            doc["updated"] = _when(e)
        doc.update(changes)
        rows.put(table, sid, doc, position)
        _frozen_vm(doc, e, rows, position)
        return doc
    return None


def _frozen_vm(snapshot: Doc, e: SnapshotAggregate.Event, rows: Rows, position: int) -> None:
    # The VMs believed frozen: frozen by a quiesce, until a thaw is recorded.
    change = e.freeze_change()
    if change is True:
        _put_vm(
            snapshot["vm_id"],
            rows,
            position,
            frozen=True,
            frozen_by=snapshot["id"],
            frozen_since=_when(e),
        )
    elif change is False:
        _put_vm(
            snapshot["vm_id"],
            rows,
            position,
            frozen=False,
            frozen_by=None,
            frozen_since=None,
            alert=None,
        )


# VMs ----------------------------------------------------------------------------------


def _vm(rows: Rows, vm_id: str) -> Doc:
    return rows.get(VMS, vm_id) or {
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


def _put_vm(vm_id: str, rows: Rows, position: int, **changes: Any) -> None:
    doc = _vm(rows, vm_id)
    doc.update(changes)
    rows.put(VMS, vm_id, doc, position)


@project.register
def _vm_registered(e: Vm.Registered, rows: Rows, position: int) -> None:
    _put_vm(e.vm_id, rows, position)


@project.register
def _operation_started(e: Vm.OperationStarted, rows: Rows, position: int) -> None:
    _put_vm(
        e.vm_id,
        rows,
        position,
        in_flight=e.snapshot_id,
        operation=e.operation,
        owner=e.owner,
        in_flight_since=_when(e),
    )


@project.register
def _recovery_claimed(e: Vm.RecoveryClaimed, rows: Rows, position: int) -> None:
    _put_vm(e.vm_id, rows, position, owner=e.owner, in_flight_since=_when(e))


@project.register
def _orphan_owed(e: Vm.OrphanOwed, rows: Rows, position: int) -> None:
    owed = [k for k in _vm(rows, e.vm_id).get("owed", []) if k != e.owed.key]
    _put_vm(e.vm_id, rows, position, owed=sorted([*owed, e.owed.key]))


@project.register
def _orphan_settled(e: Vm.OrphanSettled, rows: Rows, position: int) -> None:
    owed = [k for k in _vm(rows, e.vm_id).get("owed", []) if k != e.key]
    _put_vm(e.vm_id, rows, position, owed=owed)


@project.register
def _orphan_cleanup_failed(e: Vm.OrphanCleanupFailed, rows: Rows, position: int) -> None:
    """The object stays owed: the VM's view does not change."""


@project.register
def _operation_ended(e: Vm.OperationEnded, rows: Rows, position: int) -> None:
    _put_vm(
        e.vm_id, rows, position, in_flight=None, operation=None, owner=None, in_flight_since=None
    )


@project.register
def _current_changed(e: Vm.CurrentSnapshotChanged, rows: Rows, position: int) -> None:
    for sid, flag in ((e.previous, False), (e.snapshot_id, True)):
        doc = None if sid is None else rows.get(VM_SNAPSHOTS, sid)
        if doc is not None:
            doc["current"] = flag
            rows.put(VM_SNAPSHOTS, doc["id"], doc, position)
    _put_vm(e.vm_id, rows, position, current=e.snapshot_id)


@project.register
def _snapshot_forgotten(e: Vm.SnapshotForgotten, rows: Rows, position: int) -> None:
    for child in e.children:
        doc = rows.get(VM_SNAPSHOTS, child)
        if doc is not None:
            doc["parent_id"] = e.new_parent
            rows.put(VM_SNAPSHOTS, child, doc, position)


@project.register
def _volumes_observed(e: Vm.VolumesObserved, rows: Rows, position: int) -> None:
    current = {v.id for v in e.volumes}
    for old in rows.find(VOLUMES, "vm_id", e.vm_id):
        if old["id"] not in current:
            rows.delete(VOLUMES, old["id"])
    for v in e.volumes:
        pool = rows.get(POOLS, v.pool_id)
        caps = Capabilities.from_dict(pool["caps"]) if pool else Capabilities()
        doc = {"id": v.id, "vm_id": v.vm_id, "pool_id": v.pool_id, "type": v.type}
        _put_volume(rows, doc, caps, position)


# Pools --------------------------------------------------------------------------------


@project.register
def _pool_observed(
    e: Pool.Registered | Pool.CapabilitiesChanged, rows: Rows, position: int
) -> None:
    doc = {
        "id": e.pool_id,
        "name": e.name,
        "driver": e.driver,
        "caps": e.caps.to_dict(),
        "since": _when(e),
    }
    rows.put(POOLS, e.pool_id, doc, position)
    for volume in rows.find(VOLUMES, "pool_id", e.pool_id):
        _put_volume(rows, volume, e.caps, position)


def _put_volume(rows: Rows, doc: Doc, caps: Capabilities, position: int) -> None:
    doc = dict(doc)
    doc["quiescevm"] = caps.volume_snapshot_quiescevm
    doc["supportsstoragesnapshot"] = caps.storage_system_snapshot
    rows.put(VOLUMES, doc["id"], doc, position)
