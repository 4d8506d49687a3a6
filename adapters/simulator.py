"""
The simulator hypervisor and storage (like CloudStack's simulator): a simulated world in a
SQLite file that several processes, threads and tests share.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs

from vmsnap.domain.exceptions import ConfigError, DriverError
from vmsnap.domain.ports import Hypervisor, StorageDriver
from vmsnap.domain.values import (
    Capabilities,
    HypervisorSnapshot,
    PoolInfo,
    QuiesceResult,
    SnapshotRef,
    VmInfo,
    VolumeInfo,
    temporary_name,
)

PROFILES = ("vmware", "xenserver", "kvm")
BUSY_TIMEOUT_S = 30.0

_R = TypeVar("_R")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS vms (
        vm_id TEXT PRIMARY KEY,
        frozen INTEGER NOT NULL DEFAULT 0,
        freeze_count INTEGER NOT NULL DEFAULT 0,
        thaw_count INTEGER NOT NULL DEFAULT 0)""",
    # seq keeps creation order; UNIQUE gives the (owner, name) lookups an index.
    """CREATE TABLE IF NOT EXISTS hv_snapshots (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        vm_id TEXT NOT NULL,
        name TEXT NOT NULL,
        UNIQUE (vm_id, name))""",
    "CREATE TABLE IF NOT EXISTS volumes (volume_id TEXT PRIMARY KEY, vm_id TEXT)",
    """CREATE TABLE IF NOT EXISTS vol_snapshots (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        volume_id TEXT NOT NULL,
        name TEXT NOT NULL,
        UNIQUE (volume_id, name))""",
    """CREATE TABLE IF NOT EXISTS calls (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        op TEXT NOT NULL,
        target TEXT NOT NULL,
        vm_id TEXT,
        volumes TEXT NOT NULL,
        ok INTEGER NOT NULL,
        result TEXT NOT NULL,
        error TEXT)""",
    "CREATE INDEX IF NOT EXISTS calls_by_vm ON calls (vm_id, seq)",
)


class _Refused(Exception):
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
                vms[vm_id] = _vm_dict(frozen, freezes, thaws)
            for vm_id, name in conn.execute("SELECT vm_id, name FROM hv_snapshots ORDER BY seq"):
                vms.setdefault(vm_id, _vm_dict(0, 0, 0))["hypervisor_snapshots"].append(name)
            volumes: dict[str, dict[str, Any]] = {
                vol_id: {"snapshots": []}
                for (vol_id,) in conn.execute("SELECT volume_id FROM volumes ORDER BY volume_id")
            }
            for vol_id, name in conn.execute(
                "SELECT volume_id, name FROM vol_snapshots ORDER BY seq"
            ):
                volumes.setdefault(vol_id, {"snapshots": []})["snapshots"].append(name)
            calls = [_call_dict(row) for row in conn.execute(_CALLS + " ORDER BY seq")]
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
            state = _vm_dict(*row)
            state["hypervisor_snapshots"] = _names(conn, "hv_snapshots", "vm_id", vm_id)
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
            return _names(conn, "hv_snapshots", "vm_id", vm_id)

    def volume_snapshots(self, volume_id: str) -> list[str]:
        """
        Return the names of the snapshots of ``volume_id``, oldest first.
        """
        with self._read() as conn:
            return _names(conn, "vol_snapshots", "volume_id", volume_id)

    def calls(self, vm_id: str | None = None) -> list[dict[str, Any]]:
        """
        Return the logged calls in order, all of them or those about ``vm_id``.
        """
        with self._read() as conn:
            if vm_id is None:
                rows = conn.execute(_CALLS + " ORDER BY seq").fetchall()
            else:
                rows = conn.execute(_CALLS + " WHERE vm_id = ? ORDER BY seq", (vm_id,)).fetchall()
        return [_call_dict(row) for row in rows]

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
                refused = _Refused(f"simulated failure: {op} on {target}", "SIMULATED")
            else:
                conn.execute("SAVEPOINT simulated_call")
                try:
                    value = apply(conn)
                except _Refused as e:
                    conn.execute("ROLLBACK TO simulated_call")
                    refused = e
                else:
                    conn.execute("RELEASE simulated_call")
                    result = value if encode is None else encode(value)
                    _log(conn, op, target, vm_id, volumes, True, result, None)
                    return value
            _log(conn, op, target, vm_id, volumes, False, None, refused.message)
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
            _retry_when_locked(lambda: _init(conn))
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


class SimulatorHypervisor(Hypervisor):
    """
    A simulated hypervisor that behaves as its ``profile`` says.

    ``vmware`` honours guest quiesce; ``xenserver`` ignores the quiesce option (its
    snapshots are crash-consistent, and the results say so); ``kvm`` quiesces by freezing
    the guest's filesystems, which must then be thawed.

    Args:
        name: the hypervisor's name (the ``target`` of its logged calls).
        profile: vmware | xenserver | kvm.
        world: the simulated world it acts on.
        faults: operation -> "fail", to make that operation fail.
        delay_s: operation -> seconds to sleep at the start of that operation.

    Raises:
        ConfigError: the profile is unknown.
    """

    def __init__(
        self,
        name: str,
        profile: str,
        world: SimulatorWorld,
        faults: Mapping[str, str] | None = None,
        delay_s: Mapping[str, float] | None = None,
    ) -> None:
        if profile not in PROFILES:
            raise ConfigError(
                f"hypervisor {name!r}: profile must be one of {', '.join(PROFILES)}"
                f" (got {profile!r})"
            )
        self.name = name
        self.profile = profile
        self.world = world
        self.faults = dict(faults or {})
        self.delay_s = dict(delay_s or {})

    def __repr__(self) -> str:
        return f"SimulatorHypervisor({self.name!r}, {self.profile!r}, {self.world!r})"

    def check_vm(self, vm: VmInfo) -> None:
        # The simulator knows every configured VM: the first sight registers it.
        self.world.register_vm(vm.id)

    def quiesce(self, vm: VmInfo, snapshot: SnapshotRef, *, memory: bool) -> QuiesceResult:
        temp = temporary_name(snapshot.name)

        def apply(conn: sqlite3.Connection) -> QuiesceResult:
            if _frozen(conn, vm.id):
                raise _Refused(f"vm {vm.id} is already frozen", "ALREADY_FROZEN")
            _add(conn, "hv_snapshots", "vm_id", vm.id, temp)
            if self.profile == "kvm" and snapshot.quiesce:
                _freeze(conn, vm.id)
                return QuiesceResult(
                    True, True, temp, f"KVM: guest filesystems frozen; snapshot {temp} taken"
                )
            return QuiesceResult(False, self._honours(snapshot), temp, self._detail(temp, snapshot))

        return self._call("quiesce", vm, apply, _quiesce_record)

    def unquiesce(
        self, vm: VmInfo, snapshot: SnapshotRef, *, thaw: bool, release: str | None
    ) -> str:
        def apply(conn: sqlite3.Connection) -> str:
            done = []
            if thaw:
                if _frozen(conn, vm.id):
                    conn.execute(
                        "UPDATE vms SET frozen = 0, thaw_count = thaw_count + 1 WHERE vm_id = ?",
                        (vm.id,),
                    )
                    done.append("guest thawed")
                else:
                    done.append("guest was not frozen")
            if release is not None:
                gone = _remove(conn, "hv_snapshots", "vm_id", vm.id, release)
                done.append(f"snapshot {release} " + ("released" if gone else "already gone"))
            return "; ".join(done) or "nothing to do"

        return self._call("unquiesce", vm, apply)

    def take_vm_snapshot(
        self, vm: VmInfo, snapshot: SnapshotRef, *, memory: bool
    ) -> HypervisorSnapshot:
        def apply(conn: sqlite3.Connection) -> HypervisorSnapshot:
            freezes = self.profile == "kvm" and snapshot.quiesce
            if freezes and _frozen(conn, vm.id):
                raise _Refused(f"vm {vm.id} is already frozen", "ALREADY_FROZEN")
            _add(conn, "hv_snapshots", "vm_id", vm.id, snapshot.name)
            if freezes:
                # The guest agent freezes and thaws around the snapshot, inside this call.
                _freeze(conn, vm.id)
                conn.execute(
                    "UPDATE vms SET frozen = 0, thaw_count = thaw_count + 1 WHERE vm_id = ?",
                    (vm.id,),
                )
                detail = f"KVM: guest frozen and thawed around snapshot {snapshot.name}"
            else:
                detail = self._detail(snapshot.name, snapshot)
            return HypervisorSnapshot(snapshot.name, self._honours(snapshot), memory, detail)

        return self._call("take_vm_snapshot", vm, apply, attrs.asdict)

    def revert_vm_snapshot(self, vm: VmInfo, name: str) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            if not _has(conn, "hv_snapshots", "vm_id", vm.id, name):
                raise _Refused(f"vm {vm.id} has no hypervisor snapshot {name}", "NOT_FOUND")

        self._call("revert_vm_snapshot", vm, apply)

    def delete_vm_snapshot(self, vm: VmInfo, name: str) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            _remove(conn, "hv_snapshots", "vm_id", vm.id, name)

        self._call("delete_vm_snapshot", vm, apply)

    def take_volume_snapshot(self, vm: VmInfo, volume: VolumeInfo, name: str) -> str:
        def apply(conn: sqlite3.Connection) -> str:
            _add_volume(conn, volume)
            _add(conn, "vol_snapshots", "volume_id", volume.id, name)
            return name

        return self._call("take_volume_snapshot", vm, apply, volumes=[volume.id])

    def delete_volume_snapshot(self, vm: VmInfo, volume: VolumeInfo, name: str) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            _remove(conn, "vol_snapshots", "volume_id", volume.id, name)

        self._call("delete_volume_snapshot", vm, apply, volumes=[volume.id])

    def _honours(self, snapshot: SnapshotRef) -> bool:
        return snapshot.quiesce and self.profile != "xenserver"

    def _detail(self, name: str, snapshot: SnapshotRef) -> str:
        if not snapshot.quiesce:
            return f"{self.profile}: snapshot {name} taken without quiesce (crash-consistent)"
        if self.profile == "xenserver":
            return f"XenServer ignores the quiesce option: snapshot {name} is crash-consistent"
        return f"VMware: snapshot {name} taken with guest quiesce; base disks are stable"

    def _call(
        self,
        op: str,
        vm: VmInfo,
        apply: Callable[[sqlite3.Connection], _R],
        encode: Callable[[_R], Any] | None = None,
        volumes: Sequence[str] = (),
    ) -> _R:
        def apply_to_vm(conn: sqlite3.Connection) -> _R:
            conn.execute("INSERT OR IGNORE INTO vms (vm_id) VALUES (?)", (vm.id,))
            return apply(conn)

        return self.world._call(
            op, self.name, vm.id, volumes, self.faults, self.delay_s, apply_to_vm, encode
        )


class SimulatorStorage(StorageDriver):
    """
    A simulated vendor storage pool with configurable capabilities and answers.

    Args:
        pool: the pool it serves (its id is the ``target`` of its logged calls).
        world: the simulated world it acts on.
        capabilities: what the pool advertises.
        need_unquiesce: what :meth:`take_vm_snapshot` answers (True: it captured its
            volumes itself, so the VM's temporary hypervisor snapshot may be released).
        faults: operation -> "fail", to make that operation fail.
        delay_s: operation -> seconds to sleep at the start of that operation.
    """

    driver = "simulator"

    def __init__(
        self,
        pool: PoolInfo,
        world: SimulatorWorld,
        capabilities: Capabilities,
        need_unquiesce: bool = True,
        faults: Mapping[str, str] | None = None,
        delay_s: Mapping[str, float] | None = None,
    ) -> None:
        self.pool = pool
        self.world = world
        self._capabilities = capabilities
        self.need_unquiesce = need_unquiesce
        self.faults = dict(faults or {})
        self.delay_s = dict(delay_s or {})

    def __repr__(self) -> str:
        return f"SimulatorStorage({self.pool.id!r}, {self.world!r})"

    def capabilities(self) -> Capabilities:
        return self._capabilities

    def take_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            for vol in volumes:
                _add_volume(conn, vol)
                _add(conn, "vol_snapshots", "volume_id", vol.id, snapshot.name)
            return self.need_unquiesce

        return self._call("take_vm_snapshot", snapshot.vm_id, volumes, apply)

    def revert_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            for vol in volumes:
                if not _has(conn, "vol_snapshots", "volume_id", vol.id, snapshot.name):
                    raise _Refused(
                        f"volume {vol.id} has no snapshot {snapshot.name} on pool {self.pool.id}",
                        "NOT_FOUND",
                    )
            return True

        return self._call("revert_vm_snapshot", snapshot.vm_id, volumes, apply)

    def delete_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            for vol in volumes:
                _remove(conn, "vol_snapshots", "volume_id", vol.id, snapshot.name)
            return True

        return self._call("delete_vm_snapshot", snapshot.vm_id, volumes, apply)

    def take_snapshot(self, volume: VolumeInfo, name: str) -> str:
        def apply(conn: sqlite3.Connection) -> str:
            _add_volume(conn, volume)
            _add(conn, "vol_snapshots", "volume_id", volume.id, name)
            return name

        return self._call("take_snapshot", volume.vm_id, [volume], apply)

    def delete_snapshot(self, volume: VolumeInfo, name: str) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            _remove(conn, "vol_snapshots", "volume_id", volume.id, name)

        self._call("delete_snapshot", volume.vm_id, [volume], apply)

    def _call(
        self,
        op: str,
        vm_id: str,
        volumes: Sequence[VolumeInfo],
        apply: Callable[[sqlite3.Connection], _R],
    ) -> _R:
        ids = [v.id for v in volumes]
        return self.world._call(op, self.pool.id, vm_id, ids, self.faults, self.delay_s, apply)


# -- SQL helpers (table and column names are module constants, never user input) ----------

_CALLS = "SELECT op, target, vm_id, volumes, ok, result, error FROM calls"


def _sleep(seconds: float) -> None:
    # One place to sleep, so that tests can hold a call in flight deterministically.
    time.sleep(seconds)


def _init(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    # A bad file fails here, with "file is not a database".
    if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
        raise sqlite3.DatabaseError("cannot switch to WAL mode")
    conn.execute("PRAGMA synchronous = NORMAL")  # durable enough for a simulated world
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            conn.execute(statement)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _retry_when_locked(action: Callable[[], None]) -> None:
    # Switching a fresh file to WAL can answer "locked" at once, without the busy handler,
    # when another process creates the same world at the same moment.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextmanager
def _store_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as e:
        raise DriverError(f"simulator state {path}: {e}", code="SIMULATOR_STORE") from e


def _vm_dict(frozen: int, freezes: int, thaws: int) -> dict[str, Any]:
    return {
        "frozen": bool(frozen),
        "freeze_count": freezes,
        "thaw_count": thaws,
        "hypervisor_snapshots": [],
    }


def _call_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    op, target, vm_id, volumes, ok, result, error = row
    return {
        "op": op,
        "target": target,
        "vm_id": vm_id,
        "volumes": json.loads(volumes),
        "ok": bool(ok),
        "result": json.loads(result),
        "error": error,
    }


def _log(
    conn: sqlite3.Connection,
    op: str,
    target: str,
    vm_id: str | None,
    volumes: Sequence[str],
    ok: bool,
    result: Any,
    error: str | None,
) -> None:
    conn.execute(
        "INSERT INTO calls (op, target, vm_id, volumes, ok, result, error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (op, target, vm_id, json.dumps(list(volumes)), ok, json.dumps(result), error),
    )


def _names(conn: sqlite3.Connection, table: str, owner: str, owner_id: str) -> list[str]:
    sql = f"SELECT name FROM {table} WHERE {owner} = ? ORDER BY seq"
    return [name for (name,) in conn.execute(sql, (owner_id,))]


def _has(conn: sqlite3.Connection, table: str, owner: str, owner_id: str, name: str) -> bool:
    sql = f"SELECT 1 FROM {table} WHERE {owner} = ? AND name = ?"
    return conn.execute(sql, (owner_id, name)).fetchone() is not None


def _add(conn: sqlite3.Connection, table: str, owner: str, owner_id: str, name: str) -> None:
    # Taking a snapshot that exists already keeps it: retries find the same object.
    sql = f"INSERT OR IGNORE INTO {table} ({owner}, name) VALUES (?, ?)"
    conn.execute(sql, (owner_id, name))


def _remove(conn: sqlite3.Connection, table: str, owner: str, owner_id: str, name: str) -> bool:
    sql = f"DELETE FROM {table} WHERE {owner} = ? AND name = ?"
    return conn.execute(sql, (owner_id, name)).rowcount > 0


def _add_volume(conn: sqlite3.Connection, volume: VolumeInfo) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO volumes (volume_id, vm_id) VALUES (?, ?)",
        (volume.id, volume.vm_id),
    )


def _frozen(conn: sqlite3.Connection, vm_id: str) -> bool:
    row = conn.execute("SELECT frozen FROM vms WHERE vm_id = ?", (vm_id,)).fetchone()
    return row is not None and bool(row[0])


def _freeze(conn: sqlite3.Connection, vm_id: str) -> None:
    conn.execute(
        "UPDATE vms SET frozen = 1, freeze_count = freeze_count + 1 WHERE vm_id = ?", (vm_id,)
    )


def _quiesce_record(result: QuiesceResult) -> dict[str, Any]:
    # The guest-agent fields (ADR 0016) are never set here: keep the call log's shape.
    return attrs.asdict(
        result,
        filter=lambda field, value: (
            value is not None or field.name not in ("filesystems_frozen", "crash_reason")
        ),
    )
