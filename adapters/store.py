"""
The event store: store URLs, the eventsourcing application that holds the log, and
raw reads of the log by position.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs
from eventsourcing.application import Application, Repository
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    Notification,
    PersistenceError,
)
from eventsourcing.utils import Environment

from vmsnap.adapters.transcodings import register_domain_transcodings
from vmsnap.domain.exceptions import ConfigError, StoreError
from vmsnap.domain.vm import Vm

PAGE = 1000  # BRIEF: read the log in pages of 1000.
LOCK_TIMEOUT_S = 10
SNAPSHOT_EVERY = 50  # versions between snapshots of a VM record
POSTGRES = "eventsourcing.postgres"

#: URL query parameter -> eventsourcing PostgreSQL setting, with vmsnap's default.
PG_SETTINGS: dict[str, tuple[str, str]] = {
    "pool_size": ("POSTGRES_POOL_SIZE", "2"),
    "max_overflow": ("POSTGRES_MAX_OVERFLOW", "8"),
    # Seconds; the library's default (0) waits for a stuck writer forever.
    "lock_timeout": ("POSTGRES_LOCK_TIMEOUT", str(LOCK_TIMEOUT_S)),
    "connect_timeout": ("POSTGRES_CONNECT_TIMEOUT", "5"),
    "idle_in_transaction_session_timeout": ("POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT", "5"),
    "schema": ("POSTGRES_SCHEMA", "public"),
}
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@attrs.frozen
class StoreUrl:
    """
    A parsed store URL: ``sqlite:///rel.db``, ``sqlite:////abs.db``, ``memory://``
    or ``postgresql://user:password@host:port/dbname``.
    """

    scheme: str
    path: Path | None = None
    url: str = ""

    @classmethod
    def parse(cls, url: str, base: Path) -> StoreUrl:
        """
        Parse ``url``; a relative SQLite path resolves against ``base``.

        Raises:
            ConfigError: the URL has no form vmsnap knows.
        """
        if url == "memory://" or url == "memory:":
            return cls("memory", url=url)
        if url.startswith("sqlite:///"):
            rest = url[len("sqlite:///") :]
            if not rest or rest == "/":
                raise ConfigError(f"store URL {url!r} names no database file")
            path = Path(rest)
            return cls("sqlite", path if path.is_absolute() else base / path, url)
        if url.startswith(("postgresql://", "postgres://")):
            _postgres_env(url)  # refuse a bad URL now, before anything connects
            return cls("postgresql", url=url)
        raise ConfigError(f"store URL {url!r} is not sqlite:///FILE, memory:// or postgresql://…")

    def env(self) -> dict[str, str]:
        if self.scheme == "memory":
            # A private shared-cache memory database: one per store, gone when closed.
            name = f"file:vmsnap-{uuid.uuid4().hex}?mode=memory&cache=shared"
            return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": name}
        if self.scheme == "sqlite":
            assert self.path is not None
            if not self.path.parent.is_dir():
                raise StoreError(f"store folder does not exist: {self.path.parent}")
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.path),
                "SQLITE_LOCK_TIMEOUT": str(LOCK_TIMEOUT_S),
            }
        return _postgres_env(self.url)

    @property
    def shown(self) -> str:
        """The URL without its password, for messages."""
        return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", self.url) or self.scheme


def _postgres_env(url: str) -> dict[str, str]:
    """
    The eventsourcing settings of ``postgresql://user:password@host:port/dbname?k=v``;
    ``k`` is one of :data:`PG_SETTINGS`.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError as e:
        form = "postgresql://user:password@host:port/dbname"
        raise ConfigError(f"store URL is not {form}: {e}") from None
    dbname = unquote(parts.path.lstrip("/"))
    if not (parts.username and parts.hostname and dbname) or "/" in dbname:
        raise ConfigError(
            "store URL is not postgresql://user:password@host:port/dbname "
            "(user, host and database name are needed)"
        )
    env = {
        "PERSISTENCE_MODULE": POSTGRES,
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": parts.hostname,
        "POSTGRES_PORT": str(port),
        "POSTGRES_USER": unquote(parts.username),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "CREATE_TABLE": "no",  # only `vmsnap store migrate` creates tables (ADR 0009)
        "APPLICATION_RECORDER_TOPIC": "vmsnap.adapters.pg_store:PgRecorder",
    }
    env.update({key: default for key, default in PG_SETTINGS.values()})
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in PG_SETTINGS:
            known = ", ".join(PG_SETTINGS)
            raise ConfigError(f"store URL setting {name!r} is not one of {known}")
        ok = _NAME.fullmatch(value) if name == "schema" else value.isdigit()
        if not ok:
            kind = "a lower-case SQL name" if name == "schema" else "a whole number"
            raise ConfigError(f"store URL setting {name}={value!r} is not {kind}")
        env[PG_SETTINGS[name][0]] = value
    if env["POSTGRES_POOL_SIZE"] == "0":
        raise ConfigError("store URL setting pool_size must be at least 1")
    return env


def _mutate_all(aggregate: Any, events: Iterable[Any]) -> Any:
    # eventsourcing's default projector asserts each event against a runtime-checkable
    # Protocol, which cost about a tenth of a create (profiled); these events are ours.
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class _Repository(Repository[uuid.UUID]):
    """The library's repository, replaying events with :func:`_mutate_all`."""

    def get(self, aggregate_id: uuid.UUID, *, version: int | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("projector_func", _mutate_all)
        return super().get(aggregate_id, version=version, **kwargs)


class EventLog(Application[uuid.UUID]):
    """
    The eventsourcing application that records vmsnap's events.
    """

    name = "vmsnap"
    log_section_size = PAGE
    # A VM record's history grows with every operation on the VM; loading it from a
    # snapshot keeps each operation's cost flat however long the history (ADR 0015).
    snapshotting_intervals = {Vm: SNAPSHOT_EVERY}

    def construct_env(self, name: str, env: Any = None) -> Environment:
        # Embedding-safe: configured by vmsnap alone, not by the host's os.environ.
        return Environment(name, {**(env or {}), "IS_SNAPSHOTTING_ENABLED": "y"})

    def construct_repository(self) -> Repository[uuid.UUID]:
        return _Repository(event_store=self.events, snapshot_store=self.snapshots)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_domain_transcodings(transcoder)

    def pages(self, start: int = 1) -> Iterator[Sequence[Notification]]:
        """
        Yield the log from position ``start`` in pages of 1000 notifications.
        """
        while True:
            page = self.notification_log.select(start=start, limit=PAGE)
            if not page:
                return
            yield page
            start = page[-1].id + 1

    @property
    def on_postgres(self) -> bool:
        return self.env.get("PERSISTENCE_MODULE") == POSTGRES

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        try:
            return super().save(*objs, **kwargs)
        except IntegrityError:
            raise  # a version conflict: the caller decides (OperationInProgress, a retry)
        except PersistenceError as e:
            # A lock timeout or a lost server: say so plainly (exit 2), not as a trace.
            raise StoreError(store_failure(e)) from None

    def notifications_of(self, ids: Sequence[uuid.UUID]) -> list[Notification]:
        """
        The events of the aggregates ``ids``, with their log positions, in log order.
        """
        if not ids:
            return []
        recorder: Any = self.recorder
        if self.on_postgres:
            from vmsnap.adapters.pg_store import notifications_of

            return notifications_of(recorder, ids)
        marks = ",".join("?" * len(ids))
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT rowid, * FROM {recorder.events_table_name} "
                f"WHERE originator_id IN ({marks}) ORDER BY rowid",
                [i.hex for i in ids],
            )
            return [
                Notification(
                    id=row["rowid"],
                    originator_id=uuid.UUID(row["originator_id"]),
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=row["state"],
                )
                for row in c.fetchall()
            ]

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0


def open_log(
    url: StoreUrl, extra_env: dict[str, str] | None = None, *, migrate: bool = False
) -> EventLog:
    """
    Open the event log at ``url``; ``extra_env`` adds eventsourcing settings (cipher,
    compressor). SQLite creates its tables itself; a PostgreSQL store must have been
    migrated (``migrate=True`` creates or upgrades its schema).

    Raises:
        StoreError: the store cannot be opened: not a database, unreadable, locked,
            unreachable, not migrated.
        ConfigError: a PostgreSQL store without the ``postgres`` extra installed.
    """
    env = {**url.env(), **(extra_env or {})}
    if url.scheme == "postgresql":
        try:
            from vmsnap.adapters import pg_store
        except ImportError as e:
            raise ConfigError(
                f"postgresql:// stores need psycopg (pip install 'vmsnap[postgres]'): {e}"
            ) from None
        with pg_store.opening(env, url.shown, migrate=migrate):
            return _construct(env, url)
    return _construct(env, url)


def _construct(env: dict[str, str], url: StoreUrl) -> EventLog:
    try:
        return EventLog(env=env)
    except (PersistenceError, sqlite3.Error, OSError) as e:
        raise StoreError(f"cannot open store {url.shown}: {_reason(e)}") from None


def store_failure(e: BaseException) -> str:
    """One line that says why the store refused a read or a write."""
    if "lock timeout" in str(e):
        return (
            "the store's lock was not granted within its lock_timeout: another writer "
            f"holds it (stuck or slow), and this write was not recorded ({e})"
        )
    return f"the store failed: {_reason(e)}"


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if "file is not a database" in text:
        return "the file is not a vmsnap store (not an SQLite database)"
    if "locked" in text:
        return f"the store is locked by another writer ({text})"
    return text
