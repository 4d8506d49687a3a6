"""
The Vm aggregate: the per-VM serialisation point and the VM's snapshot tree.

Starting an operation appends to this aggregate, so two controllers that start one on
the same VM race on the event store's optimistic concurrency and exactly one wins.
Its state stays bounded: only snapshots that are not removed are kept, and their number
is capped by ``max_vm_snapshots_per_vm``. Every event names its VM, for auditors.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from vmsnap.domain.exceptions import OperationInProgress
from vmsnap.domain.values import VolumeInfo

NAMESPACE = uuid5(NAMESPACE_URL, "https://vmsnap.invalid/")


class Vm(Aggregate):
    @staticmethod
    def create_id(vm_id: str) -> UUID:
        return uuid5(NAMESPACE, f"vm:{vm_id}")

    @event("Registered")
    def __init__(self, vm_id: str) -> None:
        self.vm_id = vm_id
        self.in_flight: str | None = None
        self.operation: str | None = None
        self.owner: str | None = None
        self.current: str | None = None
        self.volumes: tuple[VolumeInfo, ...] = ()
        # snapshot id -> [name, parent id] for every VM snapshot that is not removed.
        self.live: dict[str, list[str | None]] = {}

    def name_taken(self, name: str) -> bool:
        return any(entry[0] == name for entry in self.live.values())

    def observe_volumes(self, volumes: Sequence[VolumeInfo]) -> None:
        """
        Record the VM's volumes (and their pools) when they differ from the last record.
        """
        if tuple(volumes) != self.volumes:
            self._volumes_observed(self.vm_id, tuple(volumes))

    @event("VolumesObserved")
    def _volumes_observed(self, vm_id: str, volumes: Sequence[VolumeInfo]) -> None:
        self.volumes = tuple(volumes)

    def start(
        self,
        operation: str,
        snapshot_id: str,
        owner: str,
        name: str | None = None,
        parent_id: str | None = None,
    ) -> None:
        """
        Claim the VM for one operation run by ``owner`` (host:pid of the controller).

        Raises:
            OperationInProgress: another operation holds the VM.
        """
        self.check_idle()
        self._started(self.vm_id, operation, snapshot_id, owner, name, parent_id)

    def check_idle(self) -> None:
        if self.in_flight is not None:
            raise OperationInProgress(
                f"VM {self.vm_id} has a {self.operation} in progress (snapshot {self.in_flight})"
            )

    @event("OperationStarted")
    def _started(
        self,
        vm_id: str,
        operation: str,
        snapshot_id: str,
        owner: str,
        name: str | None,
        parent_id: str | None,
    ) -> None:
        self.in_flight = snapshot_id
        self.operation = operation
        self.owner = owner
        if operation == "create":
            self.live[snapshot_id] = [name, parent_id]

    def end(self, snapshot_id: str, outcome: str) -> None:
        self._ended(self.vm_id, snapshot_id, self.operation or "", outcome)

    @event("OperationEnded")
    def _ended(self, vm_id: str, snapshot_id: str, operation: str, outcome: str) -> None:
        self.in_flight = None
        self.operation = None

    def set_current(self, snapshot_id: str | None) -> None:
        if snapshot_id != self.current:
            self._current_changed(self.vm_id, snapshot_id, self.current)

    @event("CurrentSnapshotChanged")
    def _current_changed(self, vm_id: str, snapshot_id: str | None, previous: str | None) -> None:
        self.current = snapshot_id

    def forget(self, snapshot_id: str) -> None:
        """
        Take a removed snapshot out of the tree: its children move to its parent, and
        if it was current its parent becomes current (as CloudStack does).
        """
        entry = self.live.get(snapshot_id)
        parent = entry[1] if entry else None
        children = sorted(sid for sid, (_, p) in self.live.items() if p == snapshot_id)
        self._forgotten(self.vm_id, snapshot_id, children, parent)
        if self.current == snapshot_id:
            self.set_current(parent)

    @event("SnapshotForgotten")
    def _forgotten(
        self, vm_id: str, snapshot_id: str, children: Sequence[str], new_parent: str | None
    ) -> None:
        self.live.pop(snapshot_id, None)
        for child in children:
            if child in self.live:
                self.live[child][1] = new_parent
