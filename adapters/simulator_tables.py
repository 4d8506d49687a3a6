"""
The simulated world's tables: its schema and the SQL each simulated call runs (table and
column names are module constants, never user input).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from vmsnap.domain.values import VolumeInfo

BUSY_TIMEOUT_S = 30.0

SCHEMA = (
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


CALLS = "SELECT op, target, vm_id, volumes, ok, result, error FROM calls"


def init_tables(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    # A bad file fails here, with "file is not a database".
    if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
        raise sqlite3.DatabaseError("cannot switch to WAL mode")
    conn.execute("PRAGMA synchronous = NORMAL")  # durable enough for a simulated world
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA:
            conn.execute(statement)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def retry_when_locked(action: Callable[[], None]) -> None:
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


def vm_dict(frozen: int, freezes: int, thaws: int) -> dict[str, Any]:
    return {
        "frozen": bool(frozen),
        "freeze_count": freezes,
        "thaw_count": thaws,
        "hypervisor_snapshots": [],
    }


def call_dict(row: tuple[Any, ...]) -> dict[str, Any]:
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


def log_call(
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


def names(conn: sqlite3.Connection, table: str, owner: str, owner_id: str) -> list[str]:
    sql = f"SELECT name FROM {table} WHERE {owner} = ? ORDER BY seq"
    return [name for (name,) in conn.execute(sql, (owner_id,))]


def has_name(conn: sqlite3.Connection, table: str, owner: str, owner_id: str, name: str) -> bool:
    sql = f"SELECT 1 FROM {table} WHERE {owner} = ? AND name = ?"
    return conn.execute(sql, (owner_id, name)).fetchone() is not None


def add_name(conn: sqlite3.Connection, table: str, owner: str, owner_id: str, name: str) -> None:
    # Taking a snapshot that exists already keeps it: retries find the same object.
    sql = f"INSERT OR IGNORE INTO {table} ({owner}, name) VALUES (?, ?)"
    conn.execute(sql, (owner_id, name))


def remove_name(conn: sqlite3.Connection, table: str, owner: str, owner_id: str, name: str) -> bool:
    sql = f"DELETE FROM {table} WHERE {owner} = ? AND name = ?"
    return conn.execute(sql, (owner_id, name)).rowcount > 0


def add_volume(conn: sqlite3.Connection, volume: VolumeInfo) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO volumes (volume_id, vm_id) VALUES (?, ?)",
        (volume.id, volume.vm_id),
    )


def is_frozen(conn: sqlite3.Connection, vm_id: str) -> bool:
    row = conn.execute("SELECT frozen FROM vms WHERE vm_id = ?", (vm_id,)).fetchone()
    return row is not None and bool(row[0])


def freeze(conn: sqlite3.Connection, vm_id: str) -> None:
    conn.execute(
        "UPDATE vms SET frozen = 1, freeze_count = freeze_count + 1 WHERE vm_id = ?", (vm_id,)
    )
