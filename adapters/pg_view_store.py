"""
The view tables on PostgreSQL, beside the events in the same database: the same poller
as ``SqliteViews`` (rows and tracking position written in one transaction), so every
controller process reads views that are as current as the log when it asks (ADR 0010).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import PersistenceError
from psycopg.rows import tuple_row

from vmsnap.adapters import chain
from vmsnap.adapters.pg_store import MIGRATION_LOCK, TRACKING_TABLE, notification
from vmsnap.adapters.store import PAGE, EventLog, store_failure
from vmsnap.adapters.view_store import CursorRows, Projector
from vmsnap.domain.exceptions import StoreError
from vmsnap.projections.cached_rows import CachedRows
from vmsnap.projections.rows import TABLES, Doc, MemoryRows


def plain_rows(cursor: Any) -> Any:
    """A cursor in the same transaction whose rows are tuples (the chain indexes them)."""
    return cursor.connection.cursor(row_factory=tuple_row)


class PgCursorRows(CursorRows):
    """
    :class:`CursorRows` on a psycopg cursor with tuple rows (:func:`plain_rows`), in the
    store's schema.
    """

    mark = "%s"

    def __init__(self, cursor: Any, schema: str) -> None:
        super().__init__(plain_rows(cursor))
        self.schema = schema

    def table(self, name: str) -> str:
        return f'"{self.schema}".view_{name}'


class PostgresViews:
    """
    The view tables of one PostgreSQL store, their tracking position, and the queries on
    them. Only ``migrate`` creates the tables.
    """

    def __init__(self, log: EventLog, project: Projector, *, migrate: bool = False) -> None:
        self.log = log
        self.project = project
        recorder: Any = log.recorder
        self.datastore = recorder.datastore
        self.schema: str = self.datastore.schema
        self.events = f'"{self.schema}".{recorder.events_table_name}'
        self.tracking = f'"{self.schema}".{TRACKING_TABLE}'
        self.lock_timeout = int(self.datastore.lock_timeout)
        self._lock = threading.Lock()
        if migrate:
            self._create_tables()

    def _create_tables(self) -> None:
        with self.writing() as c:
            c.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (MIGRATION_LOCK,))
            rows = PgCursorRows(c, self.schema)
            for table, cols in TABLES.items():
                extra = "".join(f", {col} TEXT" for col in cols)
                c.execute(
                    f"CREATE TABLE IF NOT EXISTS {rows.table(table)} "
                    f"(key TEXT PRIMARY KEY, seq BIGINT NOT NULL{extra}, doc TEXT NOT NULL)"
                )
                for col in cols:
                    c.execute(
                        f"CREATE INDEX IF NOT EXISTS view_{table}_{col} "
                        f"ON {rows.table(table)} ({col}, seq)"
                    )
            c.execute(
                f"CREATE TABLE IF NOT EXISTS {self.tracking} "
                "(name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
            )
            c.execute(
                f"INSERT INTO {self.tracking} VALUES ('views', 0) ON CONFLICT (name) DO NOTHING"
            )
            chain.create(plain_rows(c), "postgres")

    @contextmanager
    def transaction(self, *, commit: bool = True) -> Iterator[Any]:
        try:
            with self.datastore.transaction(commit=commit) as c:
                yield c
        except PersistenceError as e:
            raise StoreError(store_failure(e)) from None

    @contextmanager
    def writing(self) -> Iterator[Any]:
        """
        A transaction whose waits for locks end after the store's lock timeout.
        """
        with self.transaction(commit=True) as c:
            c.execute(f"SET LOCAL lock_timeout = '{self.lock_timeout}s'")
            c.execute(f'SET LOCAL search_path TO "{self.schema}"')  # for the chain's tables
            yield c

    def catch_up(self) -> int:
        """
        Project every event recorded after the tracking position; return the new position.
        """
        with self._lock, self.writing() as c:
            # The row lock makes controllers that catch up at the same time take turns;
            # the one that waited then reads the position the other one left.
            c.execute(f"SELECT position FROM {self.tracking} WHERE name='views' FOR UPDATE")
            position = int(c.fetchone()["position"])
            rows = CachedRows(PgCursorRows(c, self.schema))  # one write per row touched
            start = position
            # Events commit in notification_id order (the recorder locks the table for
            # each insert), so nothing can appear later below a position already read.
            while True:
                c.execute(
                    f"SELECT * FROM {self.events} WHERE notification_id>%s "
                    "ORDER BY notification_id LIMIT %s",
                    (position, PAGE),
                )
                page = c.fetchall()
                for row in page:
                    event = self.log.mapper.to_domain_event(notification(row))
                    self.project(event, rows, row["notification_id"])
                if len(page) < PAGE:
                    if page:
                        position = page[-1]["notification_id"]
                    break
                position = page[-1]["notification_id"]
            rows.flush()
            if position != start:
                c.execute(f"UPDATE {self.tracking} SET position=%s WHERE name='views'", (position,))
            chain.seal(plain_rows(c), self.events, "postgres")  # same transaction (ADR 0011)
            return position

    def rebuild(self) -> int:
        """
        Drop every view row and project the whole log again (after the views' shape
        changed); return the new position.
        """
        with self._lock, self.writing() as c:
            rows = PgCursorRows(c, self.schema)
            for table in TABLES:
                c.execute(f"DELETE FROM {rows.table(table)}")
            c.execute(f"UPDATE {self.tracking} SET position=0 WHERE name='views'")
        return self.catch_up()

    def position(self) -> int:
        with self.transaction(commit=False) as c:
            c.execute(f"SELECT position FROM {self.tracking} WHERE name='views'")
            return int(c.fetchone()["position"])

    def get(self, table: str, key: str) -> Doc | None:
        with self.transaction(commit=False) as c:
            return PgCursorRows(c, self.schema).get(table, key)

    def select(
        self, table: str, where: dict[str, Any], exclude_state: str | None = None
    ) -> list[Doc]:
        with self.transaction(commit=False) as c:
            return PgCursorRows(c, self.schema).select(table, where, exclude_state)

    def dump(self) -> MemoryRows:
        with self.transaction(commit=False) as c:
            return PgCursorRows(c, self.schema).dump()
