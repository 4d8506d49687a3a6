"""
The application service: validates requests, claims the VM, runs the workflow through
the adapters and answers from the views. The public face for an embedding controller.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, PersistenceError

from vmsnap import config as config_module
from vmsnap.adapters.at_rest import CIPHER_KEY_ENV, at_rest_env, check_readable
from vmsnap.adapters.store import EventLog, StoreUrl, open_log
from vmsnap.adapters.views import ViewStore, open_views
from vmsnap.audit import Audit, Point, parse_point
from vmsnap.bootstrap import Wiring, wire
from vmsnap.config import Config
from vmsnap.domain.exceptions import (
    ConfigError,
    InvalidRequest,
    NotFound,
    OperationInProgress,
    StoreError,
)
from vmsnap.domain.pool import Pool
from vmsnap.domain.ports import Hypervisor
from vmsnap.domain.rules import check_text, choose_strategy, default_name, group_by_driver
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import Capabilities, VmInfo, VolumeRef
from vmsnap.domain.vm import Vm
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.vm_snapshot import snapshot_id as parse_id
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.projections.projector import project
from vmsnap.views import (
    EventView,
    PoolView,
    VerifyReport,
    VmSnapshotView,
    VmView,
    VolumeInSnapshot,
    VolumeSnapshotView,
    VolumeView,
)
from vmsnap.workflows import StepFailed, Steps, VmSnapshotFlow, VolumeSnapshotFlow

A = TypeVar("A", bound=Aggregate)
Claimed = Callable[[str], None]

# The owners of this process's open Controllers: an operation claimed by a closed one (a
# restart within the process) is as dead as one whose process is gone.
_OPEN_OWNERS: set[str] = set()


class Controller:
    """
    vmsnap for a controller process: create, list, revert and delete VM snapshots and
    volume snapshots, read pool capabilities, recover and audit.

    Safe to share between threads; several controllers (processes) may share one store.
    """

    def __init__(
        self,
        config: Config,
        store_url: str | None = None,
        *,
        recover: bool = False,
        migrate: bool = False,
        cipher_key: str | None = None,
    ):
        url = (
            StoreUrl.parse(store_url, Path.cwd())
            if store_url
            else StoreUrl.parse(config.store_url, config.folder)
        )
        self.config = config
        # host:pid:token; recovery leaves alone the operations of controllers that still run.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"
        self._running: set[str] = set()
        self._wiring: Wiring = wire(config)
        try:
            # The key of [store] cipher: given by an embedding caller, else the environment.
            environ = os.environ if cipher_key is None else {CIPHER_KEY_ENV: cipher_key}
            at_rest = at_rest_env(config.store_cipher, config.store_compress, environ)
        except ConfigError:
            self._wiring.close()
            raise
        # migrate: create or upgrade the store's schema (PostgreSQL stores need it once).
        self._log: EventLog = open_log(url, at_rest, migrate=migrate)
        try:
            check_readable(self._log)
            self._views: ViewStore = open_views(self._log, project, migrate=migrate)
        except PersistenceError as e:
            self._log.close()
            self._wiring.close()
            raise StoreError(f"cannot open store: {e}") from None
        except StoreError:
            self._log.close()
            self._wiring.close()
            raise
        self._audit = Audit(self._log)
        _OPEN_OWNERS.add(self.owner)
        if recover:
            self.recover()

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str],
        store_url: str | None = None,
        *,
        recover: bool = False,
        migrate: bool = False,
        cipher_key: str | None = None,
    ) -> Controller:
        """
        Open vmsnap as the config file at ``path`` says; ``store_url`` overrides its store.
        ``migrate`` creates or upgrades the store's schema first (needed once on PostgreSQL);
        ``cipher_key`` is the key of ``[store] cipher`` (default: ``$VMSNAP_CIPHER_KEY``).
        """
        return cls(
            config_module.load(Path(path)),
            store_url,
            recover=recover,
            migrate=migrate,
            cipher_key=cipher_key,
        )

    @property
    def event_log(self) -> EventLog:
        """
        The event log, for services beside the Controller that record their own
        aggregates in the same log (the HTTP API's jobs and refusals).
        """
        return self._log

    def close(self) -> None:
        _OPEN_OWNERS.discard(self.owner)
        self._wiring.close()
        self._log.close()

    def __enter__(self) -> Controller:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # VM snapshots -----------------------------------------------------------------

    def create_vm_snapshot(
        self,
        vm_id: str,
        name: str | None = None,
        description: str | None = None,
        memory: bool = False,
        quiesce: bool = False,
        *,
        on_claimed: Claimed | None = None,
    ) -> VmSnapshotView:
        """
        Take a VM snapshot with the strategy the factory chooses. Returns the snapshot;
        ``state == "failed"`` (with ``error``) when it ran and failed. ``on_claimed``
        (here and in the other operations) is called with the snapshot id once the VM
        is claimed, before any hypervisor or driver call.

        Raises:
            InvalidRequest: refused before anything was recorded.
            OperationInProgress: another operation on the VM is in flight.
        """
        vm = self._vm(vm_id)
        check_text("name", name)
        check_text("description", description)
        if memory and vm.power_state != "Running":
            raise InvalidRequest(
                f"VM {vm_id} is {vm.power_state}: a memory snapshot needs it Running"
            )
        hv = self._wiring.hypervisor_of(vm)
        hv.check_vm(vm)
        self._check_agent(hv, vm, quiesce)
        caps = {p: self._wiring.drivers[p].capabilities() for p in {v.pool_id for v in vm.volumes}}
        record = self._vm_record(vm_id)
        record.check_idle()
        if name is None:
            name = _free_default_name(record, vm_id)
        elif record.name_taken(name):
            raise InvalidRequest(f"VM {vm_id} already has a snapshot named {name!r}")
        limit = self.config.limits.max_vm_snapshots_per_vm
        if len(record.live) >= limit:
            raise InvalidRequest(
                f"VM {vm_id} has {len(record.live)} snapshots; the limit is {limit} "
                "(delete one first)"
            )
        strategy = choose_strategy(vm.volumes, caps)
        drivers = {p: self._wiring.drivers[p].driver for p in caps}
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
            parent_id=record.current,
        )
        record.observe_volumes(vm.volumes)
        record.start("create", str(snap.id), self.owner, name, record.current)
        self._claim(record, snap, on_claimed=on_claimed)
        try:
            self._record_pools(caps)
            VmSnapshotFlow(self._steps(snap, vm), record).create()
        finally:
            self._done(str(snap.id))
        return self.get_vm_snapshot(str(snap.id))

    def revert_vm_snapshot(
        self, snapshot: str, *, on_claimed: Claimed | None = None
    ) -> VmSnapshotView:
        """
        Revert the VM to a ``ready`` snapshot. A failed revert returns the snapshot to
        ``ready`` with ``error`` set.
        """
        snap, vm, record = self._prepare(snapshot, "start_revert", "revert")
        snap.start_revert()
        self._claim(record, snap, on_claimed=on_claimed)
        try:
            VmSnapshotFlow(self._steps(snap, vm), record).revert()
        finally:
            self._done(str(snap.id))
        return self.get_vm_snapshot(snapshot)

    def delete_vm_snapshot(
        self, snapshot: str, *, on_claimed: Claimed | None = None
    ) -> VmSnapshotView:
        """
        Delete a ``ready`` or ``failed`` snapshot; a failed delete ends ``failed`` and may
        be retried.
        """
        snap, vm, record = self._prepare(snapshot, "start_delete", "delete")
        snap.start_delete()
        self._claim(record, snap, on_claimed=on_claimed)
        try:
            VmSnapshotFlow(self._steps(snap, vm), record).delete()
        finally:
            self._done(str(snap.id))
        return self.get_vm_snapshot(snapshot)

    def get_vm_snapshot(self, snapshot: str) -> VmSnapshotView:
        doc = self._views_current().get("vm_snapshots", str(parse_id(snapshot)))
        if doc is None:
            raise NotFound(f"no such VM snapshot: {snapshot}")
        return _vm_snapshot_view(doc)

    def list_vm_snapshots(
        self, vm_id: str | None = None, state: str | None = None, include_removed: bool = False
    ) -> list[VmSnapshotView]:
        where = {k: v for k, v in (("vm_id", vm_id), ("state", state)) if v is not None}
        exclude = None if include_removed or state == "removed" else "removed"
        docs = self._views_current().select("vm_snapshots", where, exclude)
        return [_vm_snapshot_view(d) for d in docs]

    # Volume snapshots -------------------------------------------------------------

    def create_volume_snapshot(
        self, volume_id: str, quiesce: bool = False, *, on_claimed: Claimed | None = None
    ) -> VolumeSnapshotView:
        """
        Snapshot one volume; ``quiesce`` only where its pool advertises
        VOLUME_SNAPSHOT_QUIESCEVM.
        """
        volume = self._wiring.inventory.volume(volume_id)
        if volume is None:
            raise NotFound(f"no such volume: {volume_id}")
        vm = self._vm(volume.vm_id)
        driver = self._wiring.drivers[volume.pool_id]
        caps = driver.capabilities()
        if quiesce and not caps.volume_snapshot_quiescevm:
            raise InvalidRequest(
                f"pool {volume.pool_id} of volume {volume_id} does not advertise "
                "VOLUME_SNAPSHOT_QUIESCEVM: a quiesced volume snapshot is not possible there"
            )
        hv = self._wiring.hypervisor_of(vm)
        hv.check_vm(vm)
        self._check_agent(hv, vm, quiesce)
        record = self._vm_record(vm.id)
        record.check_idle()
        snap = VolumeSnapshot(
            volume_id=volume_id,
            vm_id=vm.id,
            pool_id=volume.pool_id,
            driver=driver.driver,
            quiesce_requested=quiesce,
            hypervisor=hv.name,
            caps=caps.to_dict(),
        )
        record.observe_volumes(vm.volumes)
        record.start("volume-snapshot", str(snap.id), self.owner)
        self._claim(record, snap, on_claimed=on_claimed)
        try:
            self._record_pools({volume.pool_id: caps})
            VolumeSnapshotFlow(self._steps(snap, vm), record, driver, volume).create()
        finally:
            self._done(str(snap.id))
        return self.get_volume_snapshot(str(snap.id))

    def delete_volume_snapshot(self, snapshot: str) -> VolumeSnapshotView:
        snap = self._load(snapshot, VolumeSnapshot)
        vm = self._vm(snap.vm_id)
        record = self._vm_record(vm.id)
        record.check_idle()
        snap.check("start_delete")
        volume = self._wiring.inventory.volume(snap.volume_id)
        if volume is None:
            raise InvalidRequest(f"volume {snap.volume_id} is no longer in the inventory")
        record.start("volume-snapshot-delete", snapshot, self.owner)
        snap.start_delete()
        self._claim(record, snap)
        driver = self._wiring.drivers[volume.pool_id]
        try:
            VolumeSnapshotFlow(self._steps(snap, vm), record, driver, volume).delete()
        finally:
            self._done(str(snap.id))
        return self.get_volume_snapshot(snapshot)

    def get_volume_snapshot(self, snapshot: str) -> VolumeSnapshotView:
        doc = self._views_current().get("volume_snapshots", str(parse_id(snapshot)))
        if doc is None:
            raise NotFound(f"no such volume snapshot: {snapshot}")
        return VolumeSnapshotView(**doc)

    def list_volume_snapshots(self, volume_id: str | None = None) -> list[VolumeSnapshotView]:
        where = {} if volume_id is None else {"volume_id": volume_id}
        docs = self._views_current().select("volume_snapshots", where)
        return [VolumeSnapshotView(**d) for d in docs]

    # Pools and volumes --------------------------------------------------------------

    def list_pools(self) -> list[PoolView]:
        """
        The pools with what their drivers advertise now (``caps``).
        """
        return [
            PoolView(p.id, p.name, p.driver, self._wiring.drivers[p.id].capabilities().to_dict())
            for p in self._wiring.inventory.pools()
        ]

    def list_volumes(self, vm_id: str | None = None) -> list[VolumeView]:
        vms = [self._vm(vm_id)] if vm_id is not None else list(self._wiring.inventory.vms())
        views = []
        for vm in vms:
            for v in vm.volumes:
                caps = self._wiring.drivers[v.pool_id].capabilities()
                views.append(
                    VolumeView(
                        v.id,
                        v.vm_id,
                        v.pool_id,
                        v.type,
                        caps.volume_snapshot_quiescevm,
                        caps.storage_system_snapshot,
                    )
                )
        return views

    def list_vms(self, frozen: bool = False) -> list[VmView]:
        """
        The VMs with their operation in flight and whether they are believed frozen
        (``frozen=True``: only those).
        """
        views = self._views_current()
        result = []
        for vm in self._wiring.inventory.vms():
            doc = views.get("vms", vm.id) or {}
            view = VmView(
                vm.id,
                vm.hypervisor,
                vm.power_state,
                doc.get("in_flight"),
                doc.get("operation"),
                doc.get("current"),
                bool(doc.get("frozen")),
                doc.get("frozen_by"),
                doc.get("frozen_since"),
                doc.get("alert"),
                doc.get("in_flight_since"),
            )
            if view.frozen or not frozen:
                result.append(view)
        return result

    # Store, recovery and audit -------------------------------------------------------

    def migrate(self) -> int:
        """
        Create or upgrade the store's schema and rebuild the views from the log (their
        shape may have changed with this version); return the number of the last event.
        """
        return self._views.rebuild()

    def recover(self) -> list[VmSnapshotView | VolumeSnapshotView]:
        """
        Finish or compensate every operation left in flight by a controller that died;
        return the snapshots it touched. Running it twice is harmless.
        """
        done: list[VmSnapshotView | VolumeSnapshotView] = []
        for vm_doc in self._views_current().select("vms", {}):
            sid = vm_doc.get("in_flight")
            since = vm_doc.get("in_flight_since")
            if sid is not None and not self._owner_alive(vm_doc.get("owner"), sid, since):
                done.append(self._recover_vm(vm_doc["vm_id"]))
            elif sid is None and vm_doc.get("frozen") and vm_doc.get("frozen_by"):
                done.append(self._thaw_again(vm_doc["vm_id"], vm_doc["frozen_by"]))
        return done

    def _thaw_again(self, vm_id: str, sid: str) -> VmSnapshotView | VolumeSnapshotView:
        """
        Thaw a VM whose thaw failed earlier, recorded on the snapshot that froze it.
        """
        record = self._vm_record(vm_id)
        record.start("thaw", sid, self.owner)
        agg: Aggregate = self._log.repository.get(UUID(sid))
        assert isinstance(agg, SnapshotAggregate)
        self._claim(record, agg)
        steps = self._steps(agg, self._vm(vm_id))
        try:
            with contextlib.suppress(StepFailed):
                steps.unquiesce(agg.ref, True, None, "recovery")
        finally:
            record.end(sid, "thawed" if not agg.frozen else "still frozen")
            steps.save(record)
            self._done(sid)
        return self._view_of(agg)

    def _view_of(self, agg: SnapshotAggregate) -> VmSnapshotView | VolumeSnapshotView:
        if isinstance(agg, VmSnapshot):
            return self.get_vm_snapshot(str(agg.id))
        return self.get_volume_snapshot(str(agg.id))

    def audit_timeline(
        self, snapshot_id: str | None = None, vm_id: str | None = None
    ) -> list[EventView]:
        """
        The events of one snapshot, or of every snapshot of a VM, in log order.
        """
        if (snapshot_id is None) == (vm_id is None):
            raise InvalidRequest("give a snapshot id or a VM id")
        views = self._views_current()
        if snapshot_id is not None:
            sid = str(parse_id(snapshot_id))
            if (
                views.get("vm_snapshots", sid) is None
                and views.get("volume_snapshots", sid) is None
            ):
                raise NotFound(f"no such snapshot: {snapshot_id}")
            ids = [sid]
        else:
            assert vm_id is not None
            self._vm(vm_id)
            ids = [d["id"] for d in views.select("vm_snapshots", {"vm_id": vm_id})]
            ids += [
                d["id"]
                for vol in self._wiring.inventory.vm(vm_id).volumes  # type: ignore[union-attr]
                for d in views.select("volume_snapshots", {"volume_id": vol.id})
            ]
        return self._audit.timeline([UUID(i) for i in ids])

    def audit_export(self) -> Iterator[EventView]:
        """
        Every stored event in log order, read in pages.
        """
        return self._audit.export()

    def audit_verify(self, expect_head: str | None = None) -> VerifyReport:
        """
        Replay the whole log in pages: legal transitions, the AND rule, a thaw after every
        freeze, views equal to a rebuild, and the chain of seals intact (ADR 0011, 0012).
        ``expect_head``: ``POSITION:HASH``, a ``chain_head`` an earlier verify gave and
        that was kept elsewhere: the chain must still pass through it.

        Raises:
            InvalidRequest: ``expect_head`` is not ``POSITION:HASH``.
        """
        kept = None if expect_head is None else _parse_head(expect_head)
        self._views.catch_up()
        return self._audit.verify(kept)

    def audit_state(self, snapshot_id: str, at: str | Point) -> VmSnapshotView | VolumeSnapshotView:
        """
        The snapshot as it was at ``at``: a log position, or an instant (a datetime or
        an ISO-8601 string; UTC when it names no zone).

        Raises:
            NotFound: no such snapshot, or it did not exist yet at ``at``.
            InvalidRequest: ``at`` is neither a position nor a timestamp.
        """
        point = parse_point(at) if isinstance(at, str) else at
        if isinstance(point, datetime) and point.tzinfo is None:
            point = point.replace(tzinfo=UTC)
        table, doc = self._audit.state_at(parse_id(snapshot_id), point)
        if table == "vm_snapshots":
            return _vm_snapshot_view(doc)
        return VolumeSnapshotView(**doc)

    # Internals -----------------------------------------------------------------------

    def _vm(self, vm_id: str) -> VmInfo:
        vm = self._wiring.inventory.vm(vm_id)
        if vm is None:
            raise NotFound(f"no such VM: {vm_id}")
        return vm

    def _vm_record(self, vm_id: str) -> Vm:
        try:
            record: Aggregate = self._log.repository.get(Vm.create_id(vm_id))
        except AggregateNotFoundError:
            return Vm(vm_id)
        assert isinstance(record, Vm)
        return record

    def _load(self, snapshot: str, kind: type[A]) -> A:
        try:
            agg: Aggregate | None = self._log.repository.get(parse_id(snapshot))
        except AggregateNotFoundError:
            agg = None
        if not isinstance(agg, kind):
            label = "VM snapshot" if kind is VmSnapshot else "volume snapshot"
            raise NotFound(f"no such {label}: {snapshot}")
        return agg

    def _prepare(
        self, snapshot: str, trigger: str, operation: str
    ) -> tuple[VmSnapshot, VmInfo, Vm]:
        snap = self._load(snapshot, VmSnapshot)
        vm = self._vm(snap.vm_id)
        record = self._vm_record(vm.id)
        record.check_idle()  # busy VM first: a snapshot still being created is a conflict
        snap.check(trigger)
        hv = self._wiring.hypervisor_of(vm)
        hv.check_vm(vm)
        if operation == "revert":
            hv.check_revert(vm, memory=snap.memory)
        record.start(operation, str(snap.id), self.owner)
        return snap, vm, record

    def _check_agent(self, hv: Hypervisor, vm: VmInfo, quiesce: bool) -> None:
        # A freeze that cannot happen is refused before anything is recorded, unless the
        # config accepts a crash-consistent snapshot (the hypervisor then records why).
        if not quiesce or not self.config.limits.quiesce_requires_agent:
            return
        problem = hv.check_quiesce(vm)
        if problem is not None:
            raise InvalidRequest(
                f"vm {vm.id}: cannot quiesce: {problem} ([limits] quiesce_requires_agent"
                " = true refuses a snapshot that would not be quiesced)"
            )

    def _record_pools(self, caps: dict[str, Capabilities]) -> None:
        """
        Record what the pools advertised when first seen or when it changed. Pools are
        shared by every VM, so two controllers may race here: the loser reloads and
        observes again (the snapshot's own Requested event already holds the caps used).
        """
        for pool_id, c in sorted(caps.items()):
            info = self._wiring.inventory.pool(pool_id)
            assert info is not None
            for _ in range(5):
                try:
                    pool: Aggregate = self._log.repository.get(Pool.create_id(pool_id))
                    assert isinstance(pool, Pool)
                    pool.observe(info.name, info.driver, c)
                except AggregateNotFoundError:
                    pool = Pool(pool_id, info.name, info.driver, c)
                if not pool.pending_events:
                    break  # nothing changed: an empty save would still commit (ADR 0015)
                try:
                    self._log.save(pool)
                    break
                except IntegrityError:
                    continue

    def _claim(self, record: Vm, *aggregates: Aggregate, on_claimed: Claimed | None = None) -> None:
        """
        Save the VM's claim with the first events of the operation, atomically: if another
        controller claimed the VM meanwhile, the store refuses the write.
        """
        try:
            self._log.save(record, *aggregates)
            if record.in_flight is not None:
                self._running.add(record.in_flight)
        except IntegrityError:
            raise OperationInProgress(
                f"VM {record.vm_id} has another operation in progress"
            ) from None
        if on_claimed is not None and record.in_flight is not None:
            # A failing callback must not leave the VM claimed with no flow running.
            with contextlib.suppress(Exception):
                on_claimed(record.in_flight)

    def _steps(self, snap: SnapshotAggregate, vm: VmInfo) -> Steps:
        def save(*aggregates: Aggregate) -> None:
            self._log.save(*aggregates)

        return Steps(
            save,
            snap,
            vm,
            self._wiring.hypervisor_of(vm),
            self._wiring.drivers,
            self.config.limits.quiesce_deadline_s,
        )

    def _done(self, sid: str) -> None:
        self._running.discard(sid)
        # The operation is recorded; views that cannot catch up now do so on the next read.
        with contextlib.suppress(StoreError):
            self._views.catch_up()

    def _views_current(self) -> ViewStore:
        if self._views.position() < self._log.max_position():
            self._views.catch_up()
        return self._views

    def _owner_alive(self, owner: Any, sid: str, since: str | None) -> bool:
        """
        Whether the controller that claimed a VM may still be running the operation.
        On this host, its process tells; another host's controller is presumed alive until
        ``[limits] operation_timeout_s`` after its claim (a live one that overruns then
        loses its next write to recovery on the store's version check).
        """
        host, pid = [*str(owner).split(":"), "", ""][:2]
        if owner == self.owner:
            return sid in self._running
        if host != socket.gethostname():
            if since is None:
                return True
            age = datetime.now(UTC) - datetime.fromisoformat(since)
            return age.total_seconds() < self.config.limits.operation_timeout_s
        if pid == str(os.getpid()):
            return owner in _OPEN_OWNERS  # another Controller of this process, if still open
        return pid_alive(pid)

    def _recover_vm(self, vm_id: str) -> VmSnapshotView | VolumeSnapshotView:
        record = self._vm_record(vm_id)
        sid = record.in_flight
        assert sid is not None
        agg: Aggregate = self._log.repository.get(UUID(sid))
        assert isinstance(agg, SnapshotAggregate)
        vm = self._vm(vm_id)
        steps = self._steps(agg, vm)
        reason = f"recovered after the controller {record.owner} stopped"
        if isinstance(agg, VmSnapshot):
            flow = VmSnapshotFlow(steps, record)
            if agg.state == "reverting":
                agg.fail_revert(f"revert interrupted: {reason}")
                record.end(sid, "revert failed")
                steps.save(agg, record)
            elif agg.state == "expunging":
                flow.delete()
            elif agg.in_progress:
                flow.compensate_create(
                    f"create interrupted in state {agg.state}: {reason}",
                    "recovery",
                    interrupted=True,
                )
            else:
                record.end(sid, agg.state)
                steps.save(record)
            return self.get_vm_snapshot(sid)
        assert isinstance(agg, VolumeSnapshot)
        volume = self._wiring.inventory.volume(agg.volume_id)
        assert volume is not None
        vflow = VolumeSnapshotFlow(steps, record, self._wiring.drivers[agg.pool_id], volume)
        if agg.state == "expunging":
            vflow.delete()
        elif agg.in_progress:
            vflow.compensate(
                f"interrupted in state {agg.state}: {reason}", "recovery", interrupted=True
            )
        else:
            record.end(sid, agg.state)
            steps.save(record)
        return self.get_volume_snapshot(sid)


def pid_alive(pid: str) -> bool:
    """Whether the process ``pid`` of this host runs (one we may not signal counts)."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def _free_default_name(record: Vm, vm_id: str) -> str:
    name = default_name(vm_id, datetime.now(UTC))
    candidate, n = name, 1
    # Two snapshots in the same second would share CloudStack's default name.
    while record.name_taken(candidate):
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def _parse_head(text: str) -> tuple[int, str]:
    position, _, digest = text.strip().partition(":")
    hexdigits = set("0123456789abcdefABCDEF")
    if not position.isdigit() or len(digest) != 64 or not set(digest) <= hexdigits:
        raise InvalidRequest(
            f"--expect-head {text!r} is not POSITION:HASH (a chain_head from audit verify)"
        )
    return int(position), digest.lower()


def _vm_snapshot_view(doc: dict[str, Any]) -> VmSnapshotView:
    doc = dict(doc)
    doc["volumes"] = tuple(VolumeInSnapshot(**v) for v in doc["volumes"])
    return VmSnapshotView(**doc)
