"""
The libvirt hypervisor (KVM/QEMU semantics): guest filesystem freeze and thaw through the
guest agent, and libvirt domain snapshots (ADR 0007).
"""

from __future__ import annotations

import contextlib
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import Any, Self, TypeVar

import attrs
import libvirt

from vmsnap.domain.exceptions import DriverError, InvalidRequest
from vmsnap.domain.ports import Hypervisor
from vmsnap.domain.values import (
    HypervisorSnapshot,
    QuiesceResult,
    SnapshotRef,
    VmInfo,
    VolumeInfo,
    temporary_name,
)

_T = TypeVar("_T")

#: Error codes that mean "the connection may be gone" when the connection is not alive.
_LOST_CODES = frozenset(
    {
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INTERNAL_ERROR,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_RPC,
    }
)
_FLAG_NAMES = (
    (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY, "DISK_ONLY"),
    (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE, "QUIESCE"),
    (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC, "ATOMIC"),
)
#: The DriverError code when no disk of the domain holds the volume (not a libvirt code).
NO_DISK = "no-disk"

_quiet_lock = threading.Lock()
_quieted = False


class LibvirtHypervisor(Hypervisor):
    """
    A libvirt host, driven as KVM/QEMU: quiesce is a guest filesystem freeze
    (``fsFreeze``, the thaw is mandatory) plus a temporary disk-only snapshot; VM
    snapshots are ``snapshotCreateXML`` domain snapshots.

    The connection opens on first use; a connection found dead is reopened once and the
    call retried once. Every libvirt error becomes a :class:`DriverError` carrying
    libvirt's message and its error code (``str(err.get_error_code())``).

    On libvirt's test driver (``test:///...``), which has no disk-only snapshots, a
    disk-only snapshot is taken as the test driver's internal snapshot of every disk.

    Args:
        name: the hypervisor's name in the config.
        uri: the libvirt URI, e.g. ``qemu:///system`` or ``test:///default``.
        quiet: stop libvirt's default error handler from printing every error on
            standard error (a process-wide libvirt setting; the errors are still raised).
    """

    profile = "kvm"

    def __init__(self, name: str, uri: str, *, quiet: bool = True) -> None:
        self.name = name
        self.uri = uri
        self._quiet = quiet
        self._lock = threading.Lock()
        self._conn: Any = None
        self._disk_only = True

    def __repr__(self) -> str:
        return f"LibvirtHypervisor({self.name!r}, {self.uri!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connection(self) -> Any:
        """
        Return the open libvirt connection (a ``libvirt.virConnect``), opening it if needed.

        Raises:
            libvirt.libvirtError: the connection cannot be opened.
        """
        with self._lock:
            if self._conn is not None and not _alive(self._conn):
                _close(self._conn)
                self._conn = None
            if self._conn is None:
                _quiet_libvirt(self._quiet)
                conn = libvirt.open(self.uri)
                self._disk_only = str(conn.getType()).upper() != "TEST"
                self._conn = conn
            return self._conn

    def close(self) -> None:
        """
        Close the connection, if open; the next call opens a new one.
        """
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            _close(conn)

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
                    f" {_domain_name(vm)!r}"
                ) from None
            raise InvalidRequest(
                f"vm {vm.id}: cannot use hypervisor {self.name} ({self.uri}): {e.message}"
            ) from None

    def quiesce(self, vm: VmInfo, snapshot: SnapshotRef, *, memory: bool) -> QuiesceResult:
        """
        Freeze the guest's filesystems when ``snapshot.quiesce`` asks and the domain runs,
        then take the temporary disk-only snapshot ``<name>-quiesce``. If that snapshot
        fails, the guest is thawed before the error is raised.
        """
        temp = temporary_name(snapshot.name)
        notes: list[str] = []
        frozen = False
        count = 0
        if snapshot.quiesce:
            if self._is_active(vm):
                try:
                    count = self._call("fsFreeze", vm, lambda dom, _: int(dom.fsFreeze()))
                except DriverError as e:
                    raise DriverError(
                        f"{e.message}; {self._thaw_after_failure(vm)}", e.code
                    ) from None
                frozen = True
                notes.append(f"fsFreeze froze {count} filesystems")
            else:
                notes.append("domain is not running: no guest to freeze (its disks are at rest)")
        if memory:
            notes.append("memory not captured: the quiesce snapshot is disk-only")
        try:
            recorded = self._create(vm, temp, memory=False, quiesce=False)
        except DriverError as e:
            if not frozen:
                raise
            raise DriverError(f"{e.message}; {self._thaw_after_failure(vm)}", e.code) from None
        how = "while the guest was frozen" if frozen else "without freezing (crash-consistent)"
        notes.append(f"temporary snapshot {temp} taken {how}: {recorded}")
        return QuiesceResult(
            frozen=frozen,
            quiesced=frozen and count > 0,
            hypervisor_snapshot=temp,
            detail="; ".join(notes),
        )

    def unquiesce(
        self, vm: VmInfo, snapshot: SnapshotRef, *, thaw: bool, release: str | None
    ) -> str:
        """
        Thaw the guest (``fsThaw``) when ``thaw``, then delete the temporary snapshot
        ``release`` when given (one already gone is fine). Both are tried even if the other
        fails; any failure is raised afterwards.
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
        self._create(vm, name, memory=False, quiesce=False, volume=volume)
        return name

    def delete_volume_snapshot(self, vm: VmInfo, volume: VolumeInfo, name: str) -> None:
        """
        Delete the volume snapshot ``name``; one already gone is fine.
        """
        self._delete(vm, name)

    def _call(self, what: str, vm: VmInfo, fn: Callable[[Any, bool], _T]) -> _T:
        # fn(domain, retried): retried is True on the one retry after a lost connection.
        for retried in (False, True):
            try:
                conn = self.connection()
            except libvirt.libvirtError as e:
                raise self._error(f"connect to {self.uri}", vm, e) from None
            try:
                return fn(_lookup(conn, _domain_name(vm)), retried)
            except libvirt.libvirtError as e:
                if retried or e.get_error_code() not in _LOST_CODES or _alive(conn):
                    raise self._error(what, vm, e) from None
            with self._lock:
                if self._conn is conn:
                    self._conn = None
            _close(conn)
        raise AssertionError("unreachable")

    def _error(self, what: str, vm: VmInfo, err: Any) -> DriverError:
        message = err.get_error_message() or str(err)
        return DriverError(
            f"libvirt {self.name} ({self.uri}), domain {_domain_name(vm)}: {what}: {message}",
            code=str(err.get_error_code()),
        )

    def _is_active(self, vm: VmInfo) -> bool:
        return self._call("isActive", vm, lambda dom, _: bool(dom.isActive()))

    def _thaw(self, vm: VmInfo) -> str:
        try:
            count = self._call("fsThaw", vm, lambda dom, _: int(dom.fsThaw()))
        except DriverError as e:
            if e.code == str(libvirt.VIR_ERR_OPERATION_INVALID) and not self._is_active(vm):
                return "domain is not running: nothing to thaw"
            raise
        return f"fsThaw thawed {count} filesystems"

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
        volume: VolumeInfo | None = None,
    ) -> str:
        def create(dom: Any, retried: bool) -> str:
            if retried:
                # The lost call may have made it: the name belongs to this snapshot.
                existing = _find_snapshot(dom, name)
                if existing is not None:
                    return _describe(existing, "found after reconnecting")
            disk: str | None = None
            disks: list[str] = []
            if volume is not None:
                xml = str(dom.XMLDesc(0))
                disk = disk_for(xml, volume)
                disks = [d.target for d in _disks(xml)]
                if disk is None:
                    raise DriverError(
                        f"domain {_domain_name(vm)} has no disk holding volume {volume.id}"
                        f" (looked at the serial, source file name, ua- alias and target of"
                        f" disks {', '.join(disks) or 'none'})",
                        NO_DISK,
                    )
            flags, request = snapshot_request(
                name,
                active=bool(dom.isActive()),
                memory=memory,
                quiesce=quiesce,
                disk_only=self._disk_only,
                disk=disk,
                disks=disks,
            )
            return _describe(dom.snapshotCreateXML(request, flags), _flag_names(flags))

        return self._call(f"snapshotCreateXML {name}", vm, create)

    def _delete(self, vm: VmInfo, name: str) -> bool:
        def delete(dom: Any, _: bool) -> bool:
            snap = _find_snapshot(dom, name)
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


def snapshot_request(
    name: str,
    *,
    active: bool,
    memory: bool,
    quiesce: bool,
    disk_only: bool,
    disk: str | None = None,
    disks: Sequence[str] = (),
) -> tuple[int, str]:
    """
    Return the flags and the ``<domainsnapshot>`` XML vmsnap gives ``snapshotCreateXML``.

    Args:
        name: the snapshot's name.
        active: whether the domain runs.
        memory: save the running guest's memory (an internal full-system snapshot).
        quiesce: ask for QUIESCE (guest freeze and thaw around the snapshot).
        disk_only: whether the driver has disk-only snapshots (QEMU does; the test driver
            does not, and then takes internal snapshots of every disk).
        disk: capture only this disk (target dev), for a volume snapshot.
        disks: every disk of the domain (the others are marked ``snapshot='no'``).
    """
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    flags = 0
    external = active and not memory and disk_only
    if external:
        # A running QEMU guest: disk-only means external overlays (libvirt names them).
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
    elif not (active and memory):
        ET.SubElement(root, "memory", snapshot="no")
    if quiesce:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
    if disk is not None:
        element = ET.SubElement(root, "disks")
        ET.SubElement(element, "disk", name=disk, snapshot="external" if external else "internal")
        if disk_only:
            for other in disks:
                if other != disk:
                    ET.SubElement(element, "disk", name=other, snapshot="no")
    return flags, ET.tostring(root, encoding="unicode")


def disk_for(domain_xml: str, volume: VolumeInfo) -> str | None:
    """
    Return the target dev of the disk that holds ``volume`` in a domain's XML, or None.

    A disk whose ``<serial>`` is the volume id wins; otherwise the first disk whose source
    file (or block device, network name, pool volume) is named ``<volume-id>[.ext]``,
    whose alias is ``ua-<volume-id>``, or whose target dev is the volume id.
    """
    disks = _disks(domain_xml)
    for d in disks:
        if d.serial == volume.id:
            return d.target
    return next((d.target for d in disks if volume.id in d.keys), None)


@attrs.frozen
class _Disk:
    target: str
    serial: str | None
    keys: frozenset[str]


def _disks(domain_xml: str) -> list[_Disk]:
    out = []
    for disk in ET.fromstring(domain_xml).iterfind("./devices/disk"):
        target = disk.find("target")
        dev = "" if target is None else str(target.get("dev", ""))
        if disk.get("device", "disk") != "disk" or not dev:
            continue
        keys = {dev}
        source = disk.find("source")
        if source is not None:
            for attr in ("file", "dev", "name", "volume"):
                if source.get(attr):
                    keys.add(PurePosixPath(str(source.get(attr))).stem)
        alias = disk.find("alias")
        alias_name = "" if alias is None else str(alias.get("name", ""))
        if alias_name.startswith("ua-"):
            keys.add(alias_name[3:])
        out.append(_Disk(dev, disk.findtext("serial"), frozenset(keys)))
    return out


def _lookup(conn: Any, name: str) -> Any:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN or not _looks_like_uuid(name):
            raise
        return conn.lookupByUUIDString(name)


def _find_snapshot(dom: Any, name: str) -> Any:
    try:
        return dom.snapshotLookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            return None
        raise


def _describe(snap: Any, how: str) -> str:
    root = ET.fromstring(snap.getXMLDesc(0))
    memory = root.find("memory")
    disks = ",".join(f"{d.get('name')}={d.get('snapshot')}" for d in root.iterfind("./disks/disk"))
    return (
        f"snapshot {snap.getName()} ({how}): libvirt recorded state={root.findtext('state')}"
        f" memory={None if memory is None else memory.get('snapshot')} disks {disks or 'none'}"
    )


def _flag_names(flags: int) -> str:
    names = [label for flag, label in _FLAG_NAMES if flags & flag]
    return "flags " + ("|".join(names) if names else "none")


def _domain_name(vm: VmInfo) -> str:
    return vm.domain or vm.id


def _looks_like_uuid(name: str) -> bool:
    return len(name) == 36 and name.count("-") == 4


def _alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive() == 1)
    except libvirt.libvirtError:
        return False


def _close(conn: Any) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def _ignore_error(_ctx: object, _err: object) -> None:
    return None


def _quiet_libvirt(quiet: bool) -> None:
    global _quieted
    if not quiet:
        return
    with _quiet_lock:
        if not _quieted:
            libvirt.registerErrorHandler(_ignore_error, None)
            _quieted = True
