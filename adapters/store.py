"""
The event store: store URLs, the eventsourcing application that holds the log, and
raw reads of the log by position.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, Notification, PersistenceError
from eventsourcing.utils import Environment

from vmsnap.adapters.transcodings import register_domain_transcodings
from vmsnap.domain.exceptions import ConfigError, StoreError

PAGE = 1000  # BRIEF: read the log in pages of 1000.
LOCK_TIMEOUT_S = 10


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
        raise ConfigError("postgresql:// stores are not supported by this build yet")


class EventLog(Application[uuid.UUID]):
    """
    The eventsourcing application that records vmsnap's events.
    """

    name = "vmsnap"
    log_section_size = PAGE

    def construct_env(self, name: str, env: Any = None) -> Environment:
        # Embedding-safe: configured by vmsnap alone, not by the host's os.environ.
        return Environment(name, dict(env or {}))

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

    def notifications_of(self, ids: Sequence[uuid.UUID]) -> list[Notification]:
        """
        The events of the aggregates ``ids``, with their log positions, in log order.
        """
        if not ids:
            return []
        recorder: Any = self.recorder
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


def open_log(url: StoreUrl, extra_env: dict[str, str] | None = None) -> EventLog:
    """
    Open (and create where needed) the event log at ``url``; ``extra_env`` adds
    eventsourcing settings (cipher, compressor).

    Raises:
        StoreError: the store cannot be opened: not a database, unreadable, locked.
    """
    try:
        return EventLog(env={**url.env(), **(extra_env or {})})
    except (PersistenceError, sqlite3.Error, OSError) as e:
        raise StoreError(f"cannot open store {url.url or url.scheme}: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if "file is not a database" in text:
        return "the file is not a vmsnap store (not an SQLite database)"
    if "locked" in text:
        return f"the store is locked by another writer ({text})"
    return text
