"""
What every room of the Controller shares: the wiring, this controller's identity, the
operations it runs, and the steps every operation takes (load, claim, run, catch up).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from uuid import uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from vmsnap.adapters.host_hooks import run_host_hook
from vmsnap.adapters.view_store import ViewStore
from vmsnap.bootstrap import Wiring
from vmsnap.config import Config
from vmsnap.domain.exceptions import (
    NotFound,
    OperationInProgress,
    OperationTakenOver,
    StoreError,
    StoreFailedMidOperation,
)
from vmsnap.domain.ports import StorageDriver
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import VmInfo, VolumeInfo
from vmsnap.domain.vm import Vm
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.vm_snapshot import snapshot_id as parse_id
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.flows import Steps
from vmsnap.service import ledger

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
        self.owner = f"{socket.gethostname()}:{process_id(os.getpid())}:{uuid4().hex[:8]}"
        self.running: set[str] = set()  # snapshot ids of this controller's operations
        # Set by stop(): operations holding a guest frozen thaw it at once (Steps).
        self.stopping = threading.Event()
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

    def volume_info(self, volume_id: str) -> VolumeInfo:
        volume = self.wiring.inventory.volume(volume_id)
        if volume is None:
            raise NotFound(f"volume {volume_id} is no longer in the config")
        return volume

    def driver(self, pool_id: str) -> StorageDriver:
        driver = self.wiring.drivers.get(pool_id)
        if driver is None:
            raise NotFound(f"pool {pool_id} is no longer in the config")
        return driver

    def check_parts(self, snap: SnapshotAggregate) -> VmInfo:
        """
        The snapshot's VM as configured now, once every part the snapshot's next calls
        need (its VM, volumes and pools) is still in the config.

        Raises:
            NotFound: a part is gone from the config (naming it); the snapshot is left as
                it is, and a config that restores the part lets the operation run.
        """
        try:
            vm = self.vm_info(snap.vm_id)
        except NotFound:
            raise NotFound(
                f"VM {snap.vm_id} of snapshot {snap.id} is no longer in the config"
            ) from None
        configured = {v.id for v in vm.volumes}
        if isinstance(snap, VmSnapshot):
            needed = [(vid, g.pool_id) for g in snap.groups for vid in g.volume_ids]
        else:
            assert isinstance(snap, VolumeSnapshot)
            needed = [(snap.volume_id, snap.pool_id)]
        for volume_id, pool_id in needed:
            if volume_id not in configured:
                raise NotFound(
                    f"volume {volume_id} of snapshot {snap.id} is no longer in the config "
                    f"of VM {vm.id}"
                )
            self.driver(pool_id)
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
            OperationInProgress: another controller claimed the VM first, or this one is
                stopping.
        """
        if self.stopping.is_set():
            raise OperationInProgress(f"VM {vm.vm_id}: vmsnap is stopping; try again later")
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

    @contextlib.contextmanager
    def operation(self, sid: str, vm_id: str) -> Iterator[None]:
        """
        Run the claimed operation ``sid``: a store failure from here on is not a refusal
        (events are recorded): it leaves the operation in flight for ``vmsnap recover``.
        An operation that recovery took over records in the orphan ledger what its last
        call may have left, and cleans it up at once if it can claim the VM.
        """
        try:
            yield
        except OperationTakenOver as e:
            with contextlib.suppress(Exception):  # recover finds what was not recorded
                ledger.record_owed(self, vm_id, e.owed, f"answer of a taken-over {sid}")
                ledger.settle(self, vm_id)
            raise
        except StoreFailedMidOperation as e:
            with contextlib.suppress(Exception):  # the store may still be down
                ledger.record_owed(self, vm_id, e.owed, f"answer not recorded for {sid}")
            raise
        except StoreError as e:
            raise StoreFailedMidOperation(
                f"{e}; snapshot {sid} is left in flight: run 'vmsnap recover'", sid
            ) from None
        finally:
            self.done(sid)

    def steps(self, snap: SnapshotAggregate, vm: VmInfo) -> Steps:
        steps = Steps(
            self.wiring.log.save,
            snap,
            vm,
            self.wiring.hypervisor_of(vm),
            self.wiring.drivers,
            self.config.limits.quiesce_deadline_s,
            self.config.limits.max_parallel_driver_calls,
            stopping=self.stopping,
            reload=lambda: self.load(str(snap.id), type(snap)),
        )
        steps.host_hooks = run_host_hook
        return steps

    def done(self, sid: str) -> None:
        self.running.discard(sid)
        # The operation is recorded; views that cannot catch up now do so on the next read.
        with contextlib.suppress(StoreError):
            self.wiring.views.catch_up()


def start_time(pid: int) -> str | None:
    """
    When process ``pid`` of this host started (``/proc/<pid>/stat`` field 22, in clock
    ticks since boot); None where there is no /proc or no such process.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # Field 2 (the command) may hold spaces and parentheses: count from its closing one.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def process_id(pid: int) -> str:
    """``pid@start``: a pid that the system reuses later names another process."""
    start = start_time(pid)
    return f"{pid}@{start}" if start is not None else str(pid)
