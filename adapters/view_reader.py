"""
Read-only queries on an SQLite store's view tables that need neither eventsourcing nor
the domain, so a CLI list starts in a fraction of the time (ADR 0015).

Answers only when it is sure: the file exists, the views are current with the log, the
tables have the shape ``adapters/view_store.py`` creates. Otherwise it answers ``None`` and
the caller takes the full path through the Controller, which catches up first.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

EVENTS = "stored_events"  # eventsourcing.sqlite's events table
TRACKING = "view_tracking"


def sqlite_path(url: str, base: Path) -> Path | None:
    """
    The database file of a ``sqlite:///…`` store URL (relative to ``base``); ``None`` for
    any other form.
    """
    if not url.startswith("sqlite:///"):
        return None
    rest = Path(url[len("sqlite:///") :])
    return rest if rest.is_absolute() else base / rest


def current_vm_snapshots(
    path: Path, where: dict[str, str], exclude_state: str | None
) -> list[dict[str, Any]] | None:
    """
    The ``vm_snapshots`` view rows matching ``where`` (``vm_id``, ``state``), in creation
    order, without those in ``exclude_state``; ``None`` unless the views are current.
    """
    if not path.is_file() or not set(where) <= {"vm_id", "state"}:
        return None
    clauses = [f"{col}=?" for col in where]
    params: list[Any] = list(where.values())
    if exclude_state is not None:
        clauses.append("state!=?")
        params.append(exclude_state)
    sql = "SELECT doc FROM view_vm_snapshots"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    try:
        # mode=rw: never create a database that is not there.
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=10)
    except sqlite3.Error:
        return None
    try:
        conn.execute("BEGIN")  # one snapshot of the database for the check and the read
        (position,) = conn.execute(f"SELECT position FROM {TRACKING} WHERE name='views'").fetchone()
        (last,) = conn.execute(f"SELECT MAX(rowid) FROM {EVENTS}").fetchone()
        if int(position) < int(last or 0):
            return None
        rows = conn.execute(sql + " ORDER BY seq", params).fetchall()
        return [dict(json.loads(doc)) for (doc,) in rows]
    except (sqlite3.Error, TypeError, ValueError):
        return None
    finally:
        conn.close()
