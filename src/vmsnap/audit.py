"""
Audit reads of the log: timelines, export, time travel and verification. Never calls an
adapter: only the event log (and its chain and views) is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import attrs
from eventsourcing.persistence import Notification

from vmsnap.adapters.store import EventLog
from vmsnap.domain.exceptions import InvalidRequest, NotFound
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.vm import Vm
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.projections.events import event_data, event_type
from vmsnap.projections.projector import project
from vmsnap.projections.rows import Doc, MemoryRows
from vmsnap.verify import verify
from vmsnap.views import EventView, VerifyReport

Point = int | datetime  # a log position, or an instant


@attrs.frozen
class FrozenSpan:
    """
    How long a snapshot kept its VM frozen: from the ``Quiesced`` event that froze it to
    the ``Unquiesced`` event that thawed it (``thawed_at`` None: no thaw recorded).
    """

    snapshot_id: str
    vm_id: str
    frozen_at: int
    thawed_at: int | None
    seconds: float | None


def parse_point(text: str) -> Point:
    """
    Read ``--at``: a log position (an integer) or an ISO-8601 timestamp (UTC if no zone).

    Raises:
        InvalidRequest: neither.
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"--at {text!r} is neither a log position nor an ISO-8601 timestamp"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class Audit:
    def __init__(self, log: EventLog) -> None:
        self.log = log

    def decode(self, n: Notification) -> Any:
        return self.log.mapper.to_domain_event(n)

    def view(self, n: Notification) -> EventView:
        event: Any = self.decode(n)
        return EventView(
            position=n.id,
            originator_id=str(event.originator_id),
            version=event.originator_version,
            type=event_type(event),
            timestamp=event.timestamp.isoformat(),
            data=event_data(event),
            event=event,
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

    def state_at(self, sid: UUID, at: Point) -> tuple[str, Doc]:
        """
        The snapshot ``sid`` as the views showed it at ``at`` (the events up to that
        position, or recorded up to that instant): its table and its contract JSON.

        Raises:
            NotFound: no such snapshot, or it did not exist yet at ``at``.
        """
        own = self.log.notifications_of([sid])
        if not own:
            raise NotFound(f"no such snapshot: {sid}")
        vm_id = self.decode(own[0]).vm_id
        rows = MemoryRows()
        # The snapshot's own events and its VM's (current snapshot, parent after deletes).
        for n in self.log.notifications_of([sid, Vm.create_id(vm_id)]):
            if isinstance(at, int) and n.id > at:
                break
            event = self.decode(n)
            # Log order is not quite timestamp order (a save's events are stamped when
            # made): an instant takes every event stamped up to it, in log order.
            if isinstance(at, datetime) and event.timestamp > at:
                continue
            project(event, rows, n.id)
        for table in ("vm_snapshots", "volume_snapshots"):
            doc = rows.get(table, str(sid))
            if doc is not None:
                return table, doc
        label = f"position {at}" if isinstance(at, int) else at.isoformat()
        raise NotFound(f"snapshot {sid} did not exist yet at {label}")

    def verify(self, kept_head: tuple[int, str] | None = None) -> VerifyReport:
        return verify(self.log, kept_head)


def frozen_spans(events: Sequence[EventView]) -> list[FrozenSpan]:
    """
    Every freeze in a timeline, with its thaw and how long the VM stayed frozen.
    """
    vms: dict[str, str] = {}
    open_: dict[str, EventView] = {}
    spans: list[FrozenSpan] = []
    for e in events:
        event = e.event
        if isinstance(event, VmSnapshot.Requested | VolumeSnapshot.Requested):
            vms[e.originator_id] = event.vm_id
            continue
        change = event.freeze_change() if isinstance(event, SnapshotAggregate.Event) else None
        if change is True:
            open_[e.originator_id] = e
        elif change is False and e.originator_id in open_:
            start = open_.pop(e.originator_id)
            seconds = (
                datetime.fromisoformat(e.timestamp) - datetime.fromisoformat(start.timestamp)
            ).total_seconds()
            vm = vms.get(e.originator_id, "?")
            spans.append(FrozenSpan(e.originator_id, vm, start.position, e.position, seconds))
    for sid, start in open_.items():
        spans.append(FrozenSpan(sid, vms.get(sid, "?"), start.position, None, None))
    return sorted(spans, key=lambda s: s.frozen_at)
