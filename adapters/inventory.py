"""The inventory port backed by the config file's VMs and pools."""

from __future__ import annotations

from collections.abc import Sequence

from vmsnap.domain.ports import Inventory
from vmsnap.domain.values import PoolInfo, VmInfo, VolumeInfo


class StaticInventory(Inventory):
    """
    VMs and pools given once (from the config file), indexed for constant-time lookups.
    """

    def __init__(self, vms: Sequence[VmInfo], pools: Sequence[PoolInfo]) -> None:
        self._vms = {v.id: v for v in vms}
        self._pools = {p.id: p for p in pools}
        self._volumes = {vol.id: vol for vm in vms for vol in vm.volumes}

    def vms(self) -> Sequence[VmInfo]:
        return list(self._vms.values())

    def pools(self) -> Sequence[PoolInfo]:
        return list(self._pools.values())

    def vm(self, vm_id: str) -> VmInfo | None:
        return self._vms.get(vm_id)

    def pool(self, pool_id: str) -> PoolInfo | None:
        return self._pools.get(pool_id)

    def volumes(self) -> list[VolumeInfo]:
        return list(self._volumes.values())

    def volume(self, volume_id: str) -> VolumeInfo | None:
        return self._volumes.get(volume_id)
