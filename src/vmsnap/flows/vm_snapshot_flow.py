"""
The VM snapshot flow (seed: VMSnapshotStrategy): create with the hypervisor or the
storage strategy, revert, delete, and the compensation of a failed create.
"""

from __future__ import annotations

from vmsnap.domain.rules import STORAGE_STRATEGY, consistency
from vmsnap.domain.values import (
    OWED_DRIVER_SNAPSHOT,
    OWED_HYPERVISOR_SNAPSHOT,
    DriverGroup,
    Owed,
    backend_name,
)
from vmsnap.domain.vm import Vm
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.workflow import FAILED, READY, REMOVED, SNAPSHOTTING
from vmsnap.flows.hooks import HookSteps
from vmsnap.flows.steps import FAILURE, StepFailed, Steps


class VmSnapshotFlow:
    """
    Create, revert and delete one VM snapshot with its strategy.
    """

    def __init__(self, steps: Steps, vm_aggregate: Vm) -> None:
        assert isinstance(steps.snap, VmSnapshot)
        self.steps = steps
        self.snap: VmSnapshot = steps.snap
        self.vm_aggregate = vm_aggregate

    def _end(self, outcome: str) -> None:
        sid = str(self.snap.id)
        self.vm_aggregate.end(sid, outcome)
        if outcome == READY:
            self.vm_aggregate.set_current(sid)
        if outcome == REMOVED:
            self.vm_aggregate.forget(sid)
        self.steps.save(self.snap, self.vm_aggregate)

    # Create -----------------------------------------------------------------------

    def create(self) -> None:
        with self.steps.thaw_on_error():
            try:
                if self.snap.strategy == STORAGE_STRATEGY:
                    self._create_with_storage()
                else:
                    self._create_with_hypervisor()
            except StepFailed as e:
                self.compensate_create(str(e))

    def _create_with_hypervisor(self) -> None:
        steps, snap = self.steps, self.snap
        hooks = HookSteps(steps)
        hooks.before_freeze()  # the hypervisor's take quiesces the guest itself
        snap.start_snapshotting()
        steps.save(snap)
        taken = steps.call(
            steps.hv.name,
            "take_vm_snapshot",
            lambda: steps.hv.take_vm_snapshot(steps.vm, snap.ref, memory=snap.memory),
        )
        snap.record_hypervisor_snapshot(
            taken.name, quiesced=taken.quiesced, memory=taken.memory, detail=taken.detail
        )
        steps.save(snap)
        hooks.after_thaw()
        app = hooks.app_consistent
        snap.complete(
            quiesced=taken.quiesced, consistency=consistency(taken.quiesced, application=app)
        )
        self._end(READY)

    def _create_with_storage(self) -> None:
        steps, snap = self.steps, self.snap
        ref = snap.ref
        hooks = HookSteps(steps)
        hooks.before_freeze()
        steps.quiesce(ref, memory=snap.memory)
        hooks.after_quiesce()
        steps.call_groups(
            snap.groups,
            "take_vm_snapshot",
            lambda driver, volumes: driver.take_vm_snapshot(volumes, ref),
            lambda group, answer: snap.record_driver_snapshot(group, need_unquiesce=bool(answer)),
            then=steps.check_deadline,
        )
        steps.decide_and_unquiesce(snap.answers, memory=snap.memory)
        hooks.after_thaw()
        app = hooks.app_consistent
        snap.complete(
            quiesced=snap.quiesced, consistency=consistency(snap.quiesced, application=app)
        )
        self._end(READY)

    def compensate_create(
        self, error: str, thaw_reason: str = FAILURE, *, interrupted: bool = False
    ) -> None:
        """
        Undo a failed create: thaw and release, delete what the drivers took, then fail.

        ``interrupted``: the controller died mid-call, so the call it was in may have
        taken a snapshot whose answer was never recorded; delete that one too, by its
        fixed name (deletes are idempotent).
        """
        steps, snap = self.steps, self.snap
        storage = snap.strategy == STORAGE_STRATEGY
        owed: list[Owed] = []
        # Thaw before the cleanup calls: the VM must not stay frozen while they run.
        if storage:
            owed += steps.release_after_failure(thaw_reason)
        HookSteps(steps).after_thaw()  # the owed post-thaw hook, right after the thaw
        extra = self._unanswered_group() if interrupted else None
        deleted = self._delete_driver_snapshots(compensation=True, extra=extra)
        if extra is not None and extra.pool_id not in deleted:
            owed.append(self._owed_group(extra))
        if not storage:
            # An unanswered take_vm_snapshot may have taken it under its fixed name.
            unanswered = interrupted and snap.state == SNAPSHOTTING
            name = snap.hypervisor_snapshot or (snap.ref.name if unanswered else None)
            if not self._delete_hypervisor_snapshot(compensation=True, name=name) and name:
                owed.append(Owed(OWED_HYPERVISOR_SNAPSHOT, steps.hv.name, name, str(snap.id)))
        owed += [self._owed_group(g) for g in self._taken_groups()]
        for o in owed:  # the orphan ledger: recover retries these (ADR 0020)
            self.vm_aggregate.owe(o, f"cleanup of failed snapshot {snap.id} failed")
        leftovers = self._leftovers()
        snap.fail(error + (f"; not cleaned up: {leftovers}" if leftovers else ""))
        self._end(FAILED)

    def _owed_group(self, group: DriverGroup) -> Owed:
        sid = str(self.snap.id)
        return Owed(OWED_DRIVER_SNAPSHOT, group.pool_id, backend_name(sid), sid, group.volume_ids)

    def _leftovers(self) -> str:
        snap = self.snap
        parts = [f"driver snapshots on {', '.join(snap.taken)}"] if snap.taken else []
        if snap.hypervisor_snapshot:
            parts.append(f"hypervisor snapshot {snap.hypervisor_snapshot}")
        if snap.frozen:
            parts.append("the VM is still frozen")
        return "; ".join(parts)

    # Revert -----------------------------------------------------------------------

    def revert(self) -> None:
        steps, snap = self.steps, self.snap
        try:
            name = snap.hypervisor_snapshot
            if name is not None:
                steps.call(
                    steps.hv.name,
                    "revert_vm_snapshot",
                    lambda: steps.hv.revert_vm_snapshot(steps.vm, name),
                )
                snap.record_hypervisor_reverted(name)
                steps.save(snap)
            steps.call_groups(
                self._taken_groups(),
                "revert_vm_snapshot",
                lambda driver, volumes: driver.revert_vm_snapshot(volumes, snap.ref),
                lambda group, result: snap.record_driver_reverted(group, result=bool(result)),
            )
        except StepFailed as e:
            snap.fail_revert(str(e))
            self._end("revert failed")
            return
        snap.finish_revert()
        self.vm_aggregate.end(str(snap.id), "reverted")
        self.vm_aggregate.set_current(str(snap.id))
        steps.save(snap, self.vm_aggregate)

    def _taken_groups(self) -> list[DriverGroup]:
        return [g for g in self.snap.groups if g.pool_id in self.snap.taken]

    def _unanswered_group(self) -> DriverGroup | None:
        # Groups are called in order, each answer saved before the next call: only the
        # first group without an answer can have been inside its call.
        if self.snap.strategy != STORAGE_STRATEGY or self.snap.state != SNAPSHOTTING:
            return None
        answered = set(self.snap.answers)
        return next((g for g in self.snap.groups if g.pool_id not in answered), None)

    # Delete -----------------------------------------------------------------------

    def delete(self) -> None:
        try:
            self._delete_driver_snapshots(compensation=False, strict=True)
            self._delete_hypervisor_snapshot(compensation=False, strict=True)
        except StepFailed as e:
            self.snap.fail(str(e))
            self._end(FAILED)
            return
        self.snap.finish_delete()
        self._end(REMOVED)

    def _delete_driver_snapshots(
        self, *, compensation: bool, strict: bool = False, extra: DriverGroup | None = None
    ) -> set[str]:
        """Delete the drivers' snapshots; return the pools that answered."""
        snap = self.snap
        deleted: set[str] = set()

        def record(group: DriverGroup, _: object) -> None:
            deleted.add(group.pool_id)
            snap.record_driver_deleted(group, compensation=compensation)

        self.steps.call_groups(
            [*self._taken_groups(), *([extra] if extra else [])],
            "delete_vm_snapshot",
            lambda driver, volumes: driver.delete_vm_snapshot(volumes, snap.ref),
            record,
            keep_going=not strict,
        )
        return deleted

    def _delete_hypervisor_snapshot(
        self, *, compensation: bool, strict: bool = False, name: str | None = None
    ) -> bool:
        """Delete the hypervisor snapshot, if any; False: its delete failed (recorded)."""
        steps, snap = self.steps, self.snap
        name = snap.hypervisor_snapshot or name
        if name is None:
            return True
        try:
            steps.call(
                steps.hv.name,
                "delete_vm_snapshot",
                lambda: steps.hv.delete_vm_snapshot(steps.vm, name),
            )
        except StepFailed:
            if strict:
                raise
            return False
        snap.record_hypervisor_deleted(name, compensation=compensation)
        steps.save(snap)
        return True
