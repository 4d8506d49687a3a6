"""The volume snapshot flow: create (quiesced where asked and allowed) and delete."""

from __future__ import annotations

from vmsnap.domain.ports import StorageDriver
from vmsnap.domain.rules import consistency
from vmsnap.domain.values import OWED_VOLUME_SNAPSHOT, Owed, VolumeInfo
from vmsnap.domain.vm import Vm
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.domain.workflow import FAILED, READY, REMOVED, SNAPSHOTTING
from vmsnap.flows.hooks import HookSteps
from vmsnap.flows.steps import FAILURE, StepFailed, Steps


class VolumeSnapshotFlow:
    """
    Create (quiesced where asked and allowed) and delete one volume snapshot.
    """

    def __init__(
        self, steps: Steps, vm_aggregate: Vm, driver: StorageDriver, volume: VolumeInfo
    ) -> None:
        assert isinstance(steps.snap, VolumeSnapshot)
        self.steps = steps
        self.snap: VolumeSnapshot = steps.snap
        self.vm_aggregate = vm_aggregate
        self.driver = driver
        self.volume = volume

    def _end(self, outcome: str) -> None:
        self.vm_aggregate.end(str(self.snap.id), outcome)
        self.steps.save(self.snap, self.vm_aggregate)

    def create(self) -> None:
        with self.steps.thaw_on_error():
            try:
                self._create()
            except StepFailed as e:
                self.compensate(str(e))

    def _create(self) -> None:
        steps, snap = self.steps, self.snap
        hooks = HookSteps(steps)  # none unless quiesced
        if snap.quiesce_requested:
            hooks.before_freeze()
            steps.quiesce(snap.ref, memory=False)
            hooks.after_quiesce()
        else:
            snap.start_snapshotting()
            steps.save(snap)
        name = steps.call(
            snap.pool_id,
            "take_snapshot",
            lambda: self.driver.take_snapshot(self.volume, snap.ref.name),
            pool_id=snap.pool_id,
        )
        snap.record_taken(name)
        steps.save(snap)
        steps.check_deadline()
        if snap.quiesce_requested:
            # The pool captured its volume itself (it advertises the quiesce cap).
            steps.decide_and_unquiesce({snap.pool_id: True}, memory=False)
            hooks.after_thaw()
        app = hooks.app_consistent
        snap.complete(
            quiesced=snap.quiesced, consistency=consistency(snap.quiesced, application=app)
        )
        self._end(READY)

    def compensate(
        self, error: str, thaw_reason: str = FAILURE, *, interrupted: bool = False
    ) -> None:
        """
        Thaw and release, delete the snapshot taken (``interrupted``: or possibly taken by
        a call whose answer was never recorded), then fail.
        """
        steps, snap = self.steps, self.snap
        owed = steps.release_after_failure(thaw_reason)  # thaw first, then clean up
        HookSteps(steps).after_thaw()  # the owed post-thaw hook, right after the thaw
        left = [f"hypervisor snapshot {o.name}" for o in owed]
        unanswered = interrupted and snap.state == SNAPSHOTTING
        if snap.taken is not None or unanswered:
            try:
                self._delete(compensation=True)
            except StepFailed:
                left.append(f"volume snapshot {snap.ref.name}")
                sid, volume = str(snap.id), (snap.volume_id,)
                owed.append(Owed(OWED_VOLUME_SNAPSHOT, snap.pool_id, snap.ref.name, sid, volume))
        if snap.frozen:
            left.append("the VM is still frozen")
        for o in owed:  # the orphan ledger: recover retries these (ADR 0020)
            self.vm_aggregate.owe(o, f"cleanup of failed snapshot {snap.id} failed")
        snap.fail(error + (f"; not cleaned up: {'; '.join(left)}" if left else ""))
        self._end(FAILED)

    def _delete(self, *, compensation: bool) -> None:
        steps, snap = self.steps, self.snap
        name = snap.ref.name  # the name it was taken with (``taken`` is the backend's answer)
        steps.call(
            snap.pool_id,
            "delete_snapshot",
            lambda: self.driver.delete_snapshot(self.volume, name),
            pool_id=snap.pool_id,
        )
        snap.record_deleted(name, compensation=compensation)
        steps.save(snap)

    def delete(self) -> None:
        try:
            if self.snap.taken is not None:
                self._delete(compensation=False)
        except StepFailed as e:
            self.snap.fail(str(e))
            self._end(FAILED)
            return
        self.snap.finish_delete()
        self._end(REMOVED)
