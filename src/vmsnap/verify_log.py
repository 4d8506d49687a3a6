"""
What ``audit verify`` checks of the log itself, beside the workflow rules (ADR 0021): the
problems it reports (by kind, each kind bounded, runs of one problem as one line), the
versions of every aggregate (no gap, no duplicate), the unsealed tail and seals that
are missing, and the aggregate snapshots the product loads instead of the events.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Snapshot
from eventsourcing.persistence import Mapper, Notification

from vmsnap.adapters.log_reader import LogReader
from vmsnap.stored import Unreadable, decode
from vmsnap.views import VerifyReport

MAX_PROBLEMS = 200  # per kind: the report stays bounded; the rest are counted
#: Kinds of problem, in the order the report lists them: tampering first.
KINDS = ("chain", "log", "rules", "views")
SNAPSHOT_TOPIC = "eventsourcing.domain:Snapshot"
VM_TOPIC = "vmsnap.domain.vm:Vm"
CACHE = 5000  # aggregates whose last version is kept in memory; the rest in the temp db


class Problems:
    """The findings, by kind; a run of one finding at consecutive events is one line."""

    def __init__(self, limit: int = MAX_PROBLEMS) -> None:
        self.items: dict[str, list[str]] = {k: [] for k in KINDS}
        self.more = dict.fromkeys(KINDS, 0)
        self.limit = limit
        self._run: tuple[str, str, int, int] | None = None  # kind, text, first, last

    def add(self, kind: str, text: str) -> None:
        self.flush()
        if len(self.items[kind]) < self.limit:
            self.items[kind].append(text)
        else:
            self.more[kind] += 1

    def at(self, kind: str, position: int, text: str, previous: int) -> None:
        """``text`` at ``position``; ``previous``: the position of the event before it."""
        run = self._run
        if run is not None and run[:2] == (kind, text) and run[3] == previous:
            self._run = (kind, text, run[2], position)
            return
        self.flush()
        self._run = (kind, text, position, position)

    def flush(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            kind, text, first, last = run
            where = f"position {first}" if first == last else f"positions {first}-{last}"
            self.add(kind, f"{where}: {text}")

    def report(
        self,
        events: int,
        head: tuple[int, str] | None,
        unsealed: tuple[int, int, int] | None = None,
    ) -> VerifyReport:
        self.flush()
        items: list[str] = []
        for kind in KINDS:
            items += self.items[kind]
            if self.more[kind]:
                items.append(f"... and {self.more[kind]} more problem(s) of kind {kind}")
        return VerifyReport(not items, events, tuple(items), head, unsealed)


class Versions:
    """Each aggregate's versions must run 1, 2, 3... once each, in log order."""

    def __init__(self, temp: sqlite3.Cursor, problems: Problems) -> None:
        self.temp = temp
        self.problems = problems
        self.cache: dict[str, tuple[int, int, float | None]] = {}
        temp.execute(
            "CREATE TABLE versions (id TEXT PRIMARY KEY, version INT, position INT, stamp REAL)"
        )

    def see(
        self, oid: Any, version: Any, position: int, stamp: float | None = None
    ) -> float | None:
        """
        Check the version of the event at ``position`` (stamped ``stamp``, a POSIX time);
        return when the aggregate's previous event was stamped (None: none, or unknown).
        """
        key = oid.hex if isinstance(oid, UUID) else str(oid).lower()
        last = self.cache.get(key) or self._stored(key)
        previous = None if last is None else last[2]
        if type(version) is not int:
            return previous  # reported as non-canonical
        if last is not None and version <= last[0]:
            self._problem(
                position,
                f"duplicate of version {version} of {key}: version {last[0]} was recorded "
                f"already (position {last[1]})",
            )
            return previous
        expected = 1 if last is None else last[0] + 1
        if version > expected:
            self._problem(position, f"versions {expected}-{version - 1} of {key} are missing")
        self.cache[key] = (version, position, stamp)
        if len(self.cache) > CACHE:
            self.temp.executemany(
                "INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?)",
                [(k, v, p, t) for k, (v, p, t) in self.cache.items()],
            )
            self.cache.clear()
        return previous

    def _stored(self, key: str) -> tuple[int, int, float | None] | None:
        self.temp.execute("SELECT version, position, stamp FROM versions WHERE id=?", (key,))
        row = self.temp.fetchone()
        return None if row is None else (int(row[0]), int(row[1]), row[2])

    def _problem(self, position: int, text: str) -> None:
        self.problems.add("log", f"position {position}: {text}")


class Tail:
    """
    The events past the last seal: counted and placed. An aggregate's events are stamped
    in the order they are recorded (one controller at a time holds it), so one stamped
    before the event it follows in its aggregate was appended with a false time.
    """

    def __init__(self, last_seal: int) -> None:
        self.last_seal = last_seal
        self.count = 0
        self.first = 0
        self.last = 0

    def see(
        self, position: int, timestamp: datetime, previous: float | None, problems: Problems
    ) -> None:
        if position <= self.last_seal:
            return
        self.count += 1
        self.first = self.first or position
        self.last = position
        if previous is not None and timestamp.timestamp() < previous:
            problems.add(
                "chain",
                f"position {position}: appended after the last seal but stamped "
                f"{timestamp.isoformat()}, before the event it follows in its aggregate "
                "(backdated)",
            )

    def unsealed(self) -> tuple[int, int, int] | None:
        return (self.count, self.first, self.last) if self.count else None

    def missing_seals(self, projected: int | None, problems: Problems) -> None:
        """
        Seals are written in the transaction that brings the views up to ``projected``:
        an event at or before it without a seal lost its seal.
        """
        if projected is None or not self.count or self.first > projected:
            return
        problems.add(
            "chain",
            f"positions {self.first}-{projected}: event(s) without a seal, though the views "
            f"were brought up to position {projected} in the transaction that seals them: "
            "their seals were deleted",
        )


def check_snapshots(reader: LogReader, c: Any, problems: Problems) -> None:
    """
    Each stored aggregate snapshot (a VM record every 50 versions, which the product loads
    instead of the events before it) must equal a replay of those events. Each record's
    events are replayed once, compared at each of its snapshots.
    """
    # One record's snapshots in memory at a time: a VM record's snapshot grows with its
    # history, and all of them together grew verify's peak RSS with the log (40 MiB at
    # 1M events; benchmark 3).
    table = reader.snapshots_table
    c.execute(f"SELECT DISTINCT originator_id FROM {table} ORDER BY originator_id")
    mark = "%s" if reader.dialect == "postgres" else "?"
    for (oid,) in c.fetchall():
        c.execute(
            f"SELECT originator_version, topic, state FROM {table} "
            f"WHERE originator_id = {mark} ORDER BY originator_version",
            (oid,),
        )
        snapshots = c.fetchall()
        try:
            uid = oid if isinstance(oid, UUID) else UUID(str(oid))
            replayed = _Replayed(reader, reader.notifications_of(c, [uid]))
        except (ValueError, Unreadable) as e:
            problems.add("log", f"snapshots of {oid} cannot be checked: {e}")
            continue
        for version, topic, state in snapshots:
            _check_snapshot(reader.mapper, uid, version, topic, state, replayed, problems)


class _Replayed:
    """One aggregate's events, replayed once, in version order, as far as asked."""

    def __init__(self, reader: LogReader, rows: list[Any]) -> None:
        self.mapper = reader.mapper
        self.rows = iter(rows)
        self.aggregate: Any = None

    def at(self, version: int) -> Any:
        while self.aggregate is None or self.aggregate.version < version:
            row = next(self.rows, None)
            if row is None:
                raise Unreadable(f"its events do not reach version {version}")
            self.aggregate = decode(self.mapper, row).mutate(self.aggregate)
        if self.aggregate.version != version:
            raise Unreadable(f"its events skip version {version}")
        return Snapshot.take(self.aggregate).state


def _check_snapshot(
    mapper: Mapper[UUID],
    oid: UUID,
    version: Any,
    topic: Any,
    state: Any,
    replayed: _Replayed,
    problems: Problems,
) -> None:
    what = f"snapshot of {oid.hex} at version {version}"
    if topic != SNAPSHOT_TOPIC:
        problems.add("log", f"{what}: its type {str(topic)[:80]!r} is not a snapshot")
        return
    try:
        data = state.encode() if isinstance(state, str) else bytes(state)
        stored: Any = mapper.to_domain_event(
            Notification(
                id=0,
                originator_id=oid,
                originator_version=int(version),
                topic=SNAPSHOT_TOPIC,
                state=data,
            )
        )
        expected = replayed.at(int(version))
    except Exception as e:  # damaged bytes or events: a finding
        problems.add("log", f"{what} cannot be checked: {e}")
        return
    if stored.topic != VM_TOPIC or not _same(mapper, stored.state, expected):
        problems.add(
            "log", f"{what} differs from a replay of its events (the product loads the snapshot)"
        )


def _same(mapper: Mapper[UUID], stored: Any, expected: Any) -> bool:
    transcoder: Any = mapper.transcoder
    return bool(transcoder.decode(transcoder.encode(expected)) == stored)
