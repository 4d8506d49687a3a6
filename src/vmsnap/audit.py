"""Audit reads of the log: timelines, export and verification. Never calls an adapter."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification

from vmsnap.adapters.store import EventLog
from vmsnap.adapters.views import ViewStore
from vmsnap.domain.rules import need_unquiesce
from vmsnap.domain.workflow import EVENT_TRIGGERS, VM_SNAPSHOT_WORKFLOW, VOLUME_SNAPSHOT_WORKFLOW
from vmsnap.projections.events import event_data, event_type
from vmsnap.projections.projector import project
from vmsnap.projections.rows import MemoryRows
from vmsnap.views import EventView, VerifyReport


class Audit:
    def __init__(self, log: EventLog, views: ViewStore) -> None:
        self.log = log
        self.views = views

    def view(self, n: Notification) -> EventView:
        event: Any = self.log.mapper.to_domain_event(n)
        return EventView(
            position=n.id,
            originator_id=str(event.originator_id),
            version=event.originator_version,
            type=event_type(event),
            timestamp=event.timestamp.isoformat(),
            data=event_data(event),
        )

    def timeline(self, ids: Sequence[UUID]) -> list[EventView]:
        """
        The events of the aggregates ``ids``, merged in log order.
        """
        return [self.view(n) for n in self.log.notifications_of(ids)]

    def export(self) -> Iterator[EventView]:
        for page in self.log.pages():
            for n in page:
                yield self.view(n)

    def verify(self) -> VerifyReport:
        """
        Replay the whole log: transitions legal, unquiesce decisions equal the AND rule
        over the recorded answers, no VM left frozen, projections equal a rebuild.
        """
        problems: list[str] = []
        states: dict[UUID, tuple[str, bool]] = {}  # id -> (state, frozen)
        answers: dict[UUID, dict[str, bool]] = {}
        rebuilt = MemoryRows()
        count = 0
        for page in self.log.pages():
            for n in page:
                count += 1
                event = self.log.mapper.to_domain_event(n)
                _check(event, n.id, states, answers, problems)
                project(event, rebuilt, n.id)
        for oid, (state, frozen) in states.items():
            if frozen and state in ("ready", "failed", "removed"):
                problems.append(f"snapshot {oid} ended {state} with its VM still frozen")
        stored = self.views.dump().dump()
        for table, rows in rebuilt.dump().items():
            if rows != stored.get(table, {}):
                keys = sorted(set(rows) ^ set(stored.get(table, {})))
                diff = [k for k in rows if k in stored[table] and rows[k] != stored[table][k]]
                problems.append(
                    f"view {table} differs from a rebuild from the log "
                    f"(rows only on one side: {keys[:5]}, rows that differ: {diff[:5]})"
                )
        return VerifyReport(not problems, count, tuple(problems))


def _check(
    event: Any,
    position: int,
    states: dict[UUID, tuple[str, bool]],
    answers: dict[UUID, dict[str, bool]],
    problems: list[str],
) -> None:
    kind = type(event).__qualname__
    name = type(event).__name__
    oid = event.originator_id
    if kind in ("VmSnapshot.Requested", "VolumeSnapshot.Requested"):
        states[oid] = ("allocated", False)
        answers[oid] = {}
        return
    if oid not in states:
        return
    state, frozen = states[oid]
    trigger = EVENT_TRIGGERS.get(name)
    if trigger is not None:
        table = VM_SNAPSHOT_WORKFLOW.table
        if not VM_SNAPSHOT_WORKFLOW.allows(state, trigger):
            table = VOLUME_SNAPSHOT_WORKFLOW.table
        dest = table.get((trigger, state))
        if dest is None:
            problems.append(f"position {position}: {name} is not allowed in state {state!r}")
        else:
            state = dest
    if name == "Quiesced":
        frozen = bool(event.result.frozen)
    elif name == "Unquiesced" and event.thawed:
        frozen = False
    elif name == "DriverSnapshotTaken":
        answers[oid][event.pool_id] = event.need_unquiesce
    elif name == "UnquiesceDecided" and kind.startswith(("SnapshotAggregate", "VmSnapshot")):
        recorded = dict(event.answers)
        if kind != "VolumeSnapshot.UnquiesceDecided" and answers[oid] and recorded != answers[oid]:
            problems.append(f"position {position}: decision inputs differ from the answers taken")
        if event.need_unquiesce != need_unquiesce(recorded.values()):
            problems.append(
                f"position {position}: need_unquiesce={event.need_unquiesce} is not the AND "
                f"of the answers {recorded}"
            )
    states[oid] = (state, frozen)
