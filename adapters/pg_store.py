"""
The PostgreSQL side of the event store: reaching the server, the explicit migration
(controllers never create tables), and the recorder vmsnap uses there (ADR 0009).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from eventsourcing.persistence import Notification, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder

from vmsnap.adapters.chain import CHAIN
from vmsnap.domain.exceptions import StoreError

EVENTS_TABLE = "vmsnap_events"  # eventsourcing names it after the application, EventLog
SNAPSHOTS_TABLE = "vmsnap_snapshots"  # the VM records' snapshots (EventLog)
TRACKING_TABLE = "view_tracking"  # adapters/pg_view_store.py
MIGRATION_LOCK = "vmsnap store migrate"  # the advisory lock concurrent migrations queue on
INSERT_ATTEMPTS = 3


def connect(env: dict[str, str], *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection of its own (not from the pool), with the store's timeouts."""
    conn = psycopg.connect(
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"],
        connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"]),
        autocommit=autocommit,
    )
    conn.execute(f"SET lock_timeout = '{int(env['POSTGRES_LOCK_TIMEOUT'])}s'")
    return conn


@contextmanager
def opening(env: dict[str, str], shown: str, *, migrate: bool) -> Iterator[None]:
    """
    Reach the server, then either check the schema is there (a controller) or hold the
    migration lock while the caller creates it (``migrate``: ``env`` turns table
    creation on). Concurrent ``CREATE TABLE IF NOT EXISTS`` by several processes fails
    now and then, hence one migration at a time.

    Raises:
        StoreError: unreachable, refused, or not migrated.
    """
    schema = env["POSTGRES_SCHEMA"]
    try:
        conn = connect(env)
    except psycopg.Error as e:
        raise StoreError(f"cannot reach PostgreSQL store {shown}: {_first_line(e)}") from None
    with conn:
        try:
            if not migrate:
                missing = [
                    t
                    for t in (EVENTS_TABLE, SNAPSHOTS_TABLE, TRACKING_TABLE, CHAIN)
                    if conn.execute("SELECT to_regclass(%s)", (f"{schema}.{t}",)).fetchone()
                    == (None,)
                ]
                if missing:
                    raise StoreError(
                        f"PostgreSQL store {shown} is not migrated (no table "
                        f"{', '.join(missing)}): run `vmsnap store migrate` once first"
                    )
                yield
                return
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (MIGRATION_LOCK,))
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            env["CREATE_TABLE"] = "yes"
            yield
        except psycopg.Error as e:
            raise StoreError(f"cannot migrate PostgreSQL store {shown}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def notifications_of(recorder: Any, ids: Sequence[uuid.UUID]) -> list[Notification]:
    """The events of the aggregates ``ids``, with their log positions, in log order."""
    table = f'"{recorder.datastore.schema}".{recorder.events_table_name}'
    with recorder.datastore.transaction(commit=False) as c:
        c.execute(
            f"SELECT * FROM {table} WHERE originator_id = ANY(%s) ORDER BY notification_id",
            (list(ids),),
        )
        return [notification(row) for row in c.fetchall()]


def notification(row: Any) -> Notification:
    return Notification(
        id=row["notification_id"],
        originator_id=row["originator_id"],
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )


class PgRecorder(PostgresApplicationRecorder):
    """
    The library's recorder, except that a lock timeout is not retried: the library retries
    every OperationalError 10 times, so a stuck writer would hold each caller for ten
    lock timeouts before it heard about it.
    """

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        once = PostgresApplicationRecorder.insert_events.__wrapped__
        for attempt in range(1, INSERT_ATTEMPTS + 1):
            try:
                result: Sequence[int] | None = once(self, stored_events, **kwargs)
                return result
            except OperationalError as e:
                lock_timeout = isinstance(e.__cause__, psycopg.errors.LockNotAvailable)
                if lock_timeout or attempt == INSERT_ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)  # a dropped connection: the pool reconnects
        raise AssertionError("unreachable")
