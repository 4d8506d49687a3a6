"""
The strategies (seed: VMSnapshotStrategy) and the volume-snapshot flow: the only place,
with the Controller, where hypervisors and drivers are called.

Each step saves its events before the next call (invariant 1). A step that fails raises
:class:`StepFailed` after recording the failure; the caller then compensates.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from vmsnap.domain.exceptions import DriverError
from vmsnap.domain.ports import Hypervisor, StorageDriver
from vmsnap.domain.rules import consistency, decide_unquiesce
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import DriverGroup, SnapshotRef, VmInfo, VolumeInfo, temporary_name
from vmsnap.domain.vm import Vm
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.domain.workflow import QUIESCING, SNAPSHOTTING

T = TypeVar("T")
THAW_ATTEMPTS = 3


class StepFailed(Exception):
    """A call failed; its failure is already recorded."""


class Steps:
    """
    Runs one operation's calls for one snapshot, saving every answer as it comes.
    """

    def __init__(
        self,
        save: Callable[..., object],
        snapshot: SnapshotAggregate,
        vm: VmInfo,
        hypervisor: Hypervisor,
        drivers: dict[str, StorageDriver],
        quiesce_deadline_s: float = 60.0,
    ) -> None:
        self.save = save
        self.snap = snapshot
        self.vm = vm
        self.hv = hypervisor
        self.drivers = drivers
        self.quiesce_deadline_s = quiesce_deadline_s
        self.thaw_by: float | None = None  # monotonic time the frozen VM must be thawed by
        self.expired = False

    def call(
        self,
        target: str,
        op: str,
        fn: Callable[[], T],
        *,
        pool_id: str | None = None,
        attempts: int = 1,
    ) -> T:
        error = ""
        for attempt in range(1, attempts + 1):
            try:
                if self.thaw_by is not None and self.snap.frozen:
                    return self._within_deadline(target, op, fn)
                return fn()
            except Exception as e:  # every failure is recorded, whatever raised it
                code = e.code if isinstance(e, DriverError) else type(e).__name__
                error = str(e) or type(e).__name__
                self.snap.record_call_failed(target, op, error, code, attempt, pool_id)
                self.save(self.snap)
        raise StepFailed(f"{op} on {target} failed: {error}")

    def _within_deadline(self, target: str, op: str, fn: Callable[[], T]) -> T:
        """
        Run a call while the VM is frozen; if the quiesce deadline passes first, thaw the
        VM at once and let the call finish (its answer is still recorded), then fail.
        """
        outcome: list[T] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                outcome.append(fn())
            except BaseException as e:
                errors.append(e)

        worker = threading.Thread(target=run, name=f"vmsnap-{op}-{target}", daemon=True)
        worker.start()
        assert self.thaw_by is not None
        worker.join(max(0.0, self.thaw_by - time.monotonic()))
        if worker.is_alive():
            self.expired = True
            self.snap.record_deadline_exceeded(target, op, self.quiesce_deadline_s)
            self.save(self.snap)
            with contextlib.suppress(StepFailed):  # recorded; recover retries a failed thaw
                self.unquiesce(self.snap.ref, True, None, "deadline")
            worker.join()
        if errors:
            raise errors[0]
        return outcome[0]

    def check_deadline(self) -> None:
        if self.expired:
            raise StepFailed(
                f"quiesce deadline of {self.quiesce_deadline_s:g}s exceeded: "
                "the VM was thawed while a call still ran"
            )

    def volumes(self, ids: tuple[str, ...]) -> list[VolumeInfo]:
        by_id = {v.id: v for v in self.vm.volumes}
        return [by_id[i] for i in ids]

    def quiesce(self, ref: SnapshotRef, memory: bool) -> None:
        self.snap.start_quiesce()
        self.save(self.snap)
        result = self.call(
            self.hv.name, "quiesce", lambda: self.hv.quiesce(self.vm, ref, memory=memory)
        )
        self.snap.record_quiesced(result)
        self.save(self.snap)
        if result.frozen:
            self.thaw_by = time.monotonic() + self.quiesce_deadline_s

    def unquiesce(self, ref: SnapshotRef, thaw: bool, release: str | None, reason: str) -> None:
        """
        Thaw (mandatory when frozen, retried) and/or release the temporary snapshot.
        """
        if not thaw and release is None:
            return
        attempts = THAW_ATTEMPTS if thaw else 1
        deadline, self.thaw_by = self.thaw_by, None  # the unquiesce call itself is not cut short
        try:
            detail = self.call(
                self.hv.name,
                "unquiesce",
                lambda: self.hv.unquiesce(self.vm, ref, thaw=thaw, release=release),
                attempts=attempts,
            )
        except StepFailed as e:
            self.thaw_by = deadline
            if thaw and self.snap.frozen:
                self.snap.record_alert(
                    "vm-frozen",
                    f"VM {self.vm.id} may still be frozen: thaw failed {attempts} times",
                )
                self.save(self.snap)
            raise e
        self.snap.record_unquiesced(thaw, release, reason, detail)
        self.save(self.snap)

    @contextlib.contextmanager
    def thaw_on_error(self) -> Iterator[None]:
        """
        If the operation breaks off with an error that is not a recorded call failure (the
        store refused a write, a bug), thaw a frozen VM before the error propagates: the
        freeze must not outlive the failure. Nothing can be recorded here; recover() thaws
        again (thaw is idempotent) and records it.
        """
        try:
            yield
        except StepFailed:
            raise
        except Exception:
            if self.snap.frozen or self.snap.state == QUIESCING:
                with contextlib.suppress(Exception):
                    self.hv.unquiesce(self.vm, self.snap.ref, thaw=True, release=None)
            raise

    def release_after_failure(self, ref: SnapshotRef, reason: str) -> None:
        """
        On the failure path: thaw a VM that is (or may be) frozen and release the
        temporary hypervisor snapshot; record failures and go on.
        """
        snap = self.snap
        # A quiesce call that never answered may have frozen the VM and taken its temporary
        # snapshot: thaw and release (by its fixed name) to be sure; both are idempotent.
        unanswered = snap.state == QUIESCING
        maybe_frozen = snap.frozen or unanswered
        temp = snap.hypervisor_snapshot if _is_temporary(snap) else None
        if unanswered and temp is None:
            temp = temporary_name(ref.name)
        with contextlib.suppress(StepFailed):  # recorded; the caller reports leftovers
            self.unquiesce(ref, maybe_frozen, temp, reason)


def _is_temporary(snap: SnapshotAggregate) -> bool:
    # A VM snapshot of the hypervisor strategy owns its hypervisor snapshot; the
    # storage strategy's (and a volume snapshot's) is the temporary one from quiesce.
    return not (isinstance(snap, VmSnapshot) and snap.strategy == "hypervisor")


class VmSnapshotFlow:
    """
    Create, revert and delete one VM snapshot with its strategy.
    """

    def __init__(self, steps: Steps, vm_record: Vm) -> None:
        self.steps = steps
        self.snap: VmSnapshot = steps.snap  # type: ignore[assignment]
        self.vm_record = vm_record

    def _end(self, outcome: str) -> None:
        sid = str(self.snap.id)
        self.vm_record.end(sid, outcome)
        if outcome == "ready":
            self.vm_record.set_current(sid)
        if outcome == "removed":
            self.vm_record.forget(sid)
        self.steps.save(self.snap, self.vm_record)

    # Create -----------------------------------------------------------------------

    def create(self) -> None:
        with self.steps.thaw_on_error():
            try:
                if self.snap.strategy == "storage":
                    self._create_with_storage()
                else:
                    self._create_with_hypervisor()
            except StepFailed as e:
                self.compensate_create(str(e))

    def _create_with_hypervisor(self) -> None:
        steps, snap = self.steps, self.snap
        snap.start_snapshotting()
        steps.save(snap)
        taken = steps.call(
            steps.hv.name,
            "take_vm_snapshot",
            lambda: steps.hv.take_vm_snapshot(steps.vm, snap.ref, memory=snap.memory),
        )
        snap.record_hypervisor_snapshot(taken.name, taken.quiesced, taken.memory, taken.detail)
        steps.save(snap)
        snap.complete(taken.quiesced, consistency(taken.quiesced))
        self._end("ready")

    def _create_with_storage(self) -> None:
        steps, snap = self.steps, self.snap
        ref = snap.ref
        steps.quiesce(ref, snap.memory)
        for group in snap.groups:
            driver = steps.drivers[group.pool_id]
            volumes = steps.volumes(group.volume_ids)
            answer = steps.call(
                group.pool_id,
                "take_vm_snapshot",
                lambda d=driver, v=volumes: d.take_vm_snapshot(v, ref),  # type: ignore[misc]
                pool_id=group.pool_id,
            )
            snap.record_driver_snapshot(group.pool_id, group.driver, group.volume_ids, bool(answer))
            steps.save(snap)
            steps.check_deadline()
        decision = decide_unquiesce(
            snap.answers,
            frozen=snap.frozen,
            temp_snapshot=snap.hypervisor_snapshot,
            memory=snap.memory,
        )
        snap.record_unquiesce_decision(
            dict(snap.answers),
            decision.need_unquiesce,
            decision.thaw,
            decision.release,
            decision.reason,
        )
        steps.save(snap)
        reason = "rule" if decision.release else "mandatory"
        steps.unquiesce(ref, decision.thaw, decision.release, reason)
        snap.complete(snap.quiesced, consistency(snap.quiesced))
        self._end("ready")

    def compensate_create(
        self, error: str, thaw_reason: str = "failure", *, interrupted: bool = False
    ) -> None:
        """
        Undo a failed create: thaw and release, delete what the drivers took, then fail.

        ``interrupted``: the controller died mid-call, so the call it was in may have
        taken a snapshot whose answer was never recorded; delete that one too, by its
        fixed name (deletes are idempotent).
        """
        steps, snap = self.steps, self.snap
        # Thaw before the cleanup calls: the VM must not stay frozen while they run.
        if snap.strategy == "storage":
            steps.release_after_failure(snap.ref, thaw_reason)
        extra = self._unanswered_group() if interrupted else None
        self._delete_driver_snapshots(compensation=True, extra=extra)
        if snap.strategy != "storage":
            # An unanswered take_vm_snapshot may have taken it under its fixed name.
            unanswered = interrupted and snap.state == SNAPSHOTTING
            self._delete_hypervisor_snapshot(
                compensation=True, name=snap.ref.name if unanswered else None
            )
        leftovers = self._leftovers()
        snap.fail(error + (f"; not cleaned up: {leftovers}" if leftovers else ""))
        self._end("failed")

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
            for group in self._taken_groups():
                driver = steps.drivers[group.pool_id]
                volumes = steps.volumes(group.volume_ids)
                result = steps.call(
                    group.pool_id,
                    "revert_vm_snapshot",
                    lambda d=driver, v=volumes: d.revert_vm_snapshot(v, snap.ref),  # type: ignore[misc]
                    pool_id=group.pool_id,
                )
                snap.record_driver_reverted(
                    group.pool_id, group.driver, group.volume_ids, bool(result)
                )
                steps.save(snap)
        except StepFailed as e:
            snap.fail_revert(str(e))
            self._end("revert failed")
            return
        snap.finish_revert()
        self.vm_record.end(str(snap.id), "reverted")
        self.vm_record.set_current(str(snap.id))
        steps.save(snap, self.vm_record)

    def _taken_groups(self) -> list[DriverGroup]:
        return [g for g in self.snap.groups if g.pool_id in self.snap.taken]

    def _unanswered_group(self) -> DriverGroup | None:
        # Groups are called in order, each answer saved before the next call: only the
        # first group without an answer can have been inside its call.
        if self.snap.strategy != "storage" or self.snap.state != SNAPSHOTTING:
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
            self._end("failed")
            return
        self.snap.finish_delete()
        self._end("removed")

    def _delete_driver_snapshots(
        self, *, compensation: bool, strict: bool = False, extra: DriverGroup | None = None
    ) -> None:
        steps, snap = self.steps, self.snap
        for group in [*self._taken_groups(), *([extra] if extra else [])]:
            driver = steps.drivers[group.pool_id]
            volumes = steps.volumes(group.volume_ids)
            try:
                steps.call(
                    group.pool_id,
                    "delete_vm_snapshot",
                    lambda d=driver, v=volumes: d.delete_vm_snapshot(v, snap.ref),  # type: ignore[misc]
                    pool_id=group.pool_id,
                )
            except StepFailed:
                if strict:
                    raise
                continue
            snap.record_driver_deleted(group.pool_id, group.driver, group.volume_ids, compensation)
            steps.save(snap)

    def _delete_hypervisor_snapshot(
        self, *, compensation: bool, strict: bool = False, name: str | None = None
    ) -> None:
        steps, snap = self.steps, self.snap
        name = snap.hypervisor_snapshot or name
        if name is None:
            return
        try:
            steps.call(
                steps.hv.name,
                "delete_vm_snapshot",
                lambda: steps.hv.delete_vm_snapshot(steps.vm, name),
            )
        except StepFailed:
            if strict:
                raise
            return
        snap.record_hypervisor_deleted(name, compensation)
        steps.save(snap)


class VolumeSnapshotFlow:
    """
    Create (quiesced where asked and allowed) and delete one volume snapshot.
    """

    def __init__(
        self, steps: Steps, vm_record: Vm, driver: StorageDriver, volume: VolumeInfo
    ) -> None:
        self.steps = steps
        self.snap: VolumeSnapshot = steps.snap  # type: ignore[assignment]
        self.vm_record = vm_record
        self.driver = driver
        self.volume = volume

    def _end(self, outcome: str) -> None:
        self.vm_record.end(str(self.snap.id), outcome)
        self.steps.save(self.snap, self.vm_record)

    def create(self) -> None:
        with self.steps.thaw_on_error():
            self._create()

    def _create(self) -> None:
        steps, snap = self.steps, self.snap
        ref = snap.ref
        try:
            if snap.quiesce_requested:
                steps.quiesce(ref, memory=False)
            else:
                snap.start_snapshotting()
                steps.save(snap)
            name = steps.call(
                snap.pool_id,
                "take_snapshot",
                lambda: self.driver.take_snapshot(self.volume, ref.name),
                pool_id=snap.pool_id,
            )
            snap.record_taken(snap.pool_id, snap.driver, name)
            steps.save(snap)
            steps.check_deadline()
            if snap.quiesce_requested:
                decision = decide_unquiesce(
                    {snap.pool_id: True},
                    frozen=snap.frozen,
                    temp_snapshot=snap.hypervisor_snapshot,
                    memory=False,
                )
                snap.record_unquiesce_decision(
                    {snap.pool_id: True},
                    decision.need_unquiesce,
                    decision.thaw,
                    decision.release,
                    decision.reason,
                )
                steps.save(snap)
                steps.unquiesce(ref, decision.thaw, decision.release, "rule")
        except StepFailed as e:
            self.compensate(str(e))
            return
        snap.complete(snap.quiesced, consistency(snap.quiesced))
        self._end("ready")

    def compensate(
        self, error: str, thaw_reason: str = "failure", *, interrupted: bool = False
    ) -> None:
        """
        Thaw and release, delete the snapshot taken (``interrupted``: or possibly taken by
        a call whose answer was never recorded), then fail.
        """
        steps, snap = self.steps, self.snap
        steps.release_after_failure(snap.ref, thaw_reason)  # thaw first, then clean up
        unanswered = interrupted and snap.state == SNAPSHOTTING
        if snap.taken is not None or unanswered:
            try:
                self._delete(compensation=True)
            except StepFailed:
                error += f"; not cleaned up: volume snapshot {snap.ref.name}"
        snap.fail(error)
        self._end("failed")

    def _delete(self, *, compensation: bool) -> None:
        steps, snap = self.steps, self.snap
        name = snap.ref.name  # the name it was taken with (``taken`` is the backend's answer)
        steps.call(
            snap.pool_id,
            "delete_snapshot",
            lambda: self.driver.delete_snapshot(self.volume, name),
            pool_id=snap.pool_id,
        )
        snap.record_deleted(snap.pool_id, snap.driver, name, compensation)
        steps.save(snap)

    def delete(self) -> None:
        try:
            if self.snap.taken is not None:
                self._delete(compensation=False)
        except StepFailed as e:
            self.snap.fail(str(e))
            self._end("failed")
            return
        self.snap.finish_delete()
        self._end("removed")
