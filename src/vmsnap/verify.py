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
from vmsnap.adapters.log_reader import LogReader
from vmsnap.adapters.store import PAGE
from vmsnap.adapters.view_store import CursorRows, create_view_tables
from vmsnap.domain.api_job import ApiJob
from vmsnap.domain.api_refusal import ApiRefusal
from vmsnap.domain.pool import Pool
from vmsnap.domain.rules import need_unquiesce
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import POST_THAW
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
from vmsnap.stored import Unreadable, decode, noncanonical
from vmsnap.verify_log import Problems, Tail, Versions, check_snapshots
from vmsnap.verify_views import compare_views, tracking_position
from vmsnap.views import VerifyReport

WORKFLOWS = {w.label: w for w in (VM_SNAPSHOT_WORKFLOW, VOLUME_SNAPSHOT_WORKFLOW)}


class Tracked:
    """What the rules need of one snapshot while it is in flight or frozen."""

    __slots__ = ("answers", "frozen", "frozen_at", "hooks", "state", "workflow")

    def __init__(self, workflow: Workflow, state: str) -> None:
        self.workflow = workflow
        self.state = state
        self.frozen = False
        self.frozen_at = 0
        self.answers: dict[str, bool] = {}
        # The post-thaw hook: "owed", "idempotent", and how often it was started and ended.
        self.hooks: dict[str, int] = {}


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
        temp.execute(
            "CREATE TABLE settled (id BLOB PRIMARY KEY, kind TEXT, state TEXT, hooks TEXT)"
        )

    def check(self, event: object, position: int) -> None:
        rule(event, self, position)

    def track(self, event: SnapshotAggregate.Event, position: int) -> Tracked | None:
        """Follow a snapshot event: its transition must be allowed; note a freeze or thaw."""
        oid = event.originator_id
        tracked = self.active.get(oid) or self._unsettle(oid)
        name = type(event).__name__
        if tracked is None:
            self.problems.add("rules", f"position {position}: {name} of an unknown snapshot {oid}")
            return None
        if event.trigger is not None:
            dest = tracked.workflow.table.get((event.trigger, tracked.state))
            if dest is None:
                self.problems.add(
                    "rules",
                    f"position {position}: {name} is not allowed in state {tracked.state!r}",
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
            "INSERT OR REPLACE INTO settled VALUES (?, ?, ?, ?)",
            (oid.bytes, tracked.workflow.label, tracked.state, json.dumps(tracked.hooks)),
        )
        del self.active[oid]

    def _unsettle(self, oid: UUID) -> Tracked | None:
        self.temp.execute("SELECT kind, state, hooks FROM settled WHERE id=?", (oid.bytes,))
        row = self.temp.fetchone()
        if row is None:
            return None
        tracked = self.active[oid] = Tracked(WORKFLOWS[row[0]], row[1])
        tracked.hooks = json.loads(row[2])
        return tracked

    def finish(self) -> None:
        for oid, t in self.active.items():
            if t.frozen and t.state in TERMINAL:
                self.problems.add(
                    "rules",
                    f"snapshot {oid} ended {t.state} with its VM still frozen "
                    f"(frozen at position {t.frozen_at}, no thaw recorded)",
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
                "rules", f"position {position}: decision inputs differ from the answers taken"
            )
        if event.need_unquiesce != need_unquiesce(recorded.values()):
            rules.problems.add(
                "rules",
                f"position {position}: need_unquiesce={event.need_unquiesce} is not the AND "
                f"of the answers {recorded}",
            )
    rules.settle_if_done(event, tracked)


@rule.register
def _post_hook_owed(event: SnapshotAggregate.PostHookOwed, rules: Rules, position: int) -> None:
    tracked = rules.track(event, position)
    if tracked is not None:
        tracked.hooks.update(owed=1, idempotent=int(event.idempotent))
    rules.settle_if_done(event, tracked)


@rule.register
def _hook_started(event: SnapshotAggregate.HookStarted, rules: Rules, position: int) -> None:
    """A post-thaw hook runs only when owed, and once (again only if idempotent, unended)."""
    tracked = rules.track(event, position)
    if tracked is not None and event.hook == POST_THAW:
        hooks, where = tracked.hooks, f"position {position}: post-thaw hook"
        if not hooks.get("owed"):
            rules.problems.add("rules", f"{where} started but never owed")
        elif hooks.get("ended"):
            rules.problems.add("rules", f"{where} started again after it ended")
        elif hooks.get("started") and not hooks.get("idempotent"):
            rules.problems.add("rules", f"{where} started again though not idempotent")
        hooks["started"] = hooks.get("started", 0) + 1
    rules.settle_if_done(event, tracked)


@rule.register
def _hook_ended(event: SnapshotAggregate.HookEnded, rules: Rules, position: int) -> None:
    tracked = rules.track(event, position)
    if tracked is not None and event.hook == POST_THAW:
        if not tracked.hooks.get("started"):
            rules.problems.add("rules", f"position {position}: post-thaw hook ended, never started")
        tracked.hooks["ended"] = 1
    rules.settle_if_done(event, tracked)


def verify(reader: LogReader, kept_head: tuple[int, str] | None = None) -> VerifyReport:
    """
    Replay the whole log and check it (see :mod:`vmsnap.verify`); memory stays flat and
    nothing is written to the store. ``kept_head``: a chain head (position, hex hash) an
    earlier verify printed, kept elsewhere; the chain must still pass through it.
    Whatever goes wrong inside is reported as a problem, never raised.
    """
    problems = Problems()
    temp = sqlite3.connect("")  # a private temporary database on disk, gone when closed
    try:
        with reader.reading() as c:
            return _verify(reader, c, temp, kept_head, problems)
    except Exception as e:  # the report is always made; this is its last finding
        problems.add("log", f"verify could not finish: {type(e).__name__}: {e}")
        return problems.report(0, None)
    finally:
        temp.close()


def _verify(
    reader: LogReader,
    c: Any,
    temp: sqlite3.Connection,
    kept_head: tuple[int, str] | None,
    problems: Problems,
) -> VerifyReport:
    dialect = reader.dialect
    tc = temp.cursor()
    create_view_tables(tc)  # the stored views' shape
    projected = tracking_position(c, dialect)
    if projected is None:
        problems.add(
            "views",
            "the views' tracking position is missing (view_tracking was edited): "
            "the views cannot be compared",
        )
    chained = has_chain(c, dialect)
    last_seal = head(c, dialect) if chained else None
    replay = _Replay(
        reader, c, Rules(temp.cursor(), problems), CachedRows(CursorRows(tc)), problems
    )
    replay.projected = projected
    replay.tail = Tail(last_seal[0] if last_seal else 0)
    replay.versions = Versions(temp.cursor(), problems)
    if chained:
        for finding in compare(replay.events(), seals(c, dialect), sealed_at(c, dialect)):
            problems.add("chain", finding.message)
        rewritten = None if kept_head is None else check_head(c, kept_head, dialect)
        if rewritten is not None:
            problems.add("chain", rewritten.message)
    else:
        for _ in replay.events():
            pass
        if replay.count:
            problems.add("chain", "the log has no seals: its chain table is missing")
    problems.flush()
    replay.tail.missing_seals(projected, problems)
    replay.rules.finish()
    replay.rows.flush()
    if projected is not None:
        for diff in compare_views(c, dialect, tc):
            problems.add("views", diff)
    check_snapshots(reader, c, problems)
    return problems.report(replay.count, last_seal, replay.tail.unsealed())


class _Replay:
    """The log read once in pages: each event checked by the rules and projected."""

    projected: int | None = 0
    tail: Tail
    versions: Versions

    def __init__(
        self, reader: LogReader, c: Any, rules: Rules, rows: CachedRows, problems: Problems
    ) -> None:
        self.reader, self.c = reader, c
        self.rules, self.rows, self.problems = rules, rows, problems
        self.count = 0
        self.previous = 0  # the position of the event before

    def events(self) -> Iterator[tuple[int, bytes]]:
        """Every event's position and digest, in log order, replayed on the way."""
        position = 0
        while True:
            page = events_page(self.c, self.reader.events_table, position, self.reader.dialect)
            for row in page:
                position = int(row[0])
                self.count += 1
                self.one(row, position)
                self.previous = position
                yield position, row_digest(row)
            if len(page) < PAGE:
                return

    def one(self, row: Any, position: int) -> None:
        odd = noncanonical(row, self.reader.dialect)
        if odd is not None:
            self.problems.add(
                "log", f"position {position}: not stored as the product stores it: {odd}"
            )
        try:
            event = decode(self.reader.mapper, row)
        except Unreadable as e:
            self.versions.see(row[1], row[2], position)
            text = f"the stored event cannot be read: {e}"
            self.problems.at("log", position, text, self.previous)
            return
        stamp = event.timestamp.timestamp()
        previous = self.versions.see(row[1], row[2], position, stamp)
        self.tail.see(position, event.timestamp, previous, self.problems)
        try:
            self.rules.check(event, position)
            if self.projected is not None and position <= self.projected:
                project(event, self.rows, position)
        except Exception as e:  # data that decodes but does not fit: a finding
            self.problems.add(
                "log",
                f"position {position}: {type(event).__qualname__} does not fit the log "
                f"({type(e).__name__}: {e})",
            )
