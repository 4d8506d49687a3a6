"""The VolumeSnapshot aggregate: a snapshot of one volume, quiesced where the pool can."""

from __future__ import annotations

from eventsourcing.domain import event

from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.workflow import VOLUME_SNAPSHOT_WORKFLOW


class VolumeSnapshot(SnapshotAggregate):
    """
    A volume snapshot (CloudStack's createSnapshot with the seed's ``quiescevm``).
    """

    workflow = VOLUME_SNAPSHOT_WORKFLOW

    @event("Requested")
    def __init__(
        self,
        volume_id: str,
        vm_id: str,
        pool_id: str,
        driver: str,
        quiesce_requested: bool,
        hypervisor: str,
        caps: dict[str, bool],
    ) -> None:
        self._init_workflow(vm_id, hypervisor, quiesce_requested)
        self.volume_id = volume_id
        self.pool_id = pool_id
        self.driver = driver
        self.taken: str | None = None

    def start_snapshotting(self) -> None:
        self.check("start_snapshotting")
        self._snapshotting_started()

    @event("SnapshottingStarted")
    def _snapshotting_started(self) -> None:
        self._move("start_snapshotting")

    @event("VolumeSnapshotTaken")
    def record_taken(self, pool_id: str, driver: str, name: str) -> None:
        self.taken = name

    @event("VolumeSnapshotDeleted")
    def record_deleted(self, pool_id: str, driver: str, name: str, compensation: bool) -> None:
        self.taken = None
