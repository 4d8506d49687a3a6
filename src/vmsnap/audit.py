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

from vmsnap.adapters.chain import events_page
from vmsnap.adapters.decoding import id_text
from vmsnap.adapters.log_reader import LogReader
from vmsnap.domain.exceptions import InvalidRequest, NotFound, StoreError
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.vm import Vm
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.export import ExportedEvent, exported
from vmsnap.projections.events import event_data, event_type
from vmsnap.projections.projector import project
from vmsnap.projections.rows import Doc, MemoryRows
from vmsnap.stored import Unreadable, decode
from vmsnap.verify import verify
from vmsnap.views import EventView, VerifyReport

Point = int | datetime  # a log position, or an instant
UNREADABLE = "(unreadable)"  # the type a timeline shows for an event it cannot decode


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
    """The audit's reads, through a read-only :class:`LogReader`: nothing is written."""

    def __init__(self, reader: LogReader) -> None:
        self.reader = reader

    def view(self, row: Any) -> EventView:
        try:
            event: Any = decode(self.reader.mapper, row)
        except Unreadable as e:
            return EventView(
                position=int(row[0]),
                originator_id=str(row[1]),
                version=int(row[2]),
                type=UNREADABLE,
                timestamp="",
                data={"error": f"the stored event cannot be read: {e}"},
            )
        return EventView(
            position=int(row[0]),
            originator_id=id_text(row[1], event.originator_id),
            version=event.originator_version,
            type=event_type(event),
            timestamp=event.timestamp.isoformat(),
            data=event_data(event),
            event=event,
        )

    def check_readable(self) -> None:
        """
        Raises:
            StoreError: the first event cannot be decoded (a wrong key or settings).
        """
        with self.reader.reading() as c:
            page = events_page(c, self.reader.events_table, 0, self.reader.dialect)
        if page and self.view(page[0]).type == UNREADABLE:
            raise StoreError(
                "cannot read the store's events: wrong $VMSNAP_CIPHER_KEY, or the store was "
                "written with other [store] cipher/compress settings"
            )

    def rows_of(self, ids: Sequence[UUID]) -> list[Any]:
        with self.reader.reading() as c:
            return self.reader.notifications_of(c, ids)

    def timeline(self, ids: Sequence[UUID]) -> list[EventView]:
        """
        The events of the aggregates ``ids``, merged in log order.
        """
        return [self.view(r) for r in self.rows_of(ids)]

    def snapshots_of_vm(self, vm_id: str) -> list[UUID] | None:
        """
        The snapshots the VM's record was ever claimed for, in log order (None: the log
        never saw the VM). Read from the log, not from the views.
        """
        events = self.timeline([Vm.create_id(vm_id)])
        if not events:
            return None
        ids = [e.event.snapshot_id for e in events if isinstance(e.event, Vm.OperationStarted)]
        return [UUID(i) for i in dict.fromkeys(ids)]

    def export(self) -> Iterator[ExportedEvent]:
        """
        Every event in log order, with its stored form, digest and seal (ADR 0021), read
        in pages inside one read-only transaction.
        """
        with self.reader.reading() as c:
            yield from exported(self.reader, c, self.view)

    def state_at(self, sid: UUID, at: Point) -> tuple[str, Doc]:
        """
        The snapshot ``sid`` as the views showed it at ``at`` (the events up to that
        position, or recorded up to that instant): its table and its contract JSON.

        Raises:
            NotFound: no such snapshot, or it did not exist yet at ``at``.
        """
        own = self.timeline([sid])
        if not own or own[0].event is None:
            raise NotFound(f"no such snapshot: {sid}")
        vm_id = getattr(own[0].event, "vm_id", None)
        if not isinstance(vm_id, str):
            raise NotFound(f"no such snapshot: {sid}")
        rows = MemoryRows()
        # The snapshot's own events and its VM's (current snapshot, parent after deletes).
        for e in self.timeline([sid, Vm.create_id(vm_id)]):
            if isinstance(at, int) and e.position > at:
                break
            event: Any = e.event
            # Log order is not quite timestamp order (a save's events are stamped when
            # made): an instant takes every event stamped up to it, in log order.
            if event is None or (isinstance(at, datetime) and event.timestamp > at):
                continue
            project(event, rows, e.position)
        for table in ("vm_snapshots", "volume_snapshots"):
            doc = rows.get(table, str(sid))
            if doc is not None:
                return table, doc
        label = f"position {at}" if isinstance(at, int) else at.isoformat()
        raise NotFound(f"snapshot {sid} did not exist yet at {label}")

    def verify(self, kept_head: tuple[int, str] | None = None) -> VerifyReport:
        return verify(self.reader, kept_head)


@attrs.define
class HookRun:
    """
    One hook of a snapshot in a timeline (issue 19): owed from ``owed_at``, started at
    ``started_at``, ended at ``ended_at`` (None: not yet, or never recorded).
    """

    snapshot_id: str
    hook: str
    run: list[str]
    where: str
    owed_at: int | None = None
    started_at: int | None = None
    ended_at: int | None = None
    status: str | None = None
    exit_code: int | None = None
    duration_ms: int | None = None


def hook_runs(events: Sequence[EventView]) -> list[HookRun]:
    """Every hook run (and owed post-thaw hook) in a timeline: pre hooks, then post hooks."""
    S = SnapshotAggregate
    runs: list[HookRun] = []
    for e in events:
        event, sid = e.event, e.originator_id
        if isinstance(event, S.PostHookOwed):
            runs.append(HookRun(sid, "post_thaw", list(event.run), event.where, e.position))
        elif isinstance(event, S.HookStarted):
            owed = [r for r in runs if r.snapshot_id == sid and r.hook == event.hook]
            if owed and owed[-1].started_at is None:
                owed[-1].started_at = e.position
            else:
                runs.append(
                    HookRun(sid, event.hook, list(event.run), event.where, None, e.position)
                )
        elif isinstance(event, S.HookEnded):
            started = [r for r in runs if r.snapshot_id == sid and r.hook == event.hook]
            if started:
                run = started[-1]
                run.ended_at, run.status = e.position, event.status
                run.exit_code, run.duration_ms = event.exit_code, event.duration_ms
    # The pre hook first: the post hook is owed (recorded) just before the pre hook starts.
    return sorted(runs, key=lambda r: (r.hook != "pre_freeze", r.started_at or r.owed_at or 0))


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
