"""
Recovery: finish or compensate the operations that controllers which died left in
flight, and thaw again a VM whose thaw failed. Never touches a live controller's
operation (the store's version check fences a live one that overruns).
"""

from __future__ import annotations

import contextlib
import os
import socket
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.vm import THAW, Vm
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.domain.workflow import EXPUNGING, REVERTING
from vmsnap.flows import StepFailed, Steps, VmSnapshotFlow, VolumeSnapshotFlow
from vmsnap.flows.steps import RECOVERY
from vmsnap.projections.projector import VMS
from vmsnap.service.runtime import OPEN_OWNERS, Runtime


class Recovery:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def recover(self) -> list[str]:
        """
        Finish or compensate every operation left in flight by a controller that died;
        return the ids of the snapshots it touched. Running it twice is harmless.
        """
        done: list[str] = []
        for vm_doc in self.rt.views_current().select(VMS, {}):
            sid = vm_doc.get("in_flight")
            since = vm_doc.get("in_flight_since")
            if sid is not None and not self._owner_alive(vm_doc.get("owner"), sid, since):
                done.append(self._recover_vm(vm_doc["vm_id"]))
            elif sid is None and vm_doc.get("frozen") and vm_doc.get("frozen_by"):
                done.append(self._thaw_again(vm_doc["vm_id"], vm_doc["frozen_by"]))
        return done

    def _load(self, sid: str) -> SnapshotAggregate:
        agg: Aggregate = self.rt.wiring.log.repository.get(UUID(sid))
        assert isinstance(agg, SnapshotAggregate)
        return agg

    def _thaw_again(self, vm_id: str, sid: str) -> str:
        """
        Thaw a VM whose thaw failed earlier, recorded on the snapshot that froze it.
        """
        rt = self.rt
        vm_aggregate = rt.vm_aggregate(vm_id)
        vm_aggregate.start(THAW, sid, rt.owner)
        agg = self._load(sid)
        rt.claim(vm_aggregate, agg)
        steps = rt.steps(agg, rt.vm_info(vm_id))
        try:
            with contextlib.suppress(StepFailed):
                steps.unquiesce(agg.ref, thaw=True, release=None, reason=RECOVERY)
        finally:
            vm_aggregate.end(sid, "thawed" if not agg.frozen else "still frozen")
            steps.save(vm_aggregate)
            rt.done(sid)
        return sid

    def _owner_alive(self, owner: Any, sid: str, since: str | None) -> bool:
        """
        Whether the controller that claimed a VM may still be running the operation.
        On this host, its process tells; another host's controller is presumed alive until
        ``[limits] operation_timeout_s`` after its claim (a live one that overruns then
        loses its next write to recovery on the store's version check).
        """
        host, pid = [*str(owner).split(":"), "", ""][:2]
        if owner == self.rt.owner:
            return sid in self.rt.running
        if host != socket.gethostname():
            if since is None:
                return True
            age = datetime.now(UTC) - datetime.fromisoformat(since)
            return age.total_seconds() < self.rt.config.limits.operation_timeout_s
        if pid == str(os.getpid()):
            return owner in OPEN_OWNERS  # another Controller of this process, if still open
        return pid_alive(pid)

    def _recover_vm(self, vm_id: str) -> str:
        rt = self.rt
        vm_aggregate = rt.vm_aggregate(vm_id)
        sid = vm_aggregate.in_flight
        assert sid is not None
        agg = self._load(sid)
        steps = rt.steps(agg, rt.vm_info(vm_id))
        reason = f"recovered after the controller {vm_aggregate.owner} stopped"
        if not agg.in_progress:
            vm_aggregate.end(sid, agg.state)  # it had ended; only the claim was left
            steps.save(vm_aggregate)
        elif isinstance(agg, VmSnapshot):
            self._recover_vm_snapshot(VmSnapshotFlow(steps, vm_aggregate), reason)
        else:
            assert isinstance(agg, VolumeSnapshot)
            self._recover_volume_snapshot(steps, agg, vm_aggregate, reason)
        return sid

    def _recover_vm_snapshot(self, flow: VmSnapshotFlow, reason: str) -> None:
        snap = flow.snap
        if snap.state == REVERTING:
            snap.fail_revert(f"revert interrupted: {reason}")
            flow.vm_aggregate.end(str(snap.id), "revert failed")
            flow.steps.save(snap, flow.vm_aggregate)
        elif snap.state == EXPUNGING:
            flow.delete()
        else:
            flow.compensate_create(
                f"create interrupted in state {snap.state}: {reason}", RECOVERY, interrupted=True
            )

    def _recover_volume_snapshot(
        self, steps: Steps, snap: VolumeSnapshot, vm_aggregate: Vm, reason: str
    ) -> None:
        rt = self.rt
        volume = rt.wiring.inventory.volume(snap.volume_id)
        assert volume is not None
        flow = VolumeSnapshotFlow(steps, vm_aggregate, rt.wiring.drivers[snap.pool_id], volume)
        if snap.state == EXPUNGING:
            flow.delete()
        else:
            flow.compensate(
                f"interrupted in state {snap.state}: {reason}", RECOVERY, interrupted=True
            )


def pid_alive(pid: str) -> bool:
    """Whether the process ``pid`` of this host runs (one we may not signal counts)."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True
