"""
``audit verify``, streaming (ADR 0012): one pass over the log in pages, inside one read
transaction of the store, with memory that does not grow with the log. Projections are
rebuilt into a temporary SQLite database and compared with the stored views table by
table, in key order; the chain is compared seal by seal. Never calls an adapter.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from functools import singledispatch
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification

from vmsnap.adapters.chain import (
    check_head,
    compare,
    events_page,
    has_chain,
    head,
    row_digest,
    sealed_at,
    seals,
)
from vmsnap.adapters.store import PAGE, EventLog
from vmsnap.adapters.view_store import TRACKING, CursorRows, create_view_tables
from vmsnap.domain.api_job import ApiJob
from vmsnap.domain.api_refusal import ApiRefusal
from vmsnap.domain.pool import Pool
from vmsnap.domain.rules import need_unquiesce
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.vm import Vm
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.domain.workflow import (
    ALLOCATED,
    TERMINAL,
    VM_SNAPSHOT_WORKFLOW,
    VOLUME_SNAPSHOT_WORKFLOW,
    Workflow,
)
from vmsnap.projections.cached_rows import CachedRows
from vmsnap.projections.projector import project
from vmsnap.projections.rows import TABLES
from vmsnap.views import VerifyReport

MAX_PROBLEMS = 200  # the report stays bounded too; the rest are counted
WORKFLOWS = {w.label: w for w in (VM_SNAPSHOT_WORKFLOW, VOLUME_SNAPSHOT_WORKFLOW)}


class Problems:
    def __init__(self, limit: int = MAX_PROBLEMS) -> None:
        self.items: list[str] = []
        self.more = 0
        self.limit = limit

    def add(self, text: str) -> None:
        if len(self.items) < self.limit:
            self.items.append(text)
        else:
            self.more += 1

    def report(self, events: int, head: tuple[int, str] | None) -> VerifyReport:
        items = list(self.items)
        if self.more:
            items.append(f"... and {self.more} more problem(s)")
        return VerifyReport(not items, events, tuple(items), head)


class Tracked:
    """What the rules need of one snapshot while it is in flight or frozen."""

    __slots__ = ("answers", "frozen", "frozen_at", "state", "workflow")

    def __init__(self, workflow: Workflow, state: str) -> None:
        self.workflow = workflow
        self.state = state
        self.frozen = False
        self.frozen_at = 0
        self.answers: dict[str, bool] = {}


class Rules:
    """
    The workflow rules, checked event by event (``rule`` dispatches on the event's class).
    Snapshots in flight (or frozen) are kept in memory: at most one operation runs per VM,
    so they are bounded by the VMs. A snapshot that settles (ready, failed, removed;
    thawed) moves to the temporary database, from which a later revert or delete brings
    it back.
    """

    def __init__(self, temp: sqlite3.Cursor, problems: Problems) -> None:
        self.temp = temp
        self.problems = problems
        self.active: dict[UUID, Tracked] = {}
        temp.execute("CREATE TABLE settled (id BLOB PRIMARY KEY, kind TEXT, state TEXT)")

    def check(self, event: object, position: int) -> None:
        rule(event, self, position)

    def track(self, event: SnapshotAggregate.Event, position: int) -> Tracked | None:
        """Follow a snapshot event: its transition must be allowed; note a freeze or thaw."""
        oid = event.originator_id
        tracked = self.active.get(oid) or self._unsettle(oid)
        name = type(event).__name__
        if tracked is None:
            self.problems.add(f"position {position}: {name} of an unknown snapshot {oid}")
            return None
        if event.trigger is not None:
            dest = tracked.workflow.table.get((event.trigger, tracked.state))
            if dest is None:
                self.problems.add(
                    f"position {position}: {name} is not allowed in state {tracked.state!r}"
                )
            else:
                tracked.state = dest
        change = event.freeze_change()
        if change is not None:
            tracked.frozen = change
            tracked.frozen_at = position if change else tracked.frozen_at
        return tracked

    def settle_if_done(self, event: SnapshotAggregate.Event, tracked: Tracked | None) -> None:
        if tracked is not None and tracked.state in TERMINAL and not tracked.frozen:
            self._settle(event.originator_id, tracked)

    def _settle(self, oid: UUID, tracked: Tracked) -> None:
        self.temp.execute(
            "INSERT OR REPLACE INTO settled VALUES (?, ?, ?)",
            (oid.bytes, tracked.workflow.label, tracked.state),
        )
        del self.active[oid]

    def _unsettle(self, oid: UUID) -> Tracked | None:
        self.temp.execute("SELECT kind, state FROM settled WHERE id=?", (oid.bytes,))
        row = self.temp.fetchone()
        if row is None:
            return None
        tracked = self.active[oid] = Tracked(WORKFLOWS[row[0]], row[1])
        return tracked

    def finish(self) -> None:
        for oid, t in self.active.items():
            if t.frozen and t.state in TERMINAL:
                self.problems.add(
                    f"snapshot {oid} ended {t.state} with its VM still frozen "
                    f"(frozen at position {t.frozen_at}, no thaw recorded)"
                )


@singledispatch
def rule(event: object, rules: Rules, position: int) -> None:
    raise TypeError(f"no rule is registered for {type(event).__qualname__}")


@rule.register
def _no_rule(
    event: Vm.Event | Pool.Event | ApiJob.Event | ApiRefusal.Event, rules: Rules, position: int
) -> None:
    """VM claims, pool caps and API jobs have no workflow rule of their own."""


@rule.register
def _requested(
    event: VmSnapshot.Requested | VolumeSnapshot.Requested, rules: Rules, position: int
) -> None:
    workflow = (
        VM_SNAPSHOT_WORKFLOW
        if isinstance(event, VmSnapshot.Requested)
        else VOLUME_SNAPSHOT_WORKFLOW
    )
    rules.active[event.originator_id] = Tracked(workflow, ALLOCATED)


@rule.register
def _snapshot_event(event: SnapshotAggregate.Event, rules: Rules, position: int) -> None:
    rules.settle_if_done(event, rules.track(event, position))


@rule.register
def _driver_answer(event: VmSnapshot.DriverSnapshotTaken, rules: Rules, position: int) -> None:
    tracked = rules.track(event, position)
    if tracked is not None:
        tracked.answers[event.pool_id] = event.need_unquiesce
    rules.settle_if_done(event, tracked)


@rule.register
def _decision(event: SnapshotAggregate.UnquiesceDecided, rules: Rules, position: int) -> None:
    """The decision's inputs are the answers taken, and it is their AND (invariant 3)."""
    tracked = rules.track(event, position)
    if tracked is not None:
        recorded = dict(event.answers)
        is_vm = tracked.workflow is VM_SNAPSHOT_WORKFLOW
        if is_vm and tracked.answers and recorded != tracked.answers:
            rules.problems.add(
                f"position {position}: decision inputs differ from the answers taken"
            )
        if event.need_unquiesce != need_unquiesce(recorded.values()):
            rules.problems.add(
                f"position {position}: need_unquiesce={event.need_unquiesce} is not the AND "
                f"of the answers {recorded}"
            )
    rules.settle_if_done(event, tracked)


# Key order must be code-point order on both sides of the merge in _compare_table.
KEY_PAGE = {
    "sqlite": "SELECT key, seq, doc FROM view_{table} WHERE key>? ORDER BY key LIMIT ?",
    "postgres": (
        'SELECT key, seq, doc FROM view_{table} WHERE key > %s COLLATE "C" '
        'ORDER BY key COLLATE "C" LIMIT %s'
    ),
}


def _rows_in_key_order(
    c: Any, table: str, dialect: str = "sqlite"
) -> Iterator[tuple[str, int, str]]:
    last = ""
    while True:
        c.execute(KEY_PAGE[dialect].format(table=table), (last, PAGE))
        page = [(str(r[0]), int(r[1]), str(r[2])) for r in c.fetchall()]
        yield from page
        if len(page) < PAGE:
            return
        last = page[-1][0]


def _note(keys: list[str], key: str) -> None:
    if len(keys) < 5:  # a few examples; the counts say how many
        keys.append(key)


def _compare_table(table: str, stored: Iterator[Any], rebuilt: Iterator[Any]) -> str | None:
    only_stored: list[str] = []
    only_rebuilt: list[str] = []
    differ: list[str] = []
    counts = [0, 0, 0]
    a, b = next(stored, None), next(rebuilt, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            counts[0] += 1
            _note(only_stored, a[0])
            a = next(stored, None)
        elif a is None or b[0] < a[0]:
            counts[1] += 1
            _note(only_rebuilt, b[0])
            b = next(rebuilt, None)
        else:
            if (a[1], json.loads(a[2])) != (b[1], json.loads(b[2])):
                counts[2] += 1
                _note(differ, a[0])
            a, b = next(stored, None), next(rebuilt, None)
    if not any(counts):
        return None
    return (
        f"view {table} differs from a rebuild from the log: {counts[0]} row(s) only stored "
        f"{only_stored}, {counts[1]} row(s) only rebuilt {only_rebuilt}, {counts[2]} row(s) "
        f"differ {differ}"
    )


def verify(log: EventLog, kept_head: tuple[int, str] | None = None) -> VerifyReport:
    """
    Replay the whole log and check it (see :mod:`vmsnap.verify`); memory stays flat.
    ``kept_head``: a chain head (position, hex hash) an earlier verify printed, kept
    elsewhere; the chain must still pass through it (ADR 0011).
    """
    problems = Problems()
    recorder: Any = log.recorder
    temp = sqlite3.connect("")  # a private temporary database on disk, gone when closed
    try:
        tc = temp.cursor()
        create_view_tables(tc)  # the stored views' shape
        dialect = "postgres" if log.on_postgres else "sqlite"
        with recorder.datastore.transaction(commit=False) as c:
            c = _consistent_reads(c, recorder) if dialect == "postgres" else c
            replay = _Replay(
                log,
                c,
                dialect,
                Rules(temp.cursor(), problems),
                CachedRows(CursorRows(tc)),
                problems,
            )
            last_seal = _check_chain(c, dialect, replay, kept_head, problems)
            replay.rules.finish()
            replay.rows.flush()
            for table in TABLES:
                diff = _compare_table(
                    table, _rows_in_key_order(c, table, dialect), _rows_in_key_order(tc, table)
                )
                if diff is not None:
                    problems.add(diff)
        return problems.report(replay.count, last_seal)
    finally:
        temp.close()


def _consistent_reads(c: Any, recorder: Any) -> Any:
    """One consistent copy of the log, views and chain while others write (PostgreSQL)."""
    from psycopg.rows import tuple_row  # the postgres extra, there on PostgreSQL

    c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    c.execute(f'SET LOCAL search_path TO "{recorder.datastore.schema}"')
    return c.connection.cursor(row_factory=tuple_row)


class _Replay:
    """The log read once in pages: each event checked by the rules and projected."""

    def __init__(
        self,
        log: EventLog,
        c: Any,
        dialect: str,
        rules: Rules,
        rows: CachedRows,
        problems: Problems,
    ) -> None:
        self.log, self.c, self.dialect = log, c, dialect
        self.rules, self.rows, self.problems = rules, rows, problems
        self.count = 0
        c.execute(f"SELECT position FROM {TRACKING} WHERE name='views'")
        self.projected = int(c.fetchone()[0])

    def events(self) -> Iterator[tuple[int, bytes]]:
        """Every event's position and digest, in log order, replayed on the way."""
        table = self.log.recorder.events_table_name  # type: ignore[attr-defined]
        position = 0
        while True:
            page = events_page(self.c, table, position, self.dialect)
            for row in page:
                position = int(row[0])
                self.count += 1
                _replay(
                    self.log, row, position <= self.projected, self.rules, self.rows, self.problems
                )
                yield position, row_digest(row)
            if len(page) < PAGE:
                return


def _check_chain(
    c: Any,
    dialect: str,
    replay: _Replay,
    kept_head: tuple[int, str] | None,
    problems: Problems,
) -> tuple[int, str] | None:
    """Replay the log against its seals; return the last seal (None: no chain)."""
    if not has_chain(c, dialect):
        for _ in replay.events():
            pass
        if replay.count:
            problems.add("the log has no seals: its chain table is missing")
        return None
    for finding in compare(replay.events(), seals(c, dialect), sealed_at(c, dialect)):
        problems.add(finding.message)
    rewritten = None if kept_head is None else check_head(c, kept_head, dialect)
    if rewritten is not None:
        problems.add(rewritten.message)
    return head(c, dialect)


def _replay(
    log: EventLog, row: Any, projected: bool, rules: Rules, rows: CachedRows, problems: Problems
) -> None:
    position = int(row[0])
    try:
        event: Any = log.mapper.to_domain_event(
            Notification(
                id=position,
                originator_id=UUID(str(row[1])),
                originator_version=int(row[2]),
                topic=str(row[3]),
                state=bytes(row[4]) if not isinstance(row[4], str) else row[4].encode(),
            )
        )
    except Exception as e:  # any stored bytes may be damaged: report, do not stop
        problems.add(f"position {position}: the stored event cannot be read: {e}")
        return
    rules.check(event, position)
    if projected:
        project(event, rows, position)
