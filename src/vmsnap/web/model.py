"""What the pages show, gathered from the Controller for one user (no HTML here)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import attrs

from vmsnap.config import Config
from vmsnap.controller import Controller
from vmsnap.views import PoolView, VmSnapshotView, VmView, VolumeSnapshotView, VolumeView
from vmsnap.web.access import User, visible_vms

#: hypervisor profiles that ignore quiesce: their snapshots are crash-consistent
IGNORES_QUIESCE = {"xenserver"}


@attrs.frozen
class Node:
    """A snapshot in its VM's tree, with its children."""

    snap: VmSnapshotView
    children: list[Node]


@attrs.frozen
class Instance:
    vm: VmView
    hypervisor_type: str
    profile: str
    volumes: list[VolumeView]
    tree: list[Node]
    volume_snapshots: dict[str, list[VolumeSnapshotView]]

    @property
    def ignores_quiesce(self) -> bool:
        return self.hypervisor_type == "simulator" and self.profile in IGNORES_QUIESCE

    @property
    def hypervisor_label(self) -> str:
        if self.hypervisor_type == "simulator":
            return f"{self.profile} (simulated)"
        return self.hypervisor_type


def tree(snaps: list[VmSnapshotView]) -> list[Node]:
    """The snapshots as a forest: a snapshot whose parent is not listed is a root."""
    ids = {s.id for s in snaps}
    children: dict[str | None, list[VmSnapshotView]] = defaultdict(list)
    for s in snaps:
        children[s.parent_id if s.parent_id in ids else None].append(s)

    def grow(s: VmSnapshotView) -> Node:
        return Node(s, [grow(c) for c in children[s.id]])

    return [grow(s) for s in children[None]]


def instances(controller: Controller, config: Config, user: User) -> list[Instance]:
    ids = visible_vms(user, config)
    vms = {v.id: v for v in controller.list_vms()}
    volumes = controller.list_volumes()
    snaps = controller.list_vm_snapshots()
    vol_snaps: dict[str, list[VolumeSnapshotView]] = defaultdict(list)
    for vs in controller.list_volume_snapshots():
        if vs.state != "removed":
            vol_snaps[vs.volume_id].append(vs)
    result = []
    for vm_id in ids:
        vm = vms[vm_id]
        hv = config.hypervisor(vm.hypervisor)
        result.append(
            Instance(
                vm,
                hv.type,
                hv.profile,
                [v for v in volumes if v.vm_id == vm_id],
                tree([s for s in snaps if s.vm_id == vm_id]),
                {v.id: vol_snaps[v.id] for v in volumes if v.vm_id == vm_id},
            )
        )
    return result


def pools(controller: Controller) -> dict[str, PoolView]:
    return {p.id: p for p in controller.list_pools()}


def live_state(controller: Controller, config: Config, user: User) -> dict[str, Any]:
    """The small JSON document the pages poll: operations in flight and every state."""
    ids = set(visible_vms(user, config))
    snaps = {s.id: s for s in controller.list_vm_snapshots() if s.vm_id in ids}
    vms = {}
    for vm in controller.list_vms():
        if vm.id in ids:
            flight = snaps.get(vm.in_flight or "")
            vms[vm.id] = {
                "operation": vm.operation,
                "snapshot_id": vm.in_flight,
                "state": flight.state if flight else None,
            }
    return {
        "vms": vms,
        "snapshots": {
            s.id: {"vm_id": s.vm_id, "name": s.name, "state": s.state, "current": s.current}
            for s in snaps.values()
        },
        "volume_snapshots": {
            s.id: {"volume_id": s.volume_id, "state": s.state, "quiesced": s.quiesced}
            for s in controller.list_volume_snapshots()
            if s.vm_id in ids and s.state != "removed"
        },
    }
