"""The VmSnapshot aggregate: one VM snapshot's life, every step and every call's answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from vmsnap.domain.exceptions import NotFound
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import NO_ORIGIN, DriverGroup, Origin, VolumeRef
from vmsnap.domain.workflow import (
    FAIL_REVERT,
    FINISH_REVERT,
    START_REVERT,
    START_SNAPSHOTTING,
    VM_SNAPSHOT_WORKFLOW,
)


class VmSnapshot(SnapshotAggregate):
    """
    A VM snapshot taken by a strategy (hypervisor or storage) across the VM's drivers.
    """

    workflow = VM_SNAPSHOT_WORKFLOW

    class Requested(Aggregate.Created):
        """A VM snapshot was asked for: what, by which strategy and why, with what caps."""

        vm_id: str
        name: str
        description: str | None
        memory: bool
        quiesce_requested: bool
        strategy: str
        strategy_reason: str
        hypervisor: str
        profile: str
        volumes: Sequence[VolumeRef]
        groups: Sequence[DriverGroup]
        caps: dict[str, dict[str, bool]]
        parent_id: str | None
        # Who asked, why, under which request (absent from events recorded before them).
        actor: str | None = None
        reason: str | None = None
        correlation_id: str | None = None

    @event(Requested)
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
        actor: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
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
        # Pools whose driver holds a snapshot of this VM snapshot (for delete and compensation).
        self.taken: list[str] = []
        self.answers: dict[str, bool] = {}

    class SnapshottingStarted(SnapshotAggregate.Event):
        """The hypervisor strategy's take is about to be called (nothing to quiesce first)."""

        trigger = START_SNAPSHOTTING

    class HypervisorSnapshotTaken(SnapshotAggregate.Event):
        """The hypervisor strategy's answer: the hypervisor VM snapshot it took."""

        name: str
        quiesced: bool
        memory: bool
        detail: str

        def update(self, snapshot: Any) -> None:
            snapshot.hypervisor_snapshot = self.name
            snapshot.quiesced = self.quiesced

    class DriverSnapshotTaken(SnapshotAggregate.Event):
        """One pool's driver took its volumes and answered ``need_unquiesce``."""

        pool_id: str
        driver: str
        volume_ids: Sequence[str]
        need_unquiesce: bool

        def update(self, snapshot: Any) -> None:
            if self.pool_id not in snapshot.taken:
                snapshot.taken.append(self.pool_id)
            snapshot.answers[self.pool_id] = self.need_unquiesce

    class RevertStarted(SnapshotAggregate.Event):
        trigger = START_REVERT
        # Who asked, why, under which request, as on Vm.OperationStarted.
        actor: str | None = None
        reason: str | None = None
        correlation_id: str | None = None

        def update(self, snapshot: Any) -> None:
            snapshot.error = None

    class HypervisorSnapshotReverted(SnapshotAggregate.Event):
        name: str

    class DriverSnapshotReverted(SnapshotAggregate.Event):
        pool_id: str
        driver: str
        volume_ids: Sequence[str]
        result: bool

    class Reverted(SnapshotAggregate.Event):
        trigger = FINISH_REVERT

    class RevertFailed(SnapshotAggregate.Event):
        """The revert failed; as in CloudStack the snapshot stays ready, with the error."""

        trigger = FAIL_REVERT
        error: str

        def update(self, snapshot: Any) -> None:
            snapshot.error = self.error

    class HypervisorSnapshotDeleted(SnapshotAggregate.Event):
        name: str
        compensation: bool

        def update(self, snapshot: Any) -> None:
            if self.name == snapshot.hypervisor_snapshot:
                snapshot.hypervisor_snapshot = None

    class DriverSnapshotDeleted(SnapshotAggregate.Event):
        pool_id: str
        driver: str
        volume_ids: Sequence[str]
        compensation: bool

        def update(self, snapshot: Any) -> None:
            if self.pool_id in snapshot.taken:
                snapshot.taken.remove(self.pool_id)

    @property
    def type(self) -> str:
        return "DiskAndMemory" if self.memory else "Disk"

    # Create -----------------------------------------------------------------------

    def start_snapshotting(self) -> None:
        self._transition(VmSnapshot.SnapshottingStarted)

    def record_hypervisor_snapshot(
        self, name: str, *, quiesced: bool, memory: bool, detail: str
    ) -> None:
        self.trigger_event(
            VmSnapshot.HypervisorSnapshotTaken,
            name=name,
            quiesced=quiesced,
            memory=memory,
            detail=detail,
        )

    def record_driver_snapshot(self, group: DriverGroup, *, need_unquiesce: bool) -> None:
        self.trigger_event(
            VmSnapshot.DriverSnapshotTaken,
            pool_id=group.pool_id,
            driver=group.driver,
            volume_ids=group.volume_ids,
            need_unquiesce=need_unquiesce,
        )

    # Revert -----------------------------------------------------------------------

    def start_revert(self, origin: Origin = NO_ORIGIN) -> None:
        self._transition(VmSnapshot.RevertStarted, **origin.fields())

    def record_hypervisor_reverted(self, name: str) -> None:
        self.trigger_event(VmSnapshot.HypervisorSnapshotReverted, name=name)

    def record_driver_reverted(self, group: DriverGroup, *, result: bool) -> None:
        self.trigger_event(
            VmSnapshot.DriverSnapshotReverted,
            pool_id=group.pool_id,
            driver=group.driver,
            volume_ids=group.volume_ids,
            result=result,
        )

    def finish_revert(self) -> None:
        self._transition(VmSnapshot.Reverted)

    def fail_revert(self, error: str) -> None:
        self._transition(VmSnapshot.RevertFailed, error=error)

    # Delete and compensation ------------------------------------------------------

    def record_hypervisor_deleted(self, name: str, *, compensation: bool) -> None:
        self.trigger_event(
            VmSnapshot.HypervisorSnapshotDeleted, name=name, compensation=compensation
        )

    def record_driver_deleted(self, group: DriverGroup, *, compensation: bool) -> None:
        self.trigger_event(
            VmSnapshot.DriverSnapshotDeleted,
            pool_id=group.pool_id,
            driver=group.driver,
            volume_ids=group.volume_ids,
            compensation=compensation,
        )

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
