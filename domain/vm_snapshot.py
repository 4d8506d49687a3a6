"""The VmSnapshot aggregate: one VM snapshot's life, every step and every call's answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from vmsnap.domain.exceptions import NotFound
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import DriverGroup, VolumeRef
from vmsnap.domain.workflow import VM_SNAPSHOT_WORKFLOW


class VmSnapshot(SnapshotAggregate):
    """
    A VM snapshot taken by a strategy (hypervisor or storage) across the VM's drivers.
    """

    workflow = VM_SNAPSHOT_WORKFLOW

    @event("Requested")
    def __init__(
        self,
        vm_id: str,
        name: str,
        description: str | None,
        memory: bool,
        quiesce_requested: bool,
        strategy: str,
        strategy_reason: str,
        hypervisor: str,
        profile: str,
        volumes: Sequence[VolumeRef],
        groups: Sequence[DriverGroup],
        caps: dict[str, dict[str, bool]],
        parent_id: str | None,
    ) -> None:
        self._init_workflow(vm_id, hypervisor, quiesce_requested)
        self.name = name
        self.description = description
        self.memory = memory
        self.strategy = strategy
        self.profile = profile
        self.volumes = tuple(volumes)
        self.groups = tuple(groups)
        self.parent_id = parent_id
        self.consistency = "crash"
        # Pools whose driver holds a snapshot of this VM snapshot (for delete and compensation).
        self.taken: list[str] = []
        self.answers: dict[str, bool] = {}

    @property
    def type(self) -> str:
        return "DiskAndMemory" if self.memory else "Disk"

    def _set_consistency(self, consistency: str) -> None:
        self.consistency = consistency

    # Create -----------------------------------------------------------------------

    def start_snapshotting(self) -> None:
        self.check("start_snapshotting")
        self._snapshotting_started()

    @event("SnapshottingStarted")
    def _snapshotting_started(self) -> None:
        self._move("start_snapshotting")

    @event("HypervisorSnapshotTaken")
    def record_hypervisor_snapshot(
        self, name: str, quiesced: bool, memory: bool, detail: str
    ) -> None:
        self.hypervisor_snapshot = name
        self.quiesced = quiesced

    @event("DriverSnapshotTaken")
    def record_driver_snapshot(
        self, pool_id: str, driver: str, volume_ids: Sequence[str], need_unquiesce: bool
    ) -> None:
        if pool_id not in self.taken:
            self.taken.append(pool_id)
        self.answers[pool_id] = need_unquiesce

    # Revert -----------------------------------------------------------------------

    def start_revert(self) -> None:
        self.check("start_revert")
        self._revert_started()

    @event("RevertStarted")
    def _revert_started(self) -> None:
        self.error = None
        self._move("start_revert")

    @event("HypervisorSnapshotReverted")
    def record_hypervisor_reverted(self, name: str) -> None:
        pass

    @event("DriverSnapshotReverted")
    def record_driver_reverted(
        self, pool_id: str, driver: str, volume_ids: Sequence[str], result: bool
    ) -> None:
        pass

    def finish_revert(self) -> None:
        self.check("finish_revert")
        self._reverted()

    @event("Reverted")
    def _reverted(self) -> None:
        self._move("finish_revert")

    def fail_revert(self, error: str) -> None:
        self.check("fail_revert")
        self._revert_failed(error)

    @event("RevertFailed")
    def _revert_failed(self, error: str) -> None:
        self.error = error
        self._move("fail_revert")

    # Delete and compensation ------------------------------------------------------

    @event("HypervisorSnapshotDeleted")
    def record_hypervisor_deleted(self, name: str, compensation: bool) -> None:
        if name == self.hypervisor_snapshot:
            self.hypervisor_snapshot = None

    @event("DriverSnapshotDeleted")
    def record_driver_deleted(
        self, pool_id: str, driver: str, volume_ids: Sequence[str], compensation: bool
    ) -> None:
        if pool_id in self.taken:
            self.taken.remove(pool_id)

    def to_state(self) -> dict[str, Any]:
        state = super().to_state()
        state["id"] = str(self.id)
        return state


def snapshot_id(value: str) -> UUID:
    """
    Parse a snapshot id given by a user.

    Raises:
        NotFound: ``value`` is not a snapshot id.
    """
    try:
        return UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"no such snapshot: {value!r}") from None
