"""The queries: snapshots, pools, volumes and VMs, answered from the views."""

from __future__ import annotations

from typing import Any

from vmsnap.adapters.view_store import ViewStore
from vmsnap.domain.exceptions import InvalidRequest, NotFound
from vmsnap.domain.vm_snapshot import snapshot_id as parse_id
from vmsnap.domain.workflow import REMOVED, VM_SNAPSHOT_STATES
from vmsnap.projections.projector import VM_SNAPSHOTS, VMS, VOLUME_SNAPSHOTS
from vmsnap.service.runtime import Runtime
from vmsnap.views import (
    PoolView,
    VmSnapshotView,
    VmView,
    VolumeInSnapshot,
    VolumeSnapshotView,
    VolumeView,
)

SnapshotView = VmSnapshotView | VolumeSnapshotView


class Queries:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def get_vm_snapshot(self, snapshot: str) -> VmSnapshotView:
        doc = self.rt.views_current().get(VM_SNAPSHOTS, str(parse_id(snapshot)))
        if doc is None:
            raise NotFound(f"no such VM snapshot: {snapshot}")
        return vm_snapshot_view(doc)

    def list_vm_snapshots(
        self, *, vm_id: str | None, state: str | None, include_removed: bool
    ) -> list[VmSnapshotView]:
        views = self.rt.views_current()
        self._check_filters(views, vm_id=vm_id, state=state)
        where = {k: v for k, v in (("vm_id", vm_id), ("state", state)) if v is not None}
        exclude = None if include_removed or state == REMOVED else REMOVED
        docs = views.select(VM_SNAPSHOTS, where, exclude)
        return [vm_snapshot_view(d) for d in docs]

    def _check_filters(self, views: ViewStore, *, vm_id: str | None, state: str | None) -> None:
        """
        An unknown state or VM in a list filter is refused, not answered with an empty
        list; a VM gone from the config is known while the views still list it.
        """
        if state is not None and state not in VM_SNAPSHOT_STATES:
            raise InvalidRequest(
                f"no such state: {state!r} (one of {', '.join(VM_SNAPSHOT_STATES)})"
            )
        configured = vm_id is None or self.rt.wiring.inventory.vm(vm_id) is not None
        if not configured and views.get(VMS, str(vm_id)) is None:
            raise NotFound(f"no such VM: {vm_id}")

    def get_volume_snapshot(self, snapshot: str) -> VolumeSnapshotView:
        doc = self.rt.views_current().get(VOLUME_SNAPSHOTS, str(parse_id(snapshot)))
        if doc is None:
            raise NotFound(f"no such volume snapshot: {snapshot}")
        return VolumeSnapshotView(**doc)

    def list_volume_snapshots(self, *, volume_id: str | None) -> list[VolumeSnapshotView]:
        views = self.rt.views_current()
        known = volume_id is None or self.rt.wiring.inventory.volume(volume_id) is not None
        if not known and not views.select(VOLUME_SNAPSHOTS, {"volume_id": volume_id}):
            raise NotFound(f"no such volume: {volume_id}")
        where = {} if volume_id is None else {"volume_id": volume_id}
        docs = views.select(VOLUME_SNAPSHOTS, where)
        return [VolumeSnapshotView(**d) for d in docs]

    def snapshot(self, snapshot: str) -> SnapshotView:
        """A VM snapshot or a volume snapshot, whichever has the id."""
        views = self.rt.views_current()
        sid = str(parse_id(snapshot))
        doc = views.get(VM_SNAPSHOTS, sid)
        if doc is not None:
            return vm_snapshot_view(doc)
        doc = views.get(VOLUME_SNAPSHOTS, sid)
        if doc is not None:
            return VolumeSnapshotView(**doc)
        raise NotFound(f"no such snapshot: {snapshot}")

    def list_pools(self) -> list[PoolView]:
        drivers = self.rt.wiring.drivers
        return [
            PoolView(p.id, p.name, p.driver, drivers[p.id].capabilities().to_dict())
            for p in self.rt.wiring.inventory.pools()
        ]

    def list_volumes(self, *, vm_id: str | None) -> list[VolumeView]:
        rt = self.rt
        vms = [rt.vm_info(vm_id)] if vm_id is not None else list(rt.wiring.inventory.vms())
        views = []
        for vm in vms:
            for v in vm.volumes:
                caps = rt.wiring.drivers[v.pool_id].capabilities()
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

    def list_vms(self, *, frozen: bool) -> list[VmView]:
        views = self.rt.views_current()
        result = []
        for vm in self.rt.wiring.inventory.vms():
            doc = views.get(VMS, vm.id) or {}
            view = VmView(
                vm.id,
                vm.hypervisor,
                vm.power_state,
                in_flight=doc.get("in_flight"),
                operation=doc.get("operation"),
                current=doc.get("current"),
                frozen=bool(doc.get("frozen")),
                frozen_by=doc.get("frozen_by"),
                frozen_since=doc.get("frozen_since"),
                alert=doc.get("alert"),
                in_flight_since=doc.get("in_flight_since"),
            )
            if view.frozen or not frozen:
                result.append(view)
        return result


def vm_snapshot_view(doc: dict[str, Any]) -> VmSnapshotView:
    doc = dict(doc)
    doc["volumes"] = tuple(VolumeInSnapshot(**v) for v in doc["volumes"])
    return VmSnapshotView(**doc)
