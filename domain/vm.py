"""
The Vm aggregate: the per-VM serialisation point and the VM's snapshot tree.

Starting an operation appends to this aggregate, so two controllers that start one on
the same VM race on the event store's optimistic concurrency and exactly one wins.
Its state stays bounded: only snapshots that are not removed are kept, and their number
is capped by ``max_vm_snapshots_per_vm``. Every event names its VM, for auditors.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from vmsnap.domain.exceptions import OperationInProgress
from vmsnap.domain.values import NO_ORIGIN, Origin, Owed, VolumeInfo

NAMESPACE = uuid5(NAMESPACE_URL, "https://vmsnap.invalid/")

# The operations a VM is claimed for (``Vm.OperationStarted.operation``).
CREATE = "create"
REVERT = "revert"
DELETE = "delete"
VOLUME_SNAPSHOT = "volume-snapshot"
VOLUME_SNAPSHOT_DELETE = "volume-snapshot-delete"
THAW = "thaw"
SETTLE = "settle"  # cleaning up what the orphan ledger owes


class Vm(Aggregate):
    @staticmethod
    def create_id(vm_id: str) -> UUID:
        return uuid5(NAMESPACE, f"vm:{vm_id}")

    class Registered(Aggregate.Created):
        """vmsnap saw the VM for the first time."""

        vm_id: str

    @event(Registered)
    def __init__(self, vm_id: str) -> None:
        self.vm_id = vm_id
        self.in_flight: str | None = None
        self.operation: str | None = None
        self.owner: str | None = None
        self.claimed_at: datetime | None = None
        self.current: str | None = None
        self.volumes: tuple[VolumeInfo, ...] = ()
        # snapshot id -> [name, parent id] for every VM snapshot that is not removed.
        self.live: dict[str, list[str | None]] = {}
        # The orphan ledger: what backends may hold that nothing else records (ADR 0020).
        self.owed: dict[str, Owed] = {}

    def name_taken(self, name: str) -> bool:
        return any(entry[0] == name for entry in self.live.values())

    def observe_volumes(self, volumes: Sequence[VolumeInfo]) -> None:
        """
        Record the VM's volumes (and their pools) when they differ from the last record.
        """
        if tuple(volumes) != self.volumes:
            self.trigger_event(Vm.VolumesObserved, vm_id=self.vm_id, volumes=tuple(volumes))

    class VolumesObserved(Aggregate.Event):
        """The VM's volumes (and their pools) as the inventory listed them."""

        vm_id: str
        volumes: Sequence[VolumeInfo]

        def apply(self, vm: Any) -> None:
            vm.volumes = tuple(self.volumes)

    def start(
        self,
        operation: str,
        snapshot_id: str,
        owner: str,
        name: str | None = None,
        parent_id: str | None = None,
        *,
        origin: Origin = NO_ORIGIN,
    ) -> None:
        """
        Claim the VM for one operation run by ``owner`` (host:pid of the controller), asked
        for by ``origin`` (who, why, which request).

        Raises:
            OperationInProgress: another operation holds the VM.
        """
        self.check_idle()
        self.trigger_event(
            Vm.OperationStarted,
            vm_id=self.vm_id,
            operation=operation,
            snapshot_id=snapshot_id,
            owner=owner,
            name=name,
            parent_id=parent_id,
            **origin.fields(),
        )

    def check_idle(self) -> None:
        if self.in_flight is not None:
            raise OperationInProgress(
                f"VM {self.vm_id} has a {self.operation} in progress (snapshot {self.in_flight})"
            )

    class OperationStarted(Aggregate.Event):
        """A controller (``owner``) claimed the VM for one operation on one snapshot."""

        vm_id: str
        operation: str
        snapshot_id: str
        owner: str
        name: str | None
        parent_id: str | None
        # Who, why, which request (absent from events recorded before they existed).
        actor: str | None = None
        reason: str | None = None
        correlation_id: str | None = None

        def apply(self, vm: Any) -> None:
            vm.in_flight = self.snapshot_id
            vm.operation = self.operation
            vm.owner = self.owner
            vm.claimed_at = self.timestamp
            if self.operation == CREATE:
                vm.live[self.snapshot_id] = [self.name, self.parent_id]

    def take_over(self, owner: str) -> None:
        """
        Recovery claims the operation in flight from its controller, which stopped: saved
        with the record's version, so exactly one of several recovers wins, and the
        stopped controller, should it still run, loses its next write (invariant 9).
        """
        assert self.in_flight is not None
        self.trigger_event(
            Vm.RecoveryClaimed,
            vm_id=self.vm_id,
            snapshot_id=self.in_flight,
            operation=self.operation or "",
            owner=owner,
            previous_owner=self.owner or "",
        )

    class RecoveryClaimed(Aggregate.Event):
        """
        Recovery (``owner``) took over the operation in flight from ``previous_owner``,
        a controller it judged stopped, before any call of its own.
        """

        vm_id: str
        snapshot_id: str
        operation: str
        owner: str
        previous_owner: str

        def apply(self, vm: Any) -> None:
            vm.owner = self.owner
            vm.claimed_at = self.timestamp

    def end(self, snapshot_id: str, outcome: str) -> None:
        self.trigger_event(
            Vm.OperationEnded,
            vm_id=self.vm_id,
            snapshot_id=snapshot_id,
            operation=self.operation or "",
            outcome=outcome,
        )

    class OperationEnded(Aggregate.Event):
        """The operation ended (``outcome``): the VM is free again."""

        vm_id: str
        snapshot_id: str
        operation: str
        outcome: str

        def apply(self, vm: Any) -> None:
            vm.in_flight = None
            vm.operation = None

    def set_current(self, snapshot_id: str | None) -> None:
        if snapshot_id != self.current:
            self.trigger_event(
                Vm.CurrentSnapshotChanged,
                vm_id=self.vm_id,
                snapshot_id=snapshot_id,
                previous=self.current,
            )

    class CurrentSnapshotChanged(Aggregate.Event):
        vm_id: str
        snapshot_id: str | None
        previous: str | None

        def apply(self, vm: Any) -> None:
            vm.current = self.snapshot_id

    def forget(self, snapshot_id: str) -> None:
        """
        Take a removed snapshot out of the tree: its children move to its parent, and
        if it was current its parent becomes current (as CloudStack does).
        """
        entry = self.live.get(snapshot_id)
        parent = entry[1] if entry else None
        children = sorted(sid for sid, (_, p) in self.live.items() if p == snapshot_id)
        self.trigger_event(
            Vm.SnapshotForgotten,
            vm_id=self.vm_id,
            snapshot_id=snapshot_id,
            children=children,
            new_parent=parent,
        )
        if self.current == snapshot_id:
            self.set_current(parent)

    class SnapshotForgotten(Aggregate.Event):
        """A removed snapshot left the tree; its children moved to ``new_parent``."""

        vm_id: str
        snapshot_id: str
        children: Sequence[str]
        new_parent: str | None

        def apply(self, vm: Any) -> None:
            vm.live.pop(self.snapshot_id, None)
            for child in self.children:
                if child in vm.live:
                    vm.live[child][1] = self.new_parent

    # The orphan ledger (ADR 0020) -------------------------------------------------------

    def owed_now(self) -> dict[str, Owed]:
        return dict(getattr(self, "owed", {}))  # records older than the ledger have none

    def owe(self, owed: Owed, reason: str) -> None:
        """Record that a backend may hold ``owed`` with nothing else recording it."""
        if owed.key not in self.owed_now():
            self.trigger_event(Vm.OrphanOwed, vm_id=self.vm_id, owed=owed, reason=reason)

    class OrphanOwed(Aggregate.Event):
        """
        A backend may hold ``owed`` (a call sent with no recorded answer, or a failed
        cleanup): ``recover`` retries its cleanup until an answer proves it gone.
        """

        vm_id: str
        owed: Owed
        reason: str

        def apply(self, vm: Any) -> None:
            vm.owed = {**vm.owed_now(), self.owed.key: self.owed}

    def settle(self, key: str, outcome: str) -> None:
        self.trigger_event(Vm.OrphanSettled, vm_id=self.vm_id, key=key, outcome=outcome)

    class OrphanSettled(Aggregate.Event):
        """The backend answered the cleanup of an owed object: it is gone (``outcome``)."""

        vm_id: str
        key: str
        outcome: str

        def apply(self, vm: Any) -> None:
            vm.owed = {k: v for k, v in vm.owed_now().items() if k != self.key}

    def cleanup_failed(self, key: str, error: str) -> None:
        self.trigger_event(Vm.OrphanCleanupFailed, vm_id=self.vm_id, key=key, error=error)

    class OrphanCleanupFailed(Aggregate.Event):
        """The cleanup of an owed object failed; it stays owed."""

        vm_id: str
        key: str
        error: str
