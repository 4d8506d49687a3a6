"""
The commands: create, revert and delete VM snapshots and volume snapshots. Each one
validates everything before its first event (invariant 7), claims the VM (invariant 5),
then runs its flow. They answer the snapshot id; the Controller answers its view.
"""

from __future__ import annotations

from datetime import UTC, datetime

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from vmsnap.domain.exceptions import InvalidRequest, NotFound
from vmsnap.domain.pool import Pool
from vmsnap.domain.ports import Hypervisor
from vmsnap.domain.rules import check_text, choose_strategy, default_name, group_by_driver
from vmsnap.domain.values import NO_ORIGIN, RUNNING, Capabilities, Origin, VmInfo, VolumeRef
from vmsnap.domain.vm import (
    CREATE,
    DELETE,
    REVERT,
    VOLUME_SNAPSHOT,
    VOLUME_SNAPSHOT_DELETE,
    Vm,
)
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.domain.workflow import START_DELETE, START_REVERT
from vmsnap.flows import VmSnapshotFlow, VolumeSnapshotFlow
from vmsnap.service.runtime import Claimed, Runtime

POOL_RACE_RETRIES = 5


class Commands:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    # VM snapshots -------------------------------------------------------------------------

    def create_vm_snapshot(
        self,
        vm_id: str,
        *,
        name: str | None,
        description: str | None,
        memory: bool,
        quiesce: bool,
        on_claimed: Claimed | None,
        origin: Origin = NO_ORIGIN,
    ) -> str:
        rt = self.rt
        vm = rt.vm_info(vm_id)
        check_origin(origin)
        check_text("name", name)
        check_text("description", description)
        if memory and vm.power_state != RUNNING:
            raise InvalidRequest(
                f"VM {vm_id} is {vm.power_state}: a memory snapshot needs it Running"
            )
        hv = rt.wiring.hypervisor_of(vm)
        hv.check_vm(vm)
        self._check_agent(hv, vm, quiesce=quiesce)
        caps = self._caps({v.pool_id for v in vm.volumes})
        vm_aggregate = rt.vm_aggregate(vm_id)
        vm_aggregate.check_idle()
        name = self._free_name(vm_aggregate, name)
        strategy = choose_strategy(vm.volumes, caps)
        drivers = {p: rt.wiring.drivers[p].driver for p in caps}
        snap = VmSnapshot(
            vm_id=vm_id,
            name=name,
            description=description,
            memory=memory,
            quiesce_requested=quiesce,
            strategy=strategy.name,
            strategy_reason=strategy.reason,
            hypervisor=hv.name,
            profile=hv.profile,
            volumes=[VolumeRef(v.id, v.pool_id) for v in vm.volumes],
            groups=group_by_driver(vm.volumes, drivers),
            caps={p: c.to_dict() for p, c in sorted(caps.items())},
            parent_id=vm_aggregate.current,
            **origin.fields(),
        )
        vm_aggregate.observe_volumes(vm.volumes)
        vm_aggregate.start(
            CREATE, str(snap.id), rt.owner, name, vm_aggregate.current, origin=origin
        )
        rt.claim(vm_aggregate, snap, on_claimed=on_claimed)
        with rt.operation(str(snap.id), vm.id):
            self._record_pools(caps)
            VmSnapshotFlow(rt.steps(snap, vm), vm_aggregate).create()
        return str(snap.id)

    def revert_vm_snapshot(
        self, snapshot: str, *, on_claimed: Claimed | None, origin: Origin = NO_ORIGIN
    ) -> str:
        snap, vm, vm_aggregate = self._prepare(snapshot, START_REVERT, REVERT, origin)
        snap.start_revert(origin)
        self.rt.claim(vm_aggregate, snap, on_claimed=on_claimed)
        with self.rt.operation(str(snap.id), vm.id):
            VmSnapshotFlow(self.rt.steps(snap, vm), vm_aggregate).revert()
        return str(snap.id)

    def delete_vm_snapshot(
        self, snapshot: str, *, on_claimed: Claimed | None, origin: Origin = NO_ORIGIN
    ) -> str:
        snap, vm, vm_aggregate = self._prepare(snapshot, START_DELETE, DELETE, origin)
        snap.start_delete(origin)
        self.rt.claim(vm_aggregate, snap, on_claimed=on_claimed)
        with self.rt.operation(str(snap.id), vm.id):
            VmSnapshotFlow(self.rt.steps(snap, vm), vm_aggregate).delete()
        return str(snap.id)

    # Volume snapshots ---------------------------------------------------------------------

    def create_volume_snapshot(
        self,
        volume_id: str,
        *,
        quiesce: bool,
        on_claimed: Claimed | None,
        origin: Origin = NO_ORIGIN,
    ) -> str:
        rt = self.rt
        check_origin(origin)
        volume = rt.wiring.inventory.volume(volume_id)
        if volume is None:
            raise NotFound(f"no such volume: {volume_id}")
        vm = rt.vm_info(volume.vm_id)
        driver = rt.wiring.drivers[volume.pool_id]
        caps = driver.capabilities()
        if quiesce and not caps.volume_snapshot_quiescevm:
            raise InvalidRequest(
                f"pool {volume.pool_id} of volume {volume_id} does not advertise "
                "VOLUME_SNAPSHOT_QUIESCEVM: a quiesced volume snapshot is not possible there"
            )
        hv = rt.wiring.hypervisor_of(vm)
        hv.check_vm(vm)
        self._check_agent(hv, vm, quiesce=quiesce)
        vm_aggregate = rt.vm_aggregate(vm.id)
        vm_aggregate.check_idle()
        snap = VolumeSnapshot(
            volume_id=volume_id,
            vm_id=vm.id,
            pool_id=volume.pool_id,
            driver=driver.driver,
            quiesce_requested=quiesce,
            hypervisor=hv.name,
            caps=caps.to_dict(),
            **origin.fields(),
        )
        vm_aggregate.observe_volumes(vm.volumes)
        vm_aggregate.start(VOLUME_SNAPSHOT, str(snap.id), rt.owner, origin=origin)
        rt.claim(vm_aggregate, snap, on_claimed=on_claimed)
        with rt.operation(str(snap.id), vm.id):
            self._record_pools({volume.pool_id: caps})
            VolumeSnapshotFlow(rt.steps(snap, vm), vm_aggregate, driver, volume).create()
        return str(snap.id)

    def delete_volume_snapshot(self, snapshot: str, origin: Origin = NO_ORIGIN) -> str:
        rt = self.rt
        check_origin(origin)
        snap = rt.load(snapshot, VolumeSnapshot)
        vm_aggregate = rt.vm_aggregate(snap.vm_id)
        vm_aggregate.check_idle()
        snap.check(START_DELETE)
        vm = rt.check_parts(snap)  # config drift: refused, naming the missing part
        volume = rt.volume_info(snap.volume_id)
        driver = rt.driver(snap.pool_id)
        vm_aggregate.start(VOLUME_SNAPSHOT_DELETE, snapshot, rt.owner, origin=origin)
        snap.start_delete(origin)
        rt.claim(vm_aggregate, snap)
        with rt.operation(str(snap.id), vm.id):
            VolumeSnapshotFlow(rt.steps(snap, vm), vm_aggregate, driver, volume).delete()
        return str(snap.id)

    # Checks and records before a flow runs ------------------------------------------------

    def _check_agent(self, hv: Hypervisor, vm: VmInfo, *, quiesce: bool) -> None:
        """
        A freeze that cannot happen is refused before anything is recorded, unless the
        config accepts a crash-consistent snapshot (the hypervisor then records why).
        """
        if not quiesce or not self.rt.config.limits.quiesce_requires_agent:
            return
        problem = hv.check_quiesce(vm)
        if problem is not None:
            raise InvalidRequest(
                f"VM {vm.id}: cannot quiesce: {problem} ([limits] quiesce_requires_agent"
                " = true refuses a snapshot that would not be quiesced)"
            )

    def _caps(self, pool_ids: set[str]) -> dict[str, Capabilities]:
        return {p: self.rt.wiring.drivers[p].capabilities() for p in pool_ids}

    def _free_name(self, vm_aggregate: Vm, name: str | None) -> str:
        """
        The snapshot's name: the one given (unique per VM), else CloudStack's default.

        Raises:
            InvalidRequest: the name is taken, or the VM has as many snapshots as allowed.
        """
        vm_id = vm_aggregate.vm_id
        if name is None:
            name = _free_default_name(vm_aggregate)
        elif vm_aggregate.name_taken(name):
            raise InvalidRequest(f"VM {vm_id} already has a snapshot named {name!r}")
        limit = self.rt.config.limits.max_vm_snapshots_per_vm
        if len(vm_aggregate.live) >= limit:
            raise InvalidRequest(
                f"VM {vm_id} has {len(vm_aggregate.live)} snapshots; the limit is {limit} "
                "(delete one first)"
            )
        return name

    def _prepare(
        self, snapshot: str, trigger: str, operation: str, origin: Origin
    ) -> tuple[VmSnapshot, VmInfo, Vm]:
        rt = self.rt
        check_origin(origin)
        snap = rt.load(snapshot, VmSnapshot)
        vm_aggregate = rt.vm_aggregate(snap.vm_id)
        vm_aggregate.check_idle()  # busy VM first: a snapshot still being created is a conflict
        snap.check(trigger)
        vm = rt.check_parts(snap)  # config drift: refused, naming the missing part
        hv = rt.wiring.hypervisor_of(vm)
        hv.check_vm(vm)
        if operation == REVERT:
            hv.check_revert(vm, memory=snap.memory)
        vm_aggregate.start(operation, str(snap.id), rt.owner, origin=origin)
        return snap, vm, vm_aggregate

    def _record_pools(self, caps: dict[str, Capabilities]) -> None:
        """
        Record what the pools advertised when first seen or when it changed. Pools are
        shared by every VM, so two controllers may race here: the loser reloads and
        observes again (the snapshot's own Requested event already holds the caps used).
        """
        log = self.rt.wiring.log
        for pool_id, c in sorted(caps.items()):
            info = self.rt.wiring.inventory.pool(pool_id)
            assert info is not None
            for _ in range(POOL_RACE_RETRIES):
                try:
                    pool: Aggregate = log.repository.get(Pool.create_id(pool_id))
                    assert isinstance(pool, Pool)
                    pool.observe(info.name, info.driver, c)
                except AggregateNotFoundError:
                    pool = Pool(pool_id, info.name, info.driver, c)
                if not pool.pending_events:
                    break  # nothing changed: an empty save would still commit (ADR 0015)
                try:
                    log.save(pool)
                    break
                except IntegrityError:
                    continue


def check_origin(origin: Origin) -> None:
    """
    Refuse an actor, reason or correlation id that is too long (before anything is
    recorded).
    """
    for field, value in origin.fields().items():
        check_text(field, value)


def _free_default_name(vm_aggregate: Vm) -> str:
    name = default_name(vm_aggregate.vm_id, datetime.now(UTC))
    candidate, n = name, 1
    # Two snapshots in the same second would share CloudStack's default name.
    while vm_aggregate.name_taken(candidate):
        n += 1
        candidate = f"{name}_{n}"
    return candidate
