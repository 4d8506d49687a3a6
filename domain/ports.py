"""
Ports: what the workflow needs from hypervisors, storage drivers and the inventory.

Adapters implement them; any failure is raised as :class:`DriverError` (or any other
exception, which the application service records the same way).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from vmsnap.domain.exceptions import DriverError
from vmsnap.domain.values import (
    Capabilities,
    HookResult,
    HypervisorSnapshot,
    PoolInfo,
    QuiesceResult,
    SnapshotRef,
    VmInfo,
    VolumeInfo,
)


class LiveImage(ABC):
    """
    A volume's disk image that a running guest holds open: its internal snapshots are
    made by the process that runs the guest (QEMU), since nothing else may write it.
    """

    @abstractmethod
    def create_snapshot(self, name: str) -> str:
        """
        Take the internal snapshot ``name`` of the image; return what was done.
        """

    @abstractmethod
    def delete_snapshot(self, name: str) -> str:
        """
        Delete the internal snapshot ``name`` (one copy); return what was done.
        """


class Hypervisor(ABC):
    """
    A hypervisor (the seed's HypervisorHelper plus the hypervisor's own VM snapshots).
    """

    name: str
    #: vmware | xenserver | kvm (simulator profiles) or libvirt.
    profile: str

    @abstractmethod
    def check_vm(self, vm: VmInfo) -> None:
        """
        Raise :class:`InvalidRequest` if the hypervisor does not know ``vm``.
        Called during validation, before anything is recorded.
        """

    def check_quiesce(self, vm: VmInfo) -> str | None:
        """
        Return why the guest of ``vm`` cannot be frozen now (e.g. its guest agent does not
        answer), or None when it can or needs no freeze (not running). Called during
        validation, before anything is recorded, when a quiesced snapshot is asked.
        """
        return None

    def check_revert(self, vm: VmInfo, *, memory: bool) -> None:
        """
        Raise :class:`InvalidRequest` if a VM snapshot (with the guest's memory or not)
        cannot be reverted in the VM's present state, e.g. disks of a running guest.
        Called during validation, before anything is recorded.
        """
        return None

    def live_image(self, vm: VmInfo, volume: VolumeInfo, file: str) -> LiveImage | None:
        """
        Return the image ``file`` of ``volume`` as the running guest holds it open, or
        None when no running guest of this hypervisor has it open.
        """
        return None

    @abstractmethod
    def quiesce(self, vm: VmInfo, snapshot: SnapshotRef, *, memory: bool) -> QuiesceResult:
        """
        Quiesce the VM for a storage snapshot: by default take a temporary hypervisor
        snapshot (with guest quiesce where ``snapshot.quiesce`` asks and the
        hypervisor honours it); on KVM freeze the guest's filesystems. The temporary
        snapshot is named ``temporary_name(snapshot.name)`` (see values).
        """

    @abstractmethod
    def unquiesce(
        self, vm: VmInfo, snapshot: SnapshotRef, *, thaw: bool, release: str | None
    ) -> str:
        """
        Thaw the guest when ``thaw``; release the temporary hypervisor snapshot named
        ``release`` when given. Return a short description of what was done.
        """

    def guest_exec(self, vm: VmInfo, argv: Sequence[str], *, timeout_s: float) -> HookResult:
        """
        Run ``argv`` inside the guest of ``vm`` (a ``where = "guest"`` hook) and wait for
        it. Past ``timeout_s`` the adapter kills it inside the guest and answers
        ``timed_out=True`` (exit_code None). The output kept is the first
        ``HOOK_OUTPUT_LIMIT`` bytes of stdout and stderr. Raise :class:`DriverError` when
        the command cannot be started (no guest agent, no such program).
        """
        raise DriverError(f"hypervisor {self.name} cannot run commands inside guests")

    @abstractmethod
    def take_vm_snapshot(
        self, vm: VmInfo, snapshot: SnapshotRef, *, memory: bool
    ) -> HypervisorSnapshot:
        """
        Take a VM snapshot with the hypervisor (the hypervisor strategy).
        """

    @abstractmethod
    def revert_vm_snapshot(self, vm: VmInfo, name: str) -> None:
        """
        Revert the VM to the hypervisor snapshot ``name``.
        """

    @abstractmethod
    def delete_vm_snapshot(self, vm: VmInfo, name: str) -> None:
        """
        Delete the hypervisor snapshot ``name``; deleting one that is gone succeeds.
        """

    def held_snapshots(self, vm: VmInfo) -> list[str] | None:
        """
        The names of the snapshots of ``vm`` this hypervisor holds (for ``reconcile``);
        None when it cannot list them.
        """
        return None

    def held_volume_snapshots(self, vm: VmInfo, volume: VolumeInfo) -> list[str] | None:
        """
        The names of the volume snapshots of ``volume`` it holds; None: cannot list them.
        """
        return None

    @abstractmethod
    def take_volume_snapshot(self, vm: VmInfo, volume: VolumeInfo, name: str) -> str:
        """
        Snapshot one volume through the hypervisor (volumes on the default driver).
        """

    @abstractmethod
    def delete_volume_snapshot(self, vm: VmInfo, volume: VolumeInfo, name: str) -> None:
        """
        Delete a volume snapshot taken by :meth:`take_volume_snapshot`; idempotent.
        """


class StorageDriver(ABC):
    """
    A primary storage driver (the seed's fine-grained storage interface, option 2).
    """

    #: default | simulator | qcow2
    driver: str
    pool: PoolInfo

    @abstractmethod
    def capabilities(self) -> Capabilities:
        """
        Return what the pool advertises now.
        """

    @abstractmethod
    def take_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        """
        Snapshot the VM's ``volumes`` on this pool, in one shot or one by one.
        Precondition: the VM is quiesced. Return whether the VM may be unquiesced
        (its temporary hypervisor snapshot released) as far as this driver is concerned.
        """

    @abstractmethod
    def revert_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        """
        Revert ``volumes`` to the snapshot. Return True when done.
        """

    @abstractmethod
    def delete_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        """
        Delete the snapshot of ``volumes``; deleting one that is gone succeeds.
        """

    def held_snapshots(self, volume: VolumeInfo) -> list[str] | None:
        """
        The names of the snapshots of ``volume`` this pool holds (for ``reconcile``);
        None when it cannot list them.
        """
        return None

    @abstractmethod
    def take_snapshot(self, volume: VolumeInfo, name: str) -> str:
        """
        Take a volume snapshot named ``name``; return the backend's reference to it (for
        the record: deletes name the snapshot by ``name``).
        """

    @abstractmethod
    def delete_snapshot(self, volume: VolumeInfo, name: str) -> None:
        """
        Delete the volume snapshot ``name``; deleting one that is gone (or was never
        taken) succeeds.
        """


class Inventory(ABC):
    """
    The VMs, volumes and pools vmsnap manages (from the config file).
    """

    @abstractmethod
    def vms(self) -> Sequence[VmInfo]: ...

    @abstractmethod
    def pools(self) -> Sequence[PoolInfo]: ...

    def vm(self, vm_id: str) -> VmInfo | None:
        return next((v for v in self.vms() if v.id == vm_id), None)

    def pool(self, pool_id: str) -> PoolInfo | None:
        return next((p for p in self.pools() if p.id == pool_id), None)

    def volumes(self) -> list[VolumeInfo]:
        return [vol for vm in self.vms() for vol in vm.volumes]

    def volume(self, volume_id: str) -> VolumeInfo | None:
        return next((v for v in self.volumes() if v.id == volume_id), None)
