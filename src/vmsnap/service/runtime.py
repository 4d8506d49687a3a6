"""
What every room of the Controller shares: the wiring, this controller's identity, the
operations it runs, and the steps every operation takes (load, claim, run, catch up).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from typing import TypeVar
from uuid import uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from vmsnap.adapters.view_store import ViewStore
from vmsnap.bootstrap import Wiring
from vmsnap.config import Config
from vmsnap.domain.exceptions import NotFound, OperationInProgress, StoreError
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import VmInfo
from vmsnap.domain.vm import Vm
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.vm_snapshot import snapshot_id as parse_id
from vmsnap.flows import Steps

A = TypeVar("A", bound=Aggregate)
Claimed = Callable[[str], None]

# The owners of this process's open Controllers: an operation claimed by a closed one (a
# restart within the process) is as dead as one whose process is gone.
OPEN_OWNERS: set[str] = set()


class Runtime:
    def __init__(self, config: Config, wiring: Wiring) -> None:
        self.config = config
        self.wiring = wiring
        # host:pid:token; recovery leaves alone the operations of controllers that still run.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"
        self.running: set[str] = set()  # snapshot ids of this controller's operations
        OPEN_OWNERS.add(self.owner)

    def close(self) -> None:
        OPEN_OWNERS.discard(self.owner)
        self.wiring.close()

    # Lookups ----------------------------------------------------------------------------

    def vm_info(self, vm_id: str) -> VmInfo:
        vm = self.wiring.inventory.vm(vm_id)
        if vm is None:
            raise NotFound(f"no such VM: {vm_id}")
        return vm

    def vm_aggregate(self, vm_id: str) -> Vm:
        try:
            vm: Aggregate = self.wiring.log.repository.get(Vm.create_id(vm_id))
        except AggregateNotFoundError:
            return Vm(vm_id)
        assert isinstance(vm, Vm)
        return vm

    def load(self, snapshot: str, kind: type[A]) -> A:
        """
        Raises:
            NotFound: no snapshot of that kind has the id ``snapshot``.
        """
        try:
            agg: Aggregate | None = self.wiring.log.repository.get(parse_id(snapshot))
        except AggregateNotFoundError:
            agg = None
        if not isinstance(agg, kind):
            label = "VM snapshot" if kind is VmSnapshot else "volume snapshot"
            raise NotFound(f"no such {label}: {snapshot}")
        return agg

    def views_current(self) -> ViewStore:
        """The views, caught up with every event any controller recorded."""
        views = self.wiring.views
        if views.position() < self.wiring.log.max_position():
            views.catch_up()
        return views

    # Operations ---------------------------------------------------------------------------

    def claim(self, vm: Vm, *aggregates: Aggregate, on_claimed: Claimed | None = None) -> None:
        """
        Save the VM's claim with the first events of the operation, atomically: if another
        controller claimed the VM meanwhile, the store refuses the write.

        Raises:
            OperationInProgress: another controller claimed the VM first.
        """
        try:
            self.wiring.log.save(vm, *aggregates)
            if vm.in_flight is not None:
                self.running.add(vm.in_flight)
        except IntegrityError:
            raise OperationInProgress(f"VM {vm.vm_id} has another operation in progress") from None
        if on_claimed is not None and vm.in_flight is not None:
            # A failing callback must not leave the VM claimed with no flow running.
            with contextlib.suppress(Exception):
                on_claimed(vm.in_flight)

    def steps(self, snap: SnapshotAggregate, vm: VmInfo) -> Steps:
        return Steps(
            self.wiring.log.save,
            snap,
            vm,
            self.wiring.hypervisor_of(vm),
            self.wiring.drivers,
            self.config.limits.quiesce_deadline_s,
        )

    def done(self, sid: str) -> None:
        self.running.discard(sid)
        # The operation is recorded; views that cannot catch up now do so on the next read.
        with contextlib.suppress(StoreError):
            self.wiring.views.catch_up()
