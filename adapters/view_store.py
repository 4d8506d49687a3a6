"""
View tables in the store's own database, kept current by a poller over the notification
log that writes rows and its tracking position in one transaction (eventsourcing's
ProjectionRunner needs subscriptions, which SQLite lacks).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import Notification, PersistenceError

from vmsnap.adapters.chain import events_page
from vmsnap.adapters.decoding import fast_event
from vmsnap.adapters.json_text import dumps_sorted
from vmsnap.adapters.sealing import Sealer
from vmsnap.adapters.store import PAGE, EventLog, store_failure
from vmsnap.domain.exceptions import StoreError
from vmsnap.projections.cached_rows import CachedRows
from vmsnap.projections.rows import TABLES, Doc, MemoryRows

TRACKING = "view_tracking"
Projector = Callable[[Any, Any, int], None]


class ViewStore(Protocol):
    """
    The stored views the Controller and the audit use: ``SqliteViews`` or, on
    PostgreSQL, ``pg_view_store.PostgresViews`` (the same poller and queries).
    """

    def catch_up(self) -> int: ...
    def rebuild(self) -> int: ...
    def position(self) -> int: ...
    def get(self, table: str, key: str) -> Doc | None: ...
    def select(
        self, table: str, where: dict[str, Any], exclude_state: str | None = None
    ) -> list[Doc]: ...
    def dump(self) -> MemoryRows: ...


def open_views(log: EventLog, project: Projector, *, migrate: bool = False) -> ViewStore:
    """
    The views in ``log``'s own database; on PostgreSQL only a migration creates them.
    """
    if log.on_postgres:
        from vmsnap.adapters.pg_view_store import PostgresViews

        return PostgresViews(log, project, migrate=migrate)
    return SqliteViews(log, project)


def _notification(row: Any) -> Notification:
    # A row of chain.events_page: (rowid, originator id, version, topic, state).
    return Notification(
        id=row[0], originator_id=UUID(row[1]), originator_version=row[2], topic=row[3], state=row[4]
    )


def _table(name: str) -> str:
    return f"view_{name}"


@contextmanager
def _store_errors() -> Iterator[None]:
    # As on PostgreSQL (pg_view_store): a view read or write the store refuses (locked past
    # its timeout, not a database) is a StoreError that says why.
    try:
        yield
    except (PersistenceError, sqlite3.Error) as e:
        raise StoreError(store_failure(e)) from None


def create_view_tables(c: Any) -> None:
    """The SQLite view tables of :data:`TABLES`, each row a JSON doc with indexed columns."""
    for table, cols in TABLES.items():
        extra = "".join(f", {col}" for col in cols)
        c.execute(
            f"CREATE TABLE IF NOT EXISTS {_table(table)} "
            f"(key TEXT PRIMARY KEY, seq INTEGER NOT NULL{extra}, doc TEXT NOT NULL)"
        )
        for col in cols:
            c.execute(
                f"CREATE INDEX IF NOT EXISTS {_table(table)}_{col} ON {_table(table)} ({col}, seq)"
            )


class CursorRows:
    """
    :class:`~vmsnap.projections.rows.Rows` on an open cursor inside a transaction, rows as
    tuples; SQLite's dialect (``PgCursorRows`` changes the placeholder and table names).
    """

    mark = "?"

    def __init__(self, cursor: Any) -> None:
        self.c = cursor
        self._upserts: dict[str, str] = {}  # table -> its upsert, made once (profiled)

    def table(self, name: str) -> str:
        return _table(name)

    def get(self, table: str, key: str) -> Doc | None:
        self.c.execute(f"SELECT doc FROM {self.table(table)} WHERE key={self.mark}", (key,))
        row = self.c.fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def put(self, table: str, key: str, doc: Doc, seq: int) -> None:
        cols = TABLES[table]
        sql = self._upserts.get(table)
        if sql is None:
            names = ", ".join(("key", "seq", *cols, "doc"))
            marks = ", ".join([self.mark] * (len(cols) + 3))
            updates = ", ".join(f"{col}=excluded.{col}" for col in (*cols, "doc"))
            sql = self._upserts[table] = (
                f"INSERT INTO {self.table(table)} ({names}) VALUES ({marks}) "
                f"ON CONFLICT(key) DO UPDATE SET {updates}"
            )
        values = [doc.get(col) for col in cols]
        self.c.execute(sql, (key, seq, *values, dumps_sorted(doc)))

    def delete(self, table: str, key: str) -> None:
        self.c.execute(f"DELETE FROM {self.table(table)} WHERE key={self.mark}", (key,))

    def find(self, table: str, column: str, value: Any) -> list[Doc]:
        assert column in TABLES[table]
        return self.select(table, {column: value})

    def select(
        self, table: str, where: dict[str, Any], exclude_state: str | None = None
    ) -> list[Doc]:
        """
        Rows of ``table`` matching ``where`` (indexed columns), in creation order.
        """
        clauses = [f"{col}={self.mark}" for col in where]
        params = list(where.values())
        if exclude_state is not None:
            clauses.append(f"state!={self.mark}")
            params.append(exclude_state)
        sql = f"SELECT doc FROM {self.table(table)}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        self.c.execute(sql + " ORDER BY seq", params)
        return [dict(json.loads(r[0])) for r in self.c.fetchall()]

    def dump(self) -> MemoryRows:
        """
        Every stored row, for comparison with a rebuild from the log.
        """
        rows = MemoryRows()
        for table in TABLES:
            self.c.execute(f"SELECT key, seq, doc FROM {self.table(table)}")
            for key, seq, doc in self.c.fetchall():
                rows.tables[table][key] = (seq, json.loads(doc))
        return rows


class SqliteViews:
    """
    The view tables of one store, their tracking position, and the queries on them.
    """

    def __init__(self, log: EventLog, project: Projector) -> None:
        self.log = log
        self.project = project
        self.datastore = log.recorder.datastore  # type: ignore[attr-defined]
        self._lock = threading.Lock()
        self._create_tables()

    def _create_tables(self) -> None:
        with self.transaction(commit=False) as c:
            c.execute(f"SELECT 1 FROM sqlite_master WHERE type='table' AND name='{TRACKING}'")
            if c.fetchone() is not None:
                return  # already there: opening a store stays read-only
        with self.writing() as c:
            create_view_tables(c)
            c.execute(
                f"CREATE TABLE IF NOT EXISTS {TRACKING} "
                "(name TEXT PRIMARY KEY, position INTEGER NOT NULL)"
            )
            c.execute(f"INSERT OR IGNORE INTO {TRACKING} VALUES ('views', 0)")

    @contextmanager
    def transaction(self, *, commit: bool = True) -> Iterator[Any]:
        with _store_errors(), self.datastore.transaction(commit=commit) as c:
            yield c

    @contextmanager
    def writing(self, *, durable: bool = True) -> Iterator[Any]:
        """
        A transaction that holds the write lock from its start (BEGIN IMMEDIATE): one that
        reads and then writes fails at once, without waiting, when another process
        committed in between; this one waits its turn instead.

        ``durable=False``: commit without waiting for the disk (synchronous=NORMAL). For
        what the log can rebuild (views, seals): a power cut loses at most that commit
        and the ones after it (WAL frames reach the disk in order), never an event
        committed before; the next catch-up redoes the work.
        """
        with _store_errors(), self.datastore.get_connection(commit=True) as conn:
            cursor = conn.cursor()
            if not durable:
                cursor.execute("PRAGMA synchronous=NORMAL")
            try:
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    yield cursor
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
            finally:
                if not durable:
                    cursor.execute("PRAGMA synchronous=FULL")

    def catch_up(self) -> int:
        """
        Project every event recorded after the tracking position; return the new position.
        """
        with self._lock, self.writing(durable=False) as c:
            c.execute(f"SELECT position FROM {TRACKING} WHERE name='views'")
            position = int(c.fetchone()[0])
            rows = CachedRows(CursorRows(c))  # one write per row touched, not per event
            sealer = Sealer(c)
            start = position
            # Read the log through this transaction's own connection: asking the pool for
            # a reader while holding the writer deadlocks (memory stores, busy threads).
            table = self.log.recorder.events_table_name  # type: ignore[attr-defined]
            while True:
                page = events_page(c, table, position)
                mapper, project = self.log.mapper, self.project
                for row in page:
                    event = fast_event(mapper, row) or mapper.to_domain_event(_notification(row))
                    project(event, rows, row[0])
                sealer.add(position, page)  # the chain, from the rows in hand (ADR 0025)
                if len(page) < PAGE:
                    if page:
                        position = page[-1][0]
                    break
                position = page[-1][0]
            rows.flush()
            if position != start:
                c.execute(f"UPDATE {TRACKING} SET position=? WHERE name='views'", (position,))
            sealer.finish(table)  # the tamper-evident chain, in this same transaction (ADR 0011)
            return position

    def rebuild(self) -> int:
        """
        Drop every view row and project the whole log again (after the views' shape
        changed); return the new position.
        """
        with self._lock, self.writing() as c:
            for table in TABLES:
                c.execute(f"DELETE FROM {_table(table)}")
            c.execute(f"UPDATE {TRACKING} SET position=0 WHERE name='views'")
        return self.catch_up()

    def position(self) -> int:
        with self.transaction(commit=False) as c:
            c.execute(f"SELECT position FROM {TRACKING} WHERE name='views'")
            return int(c.fetchone()[0])

    def get(self, table: str, key: str) -> Doc | None:
        with self.transaction(commit=False) as c:
            return CursorRows(c).get(table, key)

    def select(
        self, table: str, where: dict[str, Any], exclude_state: str | None = None
    ) -> list[Doc]:
        with self.transaction(commit=False) as c:
            return CursorRows(c).select(table, where, exclude_state)

    def dump(self) -> MemoryRows:
        with self.transaction(commit=False) as c:
            return CursorRows(c).dump()
