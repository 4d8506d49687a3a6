"""The VolumeSnapshot aggregate: a snapshot of one volume, quiesced where the pool can."""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate, event

from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.workflow import START_SNAPSHOTTING, VOLUME_SNAPSHOT_WORKFLOW


class VolumeSnapshot(SnapshotAggregate):
    """
    A volume snapshot (CloudStack's createSnapshot with the seed's ``quiescevm``).
    """

    workflow = VOLUME_SNAPSHOT_WORKFLOW

    class Requested(Aggregate.Created):
        """A volume snapshot was asked for, with what its pool advertised then."""

        volume_id: str
        vm_id: str
        pool_id: str
        driver: str
        quiesce_requested: bool
        hypervisor: str
        caps: dict[str, bool]
        # Who asked, why, under which request (absent from events recorded before them).
        actor: str | None = None
        reason: str | None = None
        correlation_id: str | None = None

    @event(Requested)
    def __init__(
        self,
        volume_id: str,
        vm_id: str,
        pool_id: str,
        driver: str,
        quiesce_requested: bool,
        hypervisor: str,
        caps: dict[str, bool],
        actor: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self._init_workflow(vm_id, hypervisor, quiesce_requested)
        self.volume_id = volume_id
        self.pool_id = pool_id
        self.driver = driver
        self.taken: str | None = None

    class SnapshottingStarted(SnapshotAggregate.Event):
        """An unquiesced take is about to be called."""

        trigger = START_SNAPSHOTTING

    class VolumeSnapshotTaken(SnapshotAggregate.Event):
        """The pool's driver took the volume snapshot; ``name`` is its answer."""

        pool_id: str
        driver: str
        name: str

        def update(self, snapshot: Any) -> None:
            snapshot.taken = self.name

    class VolumeSnapshotDeleted(SnapshotAggregate.Event):
        pool_id: str
        driver: str
        name: str
        compensation: bool

        def update(self, snapshot: Any) -> None:
            snapshot.taken = None

    def start_snapshotting(self) -> None:
        self._transition(VolumeSnapshot.SnapshottingStarted)

    def record_taken(self, name: str) -> None:
        self.trigger_event(
            VolumeSnapshot.VolumeSnapshotTaken, pool_id=self.pool_id, driver=self.driver, name=name
        )

    def record_deleted(self, name: str, *, compensation: bool) -> None:
        self.trigger_event(
            VolumeSnapshot.VolumeSnapshotDeleted,
            pool_id=self.pool_id,
            driver=self.driver,
            name=name,
            compensation=compensation,
        )
