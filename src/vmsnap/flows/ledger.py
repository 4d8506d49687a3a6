"""
The orphan ledger's calls (ADR 0020): what an answered call leaves in a backend when its
answer cannot be recorded, and the cleanup of one owed object. Cleanups are idempotent:
a backend that no longer holds the object answers as if it removed it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from vmsnap.domain.ports import Hypervisor, StorageDriver
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import (
    OWED_DRIVER_SNAPSHOT,
    OWED_HYPERVISOR_SNAPSHOT,
    OWED_RELEASE,
    OWED_THAW,
    OWED_VOLUME_SNAPSHOT,
    Owed,
    QuiesceResult,
    SnapshotRef,
    VmInfo,
    backend_name,
)


@attrs.frozen
class Answered:
    """A call that answered; its answer is not recorded yet."""

    target: str
    op: str
    pool_id: str | None
    answer: Any


def left_by(snap: SnapshotAggregate, call: Answered) -> list[Owed]:
    """What ``call`` may have left in its backend, for ``snap``, once nothing records it."""
    sid = str(snap.id)
    answer = call.answer
    if call.op == "quiesce" and isinstance(answer, QuiesceResult):
        owed = [Owed(OWED_THAW, call.target, sid, sid)] if answer.frozen else []
        if answer.hypervisor_snapshot:
            owed.append(Owed(OWED_RELEASE, call.target, answer.hypervisor_snapshot, sid))
        return owed
    if call.op == "take_vm_snapshot" and call.pool_id is None:
        name = getattr(answer, "name", None) or backend_name(sid)
        return [Owed(OWED_HYPERVISOR_SNAPSHOT, call.target, name, sid)]
    if call.op == "take_vm_snapshot":
        groups = getattr(snap, "groups", ())
        volumes = next((g.volume_ids for g in groups if g.pool_id == call.pool_id), ())
        return [Owed(OWED_DRIVER_SNAPSHOT, call.target, backend_name(sid), sid, volumes)]
    if call.op == "take_snapshot":
        volume = getattr(snap, "volume_id", "")
        name = answer if isinstance(answer, str) else backend_name(sid)
        return [Owed(OWED_VOLUME_SNAPSHOT, call.target, name, sid, (volume,))]
    return []  # thaws, releases, reverts and deletes leave nothing behind


def clean_up(
    owed: Owed,
    vm: VmInfo,
    hypervisor: Hypervisor,
    drivers: Mapping[str, StorageDriver],
) -> str:
    """
    Remove one owed object from its backend; return what the backend answered.

    Raises:
        Exception: whatever the backend raised; the object stays owed.
        KeyError: its pool or a volume is gone from the config.
    """
    ref = SnapshotRef(owed.snapshot_id, vm.id, backend_name(owed.snapshot_id), False)
    if owed.kind == OWED_THAW:
        return hypervisor.unquiesce(vm, ref, thaw=True, release=None)
    if owed.kind == OWED_RELEASE:
        return hypervisor.unquiesce(vm, ref, thaw=False, release=owed.name)
    if owed.kind == OWED_HYPERVISOR_SNAPSHOT:
        hypervisor.delete_vm_snapshot(vm, owed.name)
        return f"hypervisor snapshot {owed.name} deleted"
    by_id = {v.id: v for v in vm.volumes}
    volumes = [by_id[v] for v in owed.volume_ids]
    driver = drivers[owed.target]
    if owed.kind == OWED_DRIVER_SNAPSHOT:
        driver.delete_vm_snapshot(volumes, attrs.evolve(ref, name=owed.name))
        return f"driver snapshot {owed.name} deleted on {owed.target}"
    assert owed.kind == OWED_VOLUME_SNAPSHOT
    driver.delete_snapshot(volumes[0], owed.name)
    return f"volume snapshot {owed.name} deleted on {owed.target}"
