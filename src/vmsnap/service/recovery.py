"""
Recovery: finish or compensate the operations that controllers which died left in
flight, and thaw again a VM whose thaw failed.

Recovery is fenced (invariant 9, ADR 0020): for each VM it reloads the VM's record,
judges its owner from that record, and claims the operation (``Vm.RecoveryClaimed`` with
the snapshot's ``RecoveryStarted``, saved with both records' versions) before any call.
Of several recovers exactly one wins the claim; a live controller judged stopped loses
its next write. Each VM is recovered on its own: one that cannot be finished is reported
and the others are still recovered.
"""

from __future__ import annotations

import contextlib
import os
import socket
from datetime import UTC, datetime
from uuid import UUID

import attrs
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from vmsnap.domain.exceptions import OperationTakenOver, VmsnapError
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.vm import SETTLE, THAW, Vm
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.domain.workflow import EXPUNGING, REVERTING
from vmsnap.flows import StepFailed, Steps, VmSnapshotFlow, VolumeSnapshotFlow
from vmsnap.flows.hooks import unended_message
from vmsnap.flows.steps import RECOVERY
from vmsnap.projections.projector import VMS
from vmsnap.service import ledger
from vmsnap.service.runtime import OPEN_OWNERS, Runtime, start_time


@attrs.frozen
class Unrecovered:
    """A VM whose operation recovery could not finish, and why."""

    vm_id: str
    snapshot_id: str | None
    reason: str


@attrs.define
class Outcome:
    done: list[str] = attrs.Factory(list)
    unrecovered: list[Unrecovered] = attrs.Factory(list)


class Recovery:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        # Post-thaw hooks found started and never ended (issue 19): reported, not rerun.
        self._unended_hooks: list[Unrecovered] = []

    def recover(self) -> Outcome:
        """
        Finish or compensate every operation left in flight by a controller that died;
        the snapshots it touched and the VMs it could not finish. Running it twice, or
        several at once, is harmless.
        """
        outcome = Outcome()
        candidates = [
            (d["vm_id"], d.get("in_flight"))
            for d in self.rt.views_current().select(VMS, {})
            if d.get("in_flight") is not None
            or (d.get("frozen") and d.get("frozen_by"))
            or d.get("owed")
        ]
        for vm_id, in_flight in candidates:
            try:
                sid = self._recover(vm_id)
                _, problem = ledger.settle(self.rt, vm_id)
            except Exception as e:  # one VM that cannot be finished never stops the others
                outcome.unrecovered.append(Unrecovered(vm_id, in_flight, _why(e)))
                continue
            if sid is not None:
                outcome.done.append(sid)
            if problem is not None:
                outcome.unrecovered.append(Unrecovered(vm_id, None, f"still owed: {problem}"))
        outcome.unrecovered += self._unended_hooks
        self._unended_hooks = []
        return outcome

    def _recover(self, vm_id: str) -> str | None:
        """Recover one VM, judged and claimed on its record as it is now."""
        record = self.rt.vm_aggregate(vm_id)
        sid = record.in_flight
        if sid is None:
            frozen_by = self._frozen_by(vm_id)
            return None if frozen_by is None else self._thaw_again(record, frozen_by)
        if self._owner_alive(record, sid):
            return None
        if record.operation == SETTLE:
            self._take_over_settle(record)
            return None
        agg = self._load(sid)
        self.rt.check_parts(agg)  # config drift: reported before anything is claimed
        previous = record.owner or ""
        record.take_over(self.rt.owner)
        agg.record_recovery(self.rt.owner, previous)
        try:
            self.rt.wiring.log.save(record, agg)
        except IntegrityError:
            return None  # another recover claimed it first, or the owner moved on
        self.rt.running.add(sid)
        try:
            self._finish(record, agg, previous)
        except OperationTakenOver:
            return None  # yet another recover judged us stopped; it finishes
        finally:
            self.rt.done(sid)
        return sid

    def _take_over_settle(self, record: Vm) -> None:
        """A cleanup of owed objects that stopped: end its claim; the settle runs again."""
        sid = record.in_flight
        assert sid is not None
        record.take_over(self.rt.owner)
        record.end(sid, "settle interrupted")
        with contextlib.suppress(IntegrityError):
            self.rt.wiring.log.save(record)

    def _frozen_by(self, vm_id: str) -> str | None:
        doc = self.rt.views_current().get(VMS, vm_id)
        if doc is None or not doc.get("frozen"):
            return None
        frozen_by = doc.get("frozen_by")
        return str(frozen_by) if frozen_by else None

    def _load(self, sid: str) -> SnapshotAggregate:
        agg: Aggregate = self.rt.wiring.log.repository.get(UUID(sid))
        assert isinstance(agg, SnapshotAggregate)
        return agg

    def _thaw_again(self, record: Vm, sid: str) -> str | None:
        """
        Thaw a VM whose thaw failed earlier, recorded on the snapshot that froze it; the
        claim (with the record's version) comes before the call.
        """
        rt = self.rt
        agg = self._load(sid)
        if not agg.frozen:
            return None
        record.start(THAW, sid, rt.owner)
        try:
            rt.wiring.log.save(record, agg)
        except IntegrityError:
            return None  # another controller claimed the VM first
        rt.running.add(sid)
        steps = rt.steps(agg, rt.vm_info(record.vm_id))
        try:
            with contextlib.suppress(StepFailed):
                steps.unquiesce(agg.ref, thaw=True, release=None, reason=RECOVERY)
        finally:
            record.end(sid, "thawed" if not agg.frozen else "still frozen")
            steps.save(record)
            rt.done(sid)
        return sid

    def _owner_alive(self, record: Vm, sid: str) -> bool:
        """
        Whether the controller that claimed a VM may still be running the operation,
        judged from the VM's record as loaded now. On this host, its process (pid and
        start time) tells; another host's controller is presumed alive until
        ``[limits] operation_timeout_s`` after its claim (a live one that overruns then
        loses its next write on the store's version check).
        """
        owner = str(record.owner)
        host, pid = [*owner.split(":"), "", ""][:2]
        if owner == self.rt.owner:
            return sid in self.rt.running
        if host != socket.gethostname():
            since: datetime | None = getattr(record, "claimed_at", None)  # older records: none
            if since is None:
                return True
            age = datetime.now(UTC) - since
            return age.total_seconds() < self.rt.config.limits.operation_timeout_s
        if pid.split("@")[0] == str(os.getpid()):
            return owner in OPEN_OWNERS  # another Controller of this process, if still open
        return pid_alive(pid)

    def _finish(self, record: Vm, agg: SnapshotAggregate, previous: str) -> None:
        rt = self.rt
        sid = str(agg.id)
        steps = rt.steps(agg, rt.check_parts(agg))
        reason = f"recovered after the controller {previous} stopped"
        if not agg.in_progress:
            record.end(sid, agg.state)  # it had ended; only the claim was left
            steps.save(record)
        elif isinstance(agg, VmSnapshot):
            self._recover_vm_snapshot(VmSnapshotFlow(steps, record), reason)
        else:
            assert isinstance(agg, VolumeSnapshot)
            self._recover_volume_snapshot(steps, agg, record, reason)
        # The compensation ran an owed post-thaw hook (ADR 0026); one that was started and
        # never ended is not run again unless idempotent: the operator must look.
        spec = agg.post_hook
        if spec is not None and agg.post_hook_unended and not spec.idempotent:
            message = unended_message(sid, spec)
            self._unended_hooks.append(Unrecovered(record.vm_id, sid, message))

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
        volume = rt.volume_info(snap.volume_id)
        flow = VolumeSnapshotFlow(steps, vm_aggregate, rt.driver(snap.pool_id), volume)
        if snap.state == EXPUNGING:
            flow.delete()
        else:
            flow.compensate(
                f"interrupted in state {snap.state}: {reason}", RECOVERY, interrupted=True
            )


def _why(e: BaseException) -> str:
    if isinstance(e, KeyError):
        return f"{e.args[0]} is not in the config"
    if isinstance(e, VmsnapError):
        return str(e) or type(e).__name__
    return f"{type(e).__name__}: {e}"


def pid_alive(pid: str) -> bool:
    """
    Whether the process ``pid`` of this host runs (one we may not signal counts).
    ``pid@start``: only if the process with that pid started then (pids are reused).
    """
    number, _, start = pid.partition("@")
    try:
        os.kill(int(number), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        pass
    if start:
        now = start_time(int(number))
        return now is None or now == start
    return True
