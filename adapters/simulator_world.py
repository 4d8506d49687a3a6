"""
The simulated world of the simulator hypervisor and storage: a SQLite file that several
processes, threads and tests share, and the table operations the simulated calls use.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from vmsnap.adapters.simulator_tables import (
    BUSY_TIMEOUT_S,
    CALLS,
    call_dict,
    init_tables,
    log_call,
    names,
    retry_when_locked,
    vm_dict,
)
from vmsnap.domain.exceptions import ConfigError, DriverError

_R = TypeVar("_R")


class Refused(Exception):
    """A simulated call that the simulated backend refuses (logged, then a DriverError)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class SimulatorWorld:
    """
    The simulated world: VMs, hypervisor and volume snapshots, and the log of every call.

    It lives in a SQLite file (WAL mode) so that processes and threads share it, each call
    costs the same however large the world and its log grow, and readers never wait for a
    call in flight (delays are slept outside any transaction). An instance is safe to share
    between threads.

    Args:
        path: the world's file; created on first use. Its folder must exist.

    Raises:
        ConfigError: the folder is missing, or the file cannot be opened as a simulator world.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ConfigError(f"simulator state {self.path}: folder {self.path.parent} not found")
        if self.path.is_dir():
            raise ConfigError(f"simulator state {self.path} is a folder, not a file")
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        # Connections inherited through fork() are kept, never closed or used: closing
        # one in the child could release the parent's locks.
        self._inherited: list[sqlite3.Connection] = []
        with self._lock:
            self._connection()

    def __repr__(self) -> str:
        return f"SimulatorWorld({str(self.path)!r})"

    def __enter__(self) -> SimulatorWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """
        Close the connection; the next use opens a new one.
        """
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def show(self) -> dict[str, Any]:
        """
        Return the whole world in the contract's ``simulator show`` shape.
        """
        with self._read() as conn:
            vms: dict[str, dict[str, Any]] = {}
            for vm_id, frozen, freezes, thaws in conn.execute(
                "SELECT vm_id, frozen, freeze_count, thaw_count FROM vms ORDER BY vm_id"
            ):
                vms[vm_id] = vm_dict(frozen, freezes, thaws)
            for vm_id, name in conn.execute("SELECT vm_id, name FROM hv_snapshots ORDER BY seq"):
                vms.setdefault(vm_id, vm_dict(0, 0, 0))["hypervisor_snapshots"].append(name)
            volumes: dict[str, dict[str, Any]] = {
                vol_id: {"snapshots": []}
                for (vol_id,) in conn.execute("SELECT volume_id FROM volumes ORDER BY volume_id")
            }
            for vol_id, name in conn.execute(
                "SELECT volume_id, name FROM vol_snapshots ORDER BY seq"
            ):
                volumes.setdefault(vol_id, {"snapshots": []})["snapshots"].append(name)
            calls = [call_dict(row) for row in conn.execute(CALLS + " ORDER BY seq")]
        return {"vms": vms, "volumes": volumes, "calls": calls}

    def vm_state(self, vm_id: str) -> dict[str, Any] | None:
        """
        Return one VM as :meth:`show` lists it, or None if the world has never seen it.
        """
        with self._read() as conn:
            row = conn.execute(
                "SELECT frozen, freeze_count, thaw_count FROM vms WHERE vm_id = ?", (vm_id,)
            ).fetchone()
            if row is None:
                return None
            state = vm_dict(*row)
            state["hypervisor_snapshots"] = names(conn, "hv_snapshots", "vm_id", vm_id)
        return state

    def is_frozen(self, vm_id: str) -> bool:
        """
        Return whether the guest of ``vm_id`` is frozen now.
        """
        with self._read() as conn:
            row = conn.execute("SELECT frozen FROM vms WHERE vm_id = ?", (vm_id,)).fetchone()
        return row is not None and bool(row[0])

    def hypervisor_snapshots(self, vm_id: str) -> list[str]:
        """
        Return the names of the hypervisor snapshots of ``vm_id``, oldest first.
        """
        with self._read() as conn:
            return names(conn, "hv_snapshots", "vm_id", vm_id)

    def volume_snapshots(self, volume_id: str) -> list[str]:
        """
        Return the names of the snapshots of ``volume_id``, oldest first.
        """
        with self._read() as conn:
            return names(conn, "vol_snapshots", "volume_id", volume_id)

    def calls(self, vm_id: str | None = None) -> list[dict[str, Any]]:
        """
        Return the logged calls in order, all of them or those about ``vm_id``.
        """
        with self._read() as conn:
            if vm_id is None:
                rows = conn.execute(CALLS + " ORDER BY seq").fetchall()
            else:
                rows = conn.execute(CALLS + " WHERE vm_id = ? ORDER BY seq", (vm_id,)).fetchall()
        return [call_dict(row) for row in rows]

    # -- used by the simulated hypervisor and storage --------------------------------------

    def register_vm(self, vm_id: str) -> None:
        """
        Add ``vm_id`` to the world (not frozen, no snapshots) unless it is there already.
        """
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO vms (vm_id) VALUES (?)", (vm_id,))

    def _call(
        self,
        op: str,
        target: str,
        vm_id: str | None,
        volumes: Sequence[str],
        faults: Mapping[str, str],
        delay_s: Mapping[str, float],
        apply: Callable[[sqlite3.Connection], _R],
        encode: Callable[[_R], Any] | None = None,
    ) -> _R:
        """
        Run one simulated call: sleep its delay, then apply it and log it in one transaction.

        Raises:
            DriverError: a fault is injected for ``op``, or ``apply`` refused the call; the
                call is logged with ``ok`` false and the world is left as it was.
        """
        delay = delay_s.get(op, 0.0)
        if delay > 0:
            # Outside any transaction, so that readers and other calls go on meanwhile.
            _sleep(delay)
        with self._write() as conn:
            if faults.get(op) == "fail":
                refused = Refused(f"simulated failure: {op} on {target}", "SIMULATED")
            else:
                conn.execute("SAVEPOINT simulated_call")
                try:
                    value = apply(conn)
                except Refused as e:
                    conn.execute("ROLLBACK TO simulated_call")
                    refused = e
                else:
                    conn.execute("RELEASE simulated_call")
                    result = value if encode is None else encode(value)
                    log_call(conn, op, target, vm_id, volumes, True, result, None)
                    return value
            log_call(conn, op, target, vm_id, volumes, False, None, refused.message)
        raise DriverError(refused.message, code=refused.code)

    # -- connections and transactions ------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        # The caller holds self._lock.
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            self._inherited.append(self._conn)
        self._conn = self._open()
        self._pid = os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,  # transactions are begun explicitly
                check_same_thread=False,  # one connection per instance, guarded by _lock
            )
        except sqlite3.Error as e:
            raise ConfigError(f"cannot open simulator state {self.path}: {e}") from None
        try:
            retry_when_locked(lambda: init_tables(conn))
        except sqlite3.DatabaseError as e:
            conn.close()
            raise ConfigError(
                f"simulator state {self.path} cannot be used as a simulator world "
                f"(a SQLite database): {e}"
            ) from None
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _store_errors(self.path):
            conn = self._connection()
            # IMMEDIATE takes the write lock up front: a read-modify-write never deadlocks
            # with another process upgrading its own read.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _store_errors(self.path):
            conn = self._connection()
            conn.execute("BEGIN")  # one consistent view across the tables (WAL: no waiting)
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")


def _sleep(seconds: float) -> None:
    # One place to sleep, so that tests can hold a call in flight deterministically.
    time.sleep(seconds)


@contextmanager
def _store_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as e:
        raise DriverError(f"simulator state {path}: {e}", code="SIMULATOR_STORE") from e
