"""
``reconcile``: what the backends hold under vmsnap's names against what the log owns
(ADR 0020). A backend object is owned while its snapshot is live (not failed or removed),
or while a failed snapshot still records it; what the orphan ledger owes is listed as
owed; anything else under a ``vmsnap-`` name is an orphan. ``clean`` records each orphan
in the ledger, then cleans up everything owed under a claim of its VM, recording each
answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import attrs
from eventsourcing.application import AggregateNotFoundError

from vmsnap.domain.exceptions import DriverError
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import (
    HOOK_OWED,
    HOOK_RUNNING,
    OWED_HYPERVISOR_SNAPSHOT,
    OWED_RELEASE,
    OWED_VOLUME_SNAPSHOT,
    POST_THAW,
    Owed,
    VmInfo,
    backend_name,
)
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.domain.workflow import FAILED, REMOVED
from vmsnap.projections.projector import VM_SNAPSHOTS, VOLUME_SNAPSHOTS
from vmsnap.service import ledger
from vmsnap.service.runtime import Runtime

PREFIX = "vmsnap-"


@attrs.frozen
class Found:
    vm_id: str
    owed: Owed

    def to_dict(self) -> dict[str, Any]:
        return {
            "vm_id": self.vm_id,
            **attrs.asdict(self.owed),
            "volume_ids": [*self.owed.volume_ids],
        }


@attrs.frozen
class OwedHook:
    """
    A post-thaw hook still owed (issue 19): never started (``owed``: ``recover`` runs it)
    or started with no end recorded (``running``: recover reports it, runs it again only
    if idempotent).
    """

    vm_id: str
    snapshot_id: str
    snapshot_state: str
    run: tuple[str, ...] = attrs.field(converter=tuple)
    where: str
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "run": list(self.run)}


@attrs.frozen
class ReconcileReport:
    """What is owed, what is orphaned, what could not be listed, and what was cleaned."""

    owed: tuple[Found, ...]
    orphans: tuple[Found, ...]
    unlisted: tuple[str, ...]
    cleaned: tuple[Found, ...] = ()
    problems: tuple[str, ...] = ()
    hooks: tuple[OwedHook, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.owed or self.orphans or self.problems or self.hooks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "owed": [f.to_dict() for f in self.owed],
            "orphans": [f.to_dict() for f in self.orphans],
            "unlisted": list(self.unlisted),
            "cleaned": [f.to_dict() for f in self.cleaned],
            "problems": list(self.problems),
            "hooks": [h.to_dict() for h in self.hooks],
        }


class Reconciling:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def reconcile(self, *, clean: bool = False) -> ReconcileReport:
        before = self._compare()
        if not clean:
            return before
        problems: list[str] = []
        for found in before.orphans:
            ledger.record_owed(self.rt, found.vm_id, [found.owed], "orphan found by reconcile")
        for vm_id in sorted({f.vm_id for f in (*before.owed, *before.orphans)}):
            ran, problem = ledger.settle(self.rt, vm_id)
            if not ran:
                problems.append(f"VM {vm_id} is busy: its cleanup waits for the next reconcile")
            elif problem is not None:
                problems.append(f"VM {vm_id}: {problem}")
        after = self._compare()
        cleaned = tuple(
            f for f in (*before.owed, *before.orphans) if f not in (*after.owed, *after.orphans)
        )
        return attrs.evolve(after, cleaned=cleaned, problems=tuple(problems))

    def _compare(self) -> ReconcileReport:
        owed: list[Found] = []
        orphans: list[Found] = []
        unlisted: list[str] = []
        hooks: list[OwedHook] = []
        for vm in self.rt.wiring.inventory.vms():
            hooks += self._owed_hooks(vm)
            ledger_now = self.rt.vm_aggregate(vm.id).owed_now()
            owed += [Found(vm.id, o) for o in ledger_now.values()]
            owed_names = {(o.target, o.name) for o in ledger_now.values()}
            for found in self._held(vm, unlisted):
                if (found.owed.target, found.owed.name) in owed_names:
                    continue
                if not self._owned(found.owed):
                    orphans.append(found)
        return ReconcileReport(tuple(owed), tuple(orphans), tuple(unlisted), hooks=tuple(hooks))

    def _owed_hooks(self, vm: VmInfo) -> Iterator[OwedHook]:
        """The post-thaw hooks of ``vm``'s snapshots that are owed or never ended."""
        views = self.rt.views_current()
        docs = views.select(VM_SNAPSHOTS, {"vm_id": vm.id})
        for volume in vm.volumes:
            docs += views.select(VOLUME_SNAPSHOTS, {"volume_id": volume.id})
        for doc in docs:
            for hook in doc.get("hooks", []):
                if hook["hook"] == POST_THAW and hook["status"] in (HOOK_OWED, HOOK_RUNNING):
                    yield OwedHook(
                        vm.id, doc["id"], doc["state"], hook["run"], hook["where"], hook["status"]
                    )

    def _held(self, vm: VmInfo, unlisted: list[str]) -> Iterator[Found]:
        """What the backends hold for ``vm`` under vmsnap's names."""
        hv = self.rt.wiring.hypervisor_of(vm)
        for name in _listed(lambda: hv.held_snapshots(vm), f"hypervisor {hv.name}", unlisted):
            sid = _snapshot_id(name)
            if sid is not None:
                kind = OWED_RELEASE if name.endswith("-quiesce") else OWED_HYPERVISOR_SNAPSHOT
                yield Found(vm.id, Owed(kind, hv.name, name, sid))
        for volume in vm.volumes:
            driver = self.rt.wiring.drivers.get(volume.pool_id)
            if driver is None:
                continue
            what = f"pool {volume.pool_id} (volume {volume.id})"
            for name in _listed(lambda d=driver, v=volume: d.held_snapshots(v), what, unlisted):
                sid = _snapshot_id(name)
                if sid is not None:
                    owed = Owed(OWED_VOLUME_SNAPSHOT, volume.pool_id, name, sid, (volume.id,))
                    yield Found(vm.id, owed)

    def _owned(self, owed: Owed) -> bool:
        """Whether the log owns the object: its snapshot is live or still records it."""
        try:
            snap: Any = self.rt.wiring.log.repository.get(UUID(owed.snapshot_id))
        except AggregateNotFoundError:
            return False
        if not isinstance(snap, SnapshotAggregate) or snap.state == REMOVED:
            return False
        if snap.state != FAILED:
            return True
        if owed.kind in (OWED_RELEASE, OWED_HYPERVISOR_SNAPSHOT):
            return bool(snap.hypervisor_snapshot == owed.name)
        if isinstance(snap, VolumeSnapshot):
            return bool(snap.taken == owed.name)
        assert isinstance(snap, VmSnapshot)
        taken = {v for g in snap.groups if g.pool_id in snap.taken for v in g.volume_ids}
        return owed.name == backend_name(owed.snapshot_id) and owed.volume_ids[0] in taken


def _listed(fn: Any, what: str, unlisted: list[str]) -> list[str]:
    try:
        names = fn()
    except (DriverError, OSError) as e:
        unlisted.append(f"{what}: {e}")
        return []
    if names is None:
        unlisted.append(f"{what} cannot list its snapshots")
        return []
    return list(names)


def _snapshot_id(name: str) -> str | None:
    if not name.startswith(PREFIX):
        return None
    try:
        return str(UUID(name[len(PREFIX) : len(PREFIX) + 36]))
    except ValueError:
        return None
