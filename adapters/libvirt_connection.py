"""
One libvirt connection per hypervisor: opened on first use, reopened once when found
dead (ADR 0007); libvirt errors become DriverErrors.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, Self, TypeVar

import libvirt

from vmsnap.adapters.libvirt_xml import disk_for
from vmsnap.domain.exceptions import DriverError
from vmsnap.domain.values import VmInfo, VolumeInfo

_T = TypeVar("_T")

#: The DriverError code when no disk of the domain holds the volume (not a libvirt code).
NO_DISK = "no-disk"

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

_quiet_lock = threading.Lock()
_quieted = False


class LibvirtConnection:
    """
    A libvirt URI and its connection. Every libvirt error of :meth:`_call` becomes a
    :class:`DriverError` carrying libvirt's message and its error code
    (``str(err.get_error_code())``).

    Args:
        name: the hypervisor's name in the config.
        uri: the libvirt URI, e.g. ``qemu:///system`` or ``test:///default``.
        quiet: stop libvirt's default error handler from printing every error on
            standard error (a process-wide libvirt setting; the errors are still raised).
    """

    def __init__(self, name: str, uri: str, *, quiet: bool = True) -> None:
        self.name = name
        self.uri = uri
        self._quiet = quiet
        self._lock = threading.Lock()
        self._conn: Any = None
        #: False on libvirt's test driver, which has no disk-only snapshots, no QEMU
        #: and no guest agent.
        self._disk_only = True

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

    def _call(self, what: str, vm: VmInfo, fn: Callable[[Any, bool], _T]) -> _T:
        # fn(domain, retried): retried is True on the one retry after a lost connection.
        for retried in (False, True):
            try:
                conn = self.connection()
            except libvirt.libvirtError as e:
                raise self._error(f"connect to {self.uri}", vm, e) from None
            try:
                return fn(lookup(conn, domain_name(vm)), retried)
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
            f"libvirt {self.name} ({self.uri}), domain {domain_name(vm)}: {what}: {message}",
            code=str(err.get_error_code()),
        )


def lookup(conn: Any, name: str) -> Any:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN or not _looks_like_uuid(name):
            raise
        return conn.lookupByUUIDString(name)


def domain_name(vm: VmInfo) -> str:
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


def find_snapshot(dom: Any, name: str) -> Any:
    """The domain snapshot ``name``, or None when the domain has none of that name."""
    try:
        return dom.snapshotLookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            return None
        raise


def disk_holding(vm: VmInfo, domain_xml: str, volume: VolumeInfo, disks: Sequence[str]) -> str:
    """The target dev of the domain's disk that holds ``volume``; DriverError NO_DISK if none."""
    disk = disk_for(domain_xml, volume)
    if disk is None:
        raise DriverError(
            f"domain {domain_name(vm)} has no disk holding volume {volume.id}"
            f" (looked at the serial, source file name, ua- alias and target of"
            f" disks {', '.join(disks) or 'none'})",
            NO_DISK,
        )
    return disk
