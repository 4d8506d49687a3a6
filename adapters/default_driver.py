"""The default storage driver: its volumes are captured through the hypervisor."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vmsnap.domain.ports import Hypervisor, StorageDriver
from vmsnap.domain.values import Capabilities, PoolInfo, SnapshotRef, VmInfo, VolumeInfo


class DefaultStorageDriver(StorageDriver):
    """
    The driver of pools that have no snapshot feature of their own (CloudStack's default
    primary storage driver).

    Its volumes are captured by the hypervisor: in a VM snapshot, by the temporary
    hypervisor snapshot taken to quiesce the VM (which must then be kept); in a volume
    snapshot, by the hypervisor's own volume snapshot.

    Args:
        pool: the pool it serves.
        hypervisor_for: the hypervisor that runs a volume's VM, and that VM.
    """

    driver = "default"

    def __init__(
        self,
        pool: PoolInfo,
        hypervisor_for: Callable[[VolumeInfo], tuple[Hypervisor, VmInfo]],
    ) -> None:
        self.pool = pool
        self._hypervisor_for = hypervisor_for

    def __repr__(self) -> str:
        return f"DefaultStorageDriver({self.pool.id!r})"

    def capabilities(self) -> Capabilities:
        """
        Advertise nothing: the pool can neither quiesce nor snapshot by itself.
        """
        return Capabilities()

    def take_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        """
        Take nothing and answer False: the temporary hypervisor snapshot already holds these
        volumes, so it must be kept (the VM must not be unquiesced by release).
        """
        return False

    def revert_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        """
        Do nothing: the strategy reverts the kept hypervisor snapshot, which holds these volumes.
        """
        return True

    def delete_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        """
        Do nothing: the strategy deletes the kept hypervisor snapshot, which holds these volumes.
        """
        return True

    def held_snapshots(self, volume: VolumeInfo) -> list[str] | None:
        """
        What the hypervisor holds for the volume: the default pool holds nothing itself.
        """
        hypervisor, vm = self._hypervisor_for(volume)
        return hypervisor.held_volume_snapshots(vm, volume)

    def take_snapshot(self, volume: VolumeInfo, name: str) -> str:
        """
        Snapshot the volume through the hypervisor of its VM.
        """
        hypervisor, vm = self._hypervisor_for(volume)
        return hypervisor.take_volume_snapshot(vm, volume, name)

    def delete_snapshot(self, volume: VolumeInfo, name: str) -> None:
        """
        Delete the volume snapshot through the hypervisor that took it.
        """
        hypervisor, vm = self._hypervisor_for(volume)
        hypervisor.delete_volume_snapshot(vm, volume, name)
