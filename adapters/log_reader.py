"""
Read-only access to a store for the audit (ADR 0021): the log, the chain, the views and
the aggregate snapshots, read in one consistent read-only transaction, never written.

``LogReader.over(log)`` reads through an open :class:`EventLog` (the Controller's, any
store kind). :func:`open_reader` opens a store for the audit commands alone: an SQLite
file read-only (no table, journal or lock file created, also in a read-only folder), a
PostgreSQL store in read-only transactions; a store that does not exist is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

from eventsourcing.persistence import Mapper

from vmsnap.adapters.store import EventLog, StoreUrl
from vmsnap.domain.exceptions import StoreError

SQLITE_EVENTS = "stored_events"
SQLITE_SNAPSHOTS = "stored_snapshots"


class LogReader:
    """
    One store, read only: ``reading()`` yields a cursor (rows as tuples) inside a
    read-only transaction that sees one consistent picture of every table.
    """

    def __init__(
        self,
        dialect: str,
        events_table: str,
        snapshots_table: str,
        mapper: Mapper[UUID],
        log: EventLog | None = None,
        connection: sqlite3.Connection | None = None,
    ) -> None:
        self.dialect = dialect
        self.events_table = events_table
        self.snapshots_table = snapshots_table
        self.mapper = mapper
        self._log = log
        self._connection = connection

    @classmethod
    def over(cls, log: EventLog) -> LogReader:
        recorder: Any = log.recorder
        snapshots: Any = log.snapshots
        snap_table = (
            snapshots.recorder.events_table_name if snapshots is not None else SQLITE_SNAPSHOTS
        )
        dialect = "postgres" if log.on_postgres else "sqlite"
        return cls(dialect, recorder.events_table_name, snap_table, log.mapper, log=log)

    @contextmanager
    def reading(self) -> Iterator[Any]:
        """A cursor in one read-only transaction (a consistent snapshot of the store)."""
        if self._connection is not None:
            c = self._connection.cursor()
            c.execute("BEGIN")  # a WAL read transaction: one snapshot until it ends
            try:
                yield c
            finally:
                c.execute("ROLLBACK")
            return
        assert self._log is not None
        recorder: Any = self._log.recorder
        with recorder.datastore.transaction(commit=False) as c:
            if self.dialect == "postgres":
                yield _pg_read_only(c, recorder.datastore.schema)
            else:
                yield c

    def notifications_of(self, c: Any, ids: Sequence[UUID]) -> list[tuple[Any, ...]]:
        """The stored rows of the aggregates ``ids``, in log order."""
        if not ids:
            return []
        cols = "originator_id, originator_version, topic, state"
        if self.dialect == "postgres":
            c.execute(
                f"SELECT notification_id, {cols} FROM {self.events_table} "
                "WHERE originator_id = ANY(%s) ORDER BY notification_id",
                (list(ids),),
            )
        else:
            marks = ",".join("?" * len(ids))
            c.execute(
                f"SELECT rowid, {cols} FROM {self.events_table} "
                f"WHERE originator_id IN ({marks}) ORDER BY rowid",
                [i.hex for i in ids],
            )
        return [tuple(r) for r in c.fetchall()]

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _pg_read_only(c: Any, schema: str) -> Any:
    from psycopg.rows import tuple_row  # the postgres extra, there on PostgreSQL

    c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    c.execute(f'SET LOCAL search_path TO "{schema}"')
    return c.connection.cursor(row_factory=tuple_row)


def open_reader(url: StoreUrl, at_rest: dict[str, str]) -> LogReader:
    """
    Open the store at ``url`` for reading only; ``at_rest``: the cipher and compressor
    settings its events were written with.

    Raises:
        StoreError: the store does not exist, is not a vmsnap store, or cannot be read.
    """
    if url.scheme == "memory":
        raise StoreError("a memory:// store lives inside one process: there is no store to audit")
    mapper = mapper_for(at_rest)
    if url.scheme == "sqlite":
        assert url.path is not None
        return LogReader(
            "sqlite", SQLITE_EVENTS, SQLITE_SNAPSHOTS, mapper, connection=_sqlite_ro(url.path)
        )
    log = _open_pg(url, at_rest)
    reader = LogReader.over(log)
    reader.mapper = mapper
    return reader


def mapper_for(at_rest: dict[str, str]) -> Mapper[UUID]:
    # The mapper of the application that wrote the events (transcodings, cipher and
    # compressor), from a private in-memory application: nothing is opened on disk.
    env = {"PERSISTENCE_MODULE": "eventsourcing.popo", **at_rest}
    app = EventLog(env=env)
    try:
        return app.mapper
    finally:
        app.close()


def _sqlite_ro(path: Path) -> sqlite3.Connection:
    """
    ``path`` opened read-only. Without a ``-wal`` file beside it (the last writer closed
    cleanly) it is opened ``immutable``: SQLite then creates no journal, no shared-memory
    file and takes no lock, so a read-only file or folder is no obstacle. With one, a
    writer may be active: it is opened ``mode=ro`` and reads through the WAL.
    """
    if not path.is_file():
        raise StoreError(f"store does not exist: {path}")
    wal = path.with_name(path.name + "-wal").exists()
    mode = "mode=ro" if wal else "mode=ro&immutable=1"
    uri = f"file:{quote(str(path))}?{mode}"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (SQLITE_EVENTS,)
        ).fetchone()
    except sqlite3.Error as e:
        text = str(e)
        if "file is not a database" in text:
            text = "the file is not a vmsnap store (not an SQLite database)"
        raise StoreError(f"cannot read store {path}: {text}") from None
    if found is None:
        conn.close()
        raise StoreError(f"{path} is not a vmsnap store (it holds no event log)")
    return conn


def _open_pg(url: StoreUrl, at_rest: dict[str, str]) -> EventLog:
    # open_log refuses a store that lacks any of its tables (not migrated); the audit
    # needs only the log, and reports a missing chain or views table as a finding.
    from vmsnap.adapters import pg_store

    env = {**url.env(), **at_rest}
    try:
        conn = pg_store.connect(env)
    except Exception as e:
        raise StoreError(f"cannot reach PostgreSQL store {url.shown}: {e}") from None
    with conn:
        table = f"{env['POSTGRES_SCHEMA']}.{pg_store.EVENTS_TABLE}"
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            raise StoreError(f"PostgreSQL store {url.shown} holds no event log (never migrated)")
    try:
        return EventLog(env=env)
    except Exception as e:
        raise StoreError(f"cannot open store {url.shown}: {e}") from None
