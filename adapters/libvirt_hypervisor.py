"""
The libvirt hypervisor (KVM/QEMU semantics): guest filesystem freeze and thaw through the
guest agent, and libvirt domain snapshots (ADR 0007; running QEMU guests: ADR 0016).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import libvirt

from vmsnap.adapters.libvirt_connection import (
    NO_DISK,
    disk_holding,
    domain_name,
    find_snapshot,
)
from vmsnap.adapters.libvirt_guest_exec import LibvirtGuestExec
from vmsnap.adapters.libvirt_live import (
    AGENT_UNAVAILABLE,
    STILL_FROZEN,
    QemuInternalImage,
    agent_problem,
    freeze_status,
    node_for_file,
)
from vmsnap.adapters.libvirt_xml import (
    describe,
    disk_for,
    disk_targets,
    flag_names,
    named_snapshots,
    snapshot_request,
)
from vmsnap.domain.exceptions import DriverError, InvalidRequest
from vmsnap.domain.ports import Hypervisor, LiveImage
from vmsnap.domain.values import (
    HypervisorSnapshot,
    QuiesceResult,
    SnapshotRef,
    VmInfo,
    VolumeInfo,
    temporary_name,
)

__all__ = ["NO_DISK", "LibvirtHypervisor", "disk_for", "snapshot_request"]

#: The description of a volume snapshot's domain snapshot, followed by the volume id: it
#: tells volume snapshots from VM snapshots when listing them (``reconcile``).
VOLUME_SNAPSHOT_OF = "vmsnap volume snapshot of "


class LibvirtHypervisor(LibvirtGuestExec, Hypervisor):
    """
    A libvirt host, driven as KVM/QEMU: quiesce is a guest filesystem freeze
    (``fsFreeze``, the thaw is mandatory) plus, for the volumes no storage driver
    captures itself, a temporary disk-only snapshot; VM snapshots are
    ``snapshotCreateXML`` domain snapshots; hooks run inside the guest through its agent
    (``guest-exec``, :class:`LibvirtGuestExec`).

    The connection opens on first use; a connection found dead is reopened once and the
    call retried once (:class:`LibvirtConnection`).

    On libvirt's test driver (``test:///...``), which has no disk-only snapshots and no
    guest agent, a disk-only snapshot is the test driver's internal snapshot of every disk.

    Args:
        name: the hypervisor's name in the config.
        uri: the libvirt URI, e.g. ``qemu:///system`` or ``test:///default``.
        quiet: silence libvirt's default error printing (process-wide).
        require_agent: a quiesce whose guest agent does not answer fails (True) or goes
            on unfrozen, crash-consistent, with the reason in its result (False).
        agent_timeout_s: how long the guest agent may take to answer a ping or a status.
        captured_by_pool: True for a volume whose pool's driver snapshots it itself; the
            temporary quiesce snapshot of a QEMU domain then leaves its disk out (None:
            every disk is in it).
    """

    profile = "kvm"

    def __init__(
        self,
        name: str,
        uri: str,
        *,
        quiet: bool = True,
        require_agent: bool = True,
        agent_timeout_s: int = 2,
        captured_by_pool: Callable[[VolumeInfo], bool] | None = None,
    ) -> None:
        super().__init__(name, uri, quiet=quiet)
        self.require_agent = require_agent
        self.agent_timeout_s = agent_timeout_s
        self._captured_by_pool = captured_by_pool

    def __repr__(self) -> str:
        return f"LibvirtHypervisor({self.name!r}, {self.uri!r})"

    def check_vm(self, vm: VmInfo) -> None:
        """
        Refuse (InvalidRequest) a VM whose domain the host does not have, or a host that
        cannot be reached.
        """
        try:
            self._call("look up domain", vm, lambda dom, _: None)
        except DriverError as e:
            if e.code == str(libvirt.VIR_ERR_NO_DOMAIN):
                raise InvalidRequest(
                    f"vm {vm.id}: hypervisor {self.name} ({self.uri}) has no domain named"
                    f" {domain_name(vm)!r}"
                ) from None
            raise InvalidRequest(
                f"vm {vm.id}: cannot use hypervisor {self.name} ({self.uri}): {e.message}"
            ) from None

    def check_quiesce(self, vm: VmInfo) -> str | None:
        """
        Return why the running QEMU guest cannot be frozen (its agent does not answer
        ``guest-ping``), or None. A shut-off domain or the test driver needs no agent.
        """
        if not self._disk_only or not self._is_active(vm):
            return None
        return self._agent_problem(vm)

    def check_revert(self, vm: VmInfo, *, memory: bool) -> None:
        """
        Refuse to revert a disk-only snapshot under a running QEMU guest (as CloudStack
        does): its disks would change under the guest. Stop the VM first.
        """
        if memory or not self._disk_only or not self._is_active(vm):
            return
        raise InvalidRequest(
            f"vm {vm.id}: domain {domain_name(vm)} is running: stop the VM first"
            " (a disk-only VM snapshot is reverted with the guest shut off)"
        )

    def live_image(self, vm: VmInfo, volume: VolumeInfo, file: str) -> LiveImage | None:
        """
        Return ``file`` as the running QEMU of ``vm`` holds it open (its internal
        snapshots then go through QEMU), or None: domain shut off, file not open there,
        or the test driver (which opens no files).
        """
        if not self._disk_only:
            return None

        def node(dom: Any, _: bool) -> str | None:
            return node_for_file(dom, file) if dom.isActive() else None

        found = self._call(f"find the block node of {file}", vm, node)
        if found is None:
            return None

        def call(what: str, fn: Callable[[Any], Any]) -> Any:
            return self._call(what, vm, lambda dom, _: fn(dom))

        return QemuInternalImage(call, domain_name(vm), found, file)

    def quiesce(self, vm: VmInfo, snapshot: SnapshotRef, *, memory: bool) -> QuiesceResult:
        """
        Freeze the guest's filesystems when ``snapshot.quiesce`` asks and the domain runs
        (after a ``guest-ping`` of its agent on QEMU), then take the temporary disk-only
        snapshot ``<name>-quiesce`` of the disks no pool captures itself. If that snapshot
        fails, the guest is thawed before the error is raised.
        """
        notes: list[str] = []
        count: int | None = None
        why: str | None = None
        if snapshot.quiesce:
            count, why = self._freeze(vm)
            notes.append(f"fsFreeze froze {count} filesystems" if count is not None else str(why))
        if memory:
            notes.append("memory not captured: the quiesce snapshot is disk-only")
        frozen = count is not None
        try:
            temp = self._temporary_snapshot(vm, snapshot.name, frozen, notes)
        except DriverError as e:
            if not frozen:
                raise
            raise DriverError(f"{e.message}; {self._thaw_after_failure(vm)}", e.code) from None
        return QuiesceResult(
            frozen=frozen,
            quiesced=bool(count),
            hypervisor_snapshot=temp,
            detail="; ".join(notes),
            filesystems_frozen=count,
            crash_reason=why,
        )

    def _freeze(self, vm: VmInfo) -> tuple[int | None, str | None]:
        # (filesystems frozen or None when not frozen, why the result is not quiesced)
        if not self._is_active(vm):
            return None, "domain is not running: no guest to freeze (its disks are at rest)"
        if self._disk_only:
            problem = self._agent_problem(vm)
            if problem is not None and self.require_agent:
                raise DriverError(f"cannot quiesce vm {vm.id}: {problem}", AGENT_UNAVAILABLE)
            if problem is not None:
                return None, f"not frozen, crash-consistent: {problem}"
        try:
            count = self._call("fsFreeze", vm, lambda dom, _: int(dom.fsFreeze()))
        except DriverError as e:
            raise DriverError(f"{e.message}; {self._thaw_after_failure(vm)}", e.code) from None
        return count, None if count > 0 else "the guest agent froze no filesystem"

    def _temporary_snapshot(
        self, vm: VmInfo, name: str, frozen: bool, notes: list[str]
    ) -> str | None:
        temp = temporary_name(name)
        volumes = self._uncaptured(vm)
        if volumes == []:
            notes.append("no temporary snapshot: every volume's pool captures it itself")
            return None
        recorded = self._create(vm, temp, memory=False, quiesce=False, volumes=volumes)
        how = "while the guest was frozen" if frozen else "without freezing (crash-consistent)"
        notes.append(f"temporary snapshot {temp} taken {how}: {recorded}")
        return temp

    def _uncaptured(self, vm: VmInfo) -> list[VolumeInfo] | None:
        # None: every disk (the test driver snapshots them all anyway).
        if not self._disk_only or self._captured_by_pool is None:
            return None
        return [v for v in vm.volumes if not self._captured_by_pool(v)]

    def _agent_problem(self, vm: VmInfo) -> str | None:
        return self._call("guest-ping", vm, lambda dom, _: agent_problem(dom, self.agent_timeout_s))

    def unquiesce(
        self, vm: VmInfo, snapshot: SnapshotRef, *, thaw: bool, release: str | None
    ) -> str:
        """
        Thaw the guest (``fsThaw``, then on QEMU the agent's ``guest-fsfreeze-status``
        must say thawed) when ``thaw``, then delete the temporary snapshot ``release``
        when given (one already gone is fine). Both are tried even if the other fails;
        any failure is raised afterwards.
        """
        done: list[str] = []
        errors: list[DriverError] = []
        if thaw:
            try:
                done.append(self._thaw(vm))
            except DriverError as e:
                errors.append(e)
        if release is not None:
            try:
                gone = self._delete(vm, release)
                done.append(f"temporary snapshot {release} " + ("released" if gone else "was gone"))
            except DriverError as e:
                errors.append(e)
        if errors:
            raise DriverError("; ".join([e.message for e in errors] + done), errors[0].code)
        return "; ".join(done) or "nothing to do"

    def take_vm_snapshot(
        self, vm: VmInfo, snapshot: SnapshotRef, *, memory: bool
    ) -> HypervisorSnapshot:
        """
        Take the domain snapshot ``snapshot.name``: disk-only with QUIESCE when
        ``snapshot.quiesce`` asks; with the running guest's memory when ``memory`` asks
        (libvirt cannot quiesce those: the result then says ``quiesced=False``).
        """
        active = self._is_active(vm)
        quiesced = snapshot.quiesce and active and not memory
        notes = []
        if snapshot.quiesce and not quiesced:
            why = "the domain is not running" if not active else "memory snapshots cannot be"
            notes.append(f"not quiesced: {why} (libvirt quiesces disk-only snapshots)")
        notes.append(self._create(vm, snapshot.name, memory=memory, quiesce=quiesced))
        return HypervisorSnapshot(
            snapshot.name, quiesced=quiesced, memory=memory and active, detail="; ".join(notes)
        )

    def revert_vm_snapshot(self, vm: VmInfo, name: str) -> None:
        """
        Revert the domain to its snapshot ``name`` (``revertToSnapshot``).
        """
        self._call(
            f"revert to snapshot {name}",
            vm,
            lambda dom, _: dom.revertToSnapshot(dom.snapshotLookupByName(name)),
        )

    def delete_vm_snapshot(self, vm: VmInfo, name: str) -> None:
        """
        Delete the domain snapshot ``name``; one already gone is fine.
        """
        self._delete(vm, name)

    def take_volume_snapshot(self, vm: VmInfo, volume: VolumeInfo, name: str) -> str:
        """
        Take a disk-only domain snapshot ``name`` of the disk that holds ``volume`` (the
        other disks are left out; the test driver captures them all). Return ``name``.

        A disk holds a volume when its ``<serial>``, its source file name without
        extension, its ``ua-`` alias or its target device equals the volume id.
        """
        mark = VOLUME_SNAPSHOT_OF + volume.id
        self._create(vm, name, memory=False, quiesce=False, volumes=[volume], description=mark)
        return name

    def held_snapshots(self, vm: VmInfo) -> list[str] | None:
        """
        The domain's snapshots that are not volume snapshots (``reconcile``).
        """
        return [n for n, d in self._listed(vm) if not d.startswith(VOLUME_SNAPSHOT_OF)]

    def held_volume_snapshots(self, vm: VmInfo, volume: VolumeInfo) -> list[str] | None:
        """
        The domain's snapshots taken as volume snapshots of ``volume`` (``reconcile``).
        """
        return [n for n, d in self._listed(vm) if d == VOLUME_SNAPSHOT_OF + volume.id]

    def _listed(self, vm: VmInfo) -> list[tuple[str, str]]:
        return self._call("listAllSnapshots", vm, lambda dom, _: named_snapshots(dom))

    def delete_volume_snapshot(self, vm: VmInfo, volume: VolumeInfo, name: str) -> None:
        """
        Delete the volume snapshot ``name``; one already gone is fine.
        """
        self._delete(vm, name)

    def _is_active(self, vm: VmInfo) -> bool:
        return self._call("isActive", vm, lambda dom, _: bool(dom.isActive()))

    def _thaw(self, vm: VmInfo) -> str:
        try:
            count = self._call("fsThaw", vm, lambda dom, _: int(dom.fsThaw()))
        except DriverError as e:
            if e.code == str(libvirt.VIR_ERR_OPERATION_INVALID) and not self._is_active(vm):
                return "domain is not running: nothing to thaw"
            raise
        done = f"fsThaw thawed {count} filesystems"
        if not self._disk_only:
            return done
        status = self._call(
            "guest-fsfreeze-status", vm, lambda dom, _: freeze_status(dom, self.agent_timeout_s)
        )
        if status == "frozen":
            raise DriverError(
                f"{done}, but the guest agent still reports its filesystems frozen", STILL_FROZEN
            )
        return f"{done}; guest agent reports {status}"

    def _thaw_after_failure(self, vm: VmInfo) -> str:
        try:
            return f"guest thawed ({self._thaw(vm)})"
        except DriverError as e:
            return f"thawing the guest failed too: {e.message}"

    def _create(
        self,
        vm: VmInfo,
        name: str,
        *,
        memory: bool,
        quiesce: bool,
        volumes: Sequence[VolumeInfo] | None = None,
        description: str | None = None,
    ) -> str:
        # volumes: capture only their disks (None: every disk).
        def create(dom: Any, retried: bool) -> str:
            if retried:
                # The lost call may have made it: the name belongs to this snapshot.
                existing = find_snapshot(dom, name)
                if existing is not None:
                    return describe(existing, "found after reconnecting")
            xml = str(dom.XMLDesc(0))
            disks = disk_targets(xml)
            only = None if volumes is None else [disk_holding(vm, xml, v, disks) for v in volumes]
            flags, request = snapshot_request(
                name,
                description=description,
                active=bool(dom.isActive()),
                memory=memory,
                quiesce=quiesce,
                disk_only=self._disk_only,
                disks=disks if only is not None else (),
                only=only,
            )
            return describe(dom.snapshotCreateXML(request, flags), flag_names(flags))

        return self._call(f"snapshotCreateXML {name}", vm, create)

    def _delete(self, vm: VmInfo, name: str) -> bool:
        def delete(dom: Any, _: bool) -> bool:
            snap = find_snapshot(dom, name)
            if snap is None:
                return False
            try:
                snap.delete()
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    return False
                raise
            return True

        return self._call(f"delete snapshot {name}", vm, delete)
